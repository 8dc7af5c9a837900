"""What a finished request returns to the offline API."""

from __future__ import annotations

from dataclasses import dataclass

from seallm.core import Request


@dataclass(frozen=True)
class RequestMetrics:
    """Times in seconds (engine clock, ``time.time()`` for the real engine).

    Attributes:
        arrival_time: the request was queued.
        first_scheduled_time: it first joined a batch.
        first_token_time: its first output token was sampled.
        finish_time: it finished.
        num_preemptions: times it lost its KV pages (recomputed or swapped to host memory).
    """

    arrival_time: float
    first_scheduled_time: float | None
    first_token_time: float | None
    finish_time: float | None
    num_preemptions: int = 0

    @property
    def ttft(self) -> float | None:
        """Time to first token (s)."""
        return None if self.first_token_time is None else self.first_token_time - self.arrival_time

    @property
    def e2e(self) -> float | None:
        """End-to-end latency (s)."""
        return None if self.finish_time is None else self.finish_time - self.arrival_time

    @classmethod
    def of(cls, r: Request) -> "RequestMetrics":
        return cls(r.arrival_time, r.first_scheduled_time, r.first_token_time, r.finish_time, r.num_preemptions)


@dataclass(frozen=True)
class RequestOutput:
    """One completed request.

    Attributes:
        request_id, model: identity.
        prompt: the prompt text (None for token-id prompts).
        prompt_token_ids: the prompt as token ids.
        token_ids: generated token ids (the one that completed a stop string included).
        text: generated text, cut before a stop string ("" without a tokenizer).
        finish_reason: "stop", "length" or "abort".
        stop_reason: the stop string or stop token id that ended it, if any.
        logprobs: per output token ``(logprob, ((token_id, logprob), ...))`` when asked.
        metrics: timing (:class:`RequestMetrics`).
    """

    request_id: str
    model: str
    prompt: str | None
    prompt_token_ids: list[int]
    token_ids: list[int]
    text: str
    finish_reason: str
    stop_reason: int | str | None
    logprobs: list[tuple[float, tuple[tuple[int, float], ...]]] | None
    metrics: RequestMetrics
