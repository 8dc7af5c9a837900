"""One request's state as the engine sees it (token ids only; text lives in the front end)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from seallm.core.sampling_params import SamplingParams


@dataclass(frozen=True)
class SLO:
    """Latency targets of one request (None = no target).

    Per-stage SLOs as in SLOs-Serve (arXiv 2504.08784; ``shared/reference/slo-scheduling.md``
    §1.2): the first token is due ``ttft`` seconds after arrival, or ``ttft_slowdown`` times
    the predicted zero-load prefill time of the prompt (whichever is given; the scheduler
    resolves a slowdown with its performance model); token ``n`` after the first is due
    ``sum of the per-token targets`` after the first token's deadline (the cumulative rule of
    :func:`seallm.sched.slo.token_offset_s`), with ``tpot_thinking`` for the first
    ``thinking_tokens`` output tokens (a reasoning model's thinking stage) and ``tpot`` after.

    Attributes:
        ttft: time to first token, s. ttft_slowdown: TTFT as a multiple (>= 1) of the
            zero-load prefill time. tpot: time per output token after the first, s.
        tpot_thinking: per-token target of the thinking stage, s (None: ``tpot``).
        thinking_tokens: output tokens of the thinking stage (0: none).
        e2e: end-to-end latency, s.

    Raises:
        ValueError: a non-positive or non-finite target, both ``ttft`` and
            ``ttft_slowdown``, a slowdown below 1, or a negative ``thinking_tokens``.
    """

    ttft: float | None = None
    tpot: float | None = None
    e2e: float | None = None
    ttft_slowdown: float | None = None
    tpot_thinking: float | None = None
    thinking_tokens: int = 0

    def __post_init__(self) -> None:
        for k in ("ttft", "tpot", "e2e", "ttft_slowdown", "tpot_thinking"):
            v = getattr(self, k)
            if v is not None and not (isinstance(v, (int, float)) and 0 < v < float("inf")):
                raise ValueError(f"slo.{k} must be a positive number of seconds, got {v}")
        if self.ttft is not None and self.ttft_slowdown is not None:
            raise ValueError("give slo.ttft or slo.ttft_slowdown, not both")
        if self.ttft_slowdown is not None and self.ttft_slowdown < 1:
            raise ValueError(f"slo.ttft_slowdown must be >= 1, got {self.ttft_slowdown}")
        if not isinstance(self.thinking_tokens, int) or self.thinking_tokens < 0:
            raise ValueError(f"slo.thinking_tokens must be an integer >= 0, got {self.thinking_tokens}")

    @property
    def has_stage_targets(self) -> bool:
        """Whether a TTFT or TPOT target is set (what an SLO planner plans for)."""
        return self.ttft is not None or self.ttft_slowdown is not None or self.tpot is not None


class RequestStatus(enum.Enum):
    """Where a request is in its life."""

    WAITING = "waiting"  # queued, holds no KV pages
    RUNNING = "running"  # holds KV pages, scheduled at iteration boundaries
    PREEMPTED = "preempted"  # lost its pages; waits to be recomputed
    SWAPPED = "swapped"  # its pages are in host memory; waits to be swapped back in
    FINISHED = "finished"


class FinishReason(str, enum.Enum):
    """OpenAI finish reasons."""

    STOP = "stop"  # EOS, a stop token id or a stop string
    LENGTH = "length"  # max_tokens or the model's context length
    ABORT = "abort"  # cancelled by the client or the server

    def __str__(self) -> str:  # "stop", not "FinishReason.STOP"
        return self.value


@dataclass(eq=False)
class Request:
    """Engine-side state of one request.

    Attributes:
        request_id: unique id on its replica.
        model: name of the resident model that serves it.
        prompt_token_ids: prompt, token ids.
        params: sampling parameters.
        arrival_time: seconds (engine clock) when the request arrived.
        priority: lower runs first (vLLM convention); FCFS ignores it.
        slo: latency targets (from the API's ``slo`` object or a named SLO class).
        eos_token_ids: the model's end-of-sequence ids (ignored with ``params.ignore_eos``).
        max_model_len: the model's context length in tokens (prompt + output).
        output_token_ids: generated tokens so far.
        num_computed_tokens: tokens whose KV is in the cache (reset to 0 on preemption).
        error: why the request failed, when its processing failed in the engine (it is then
            finished with ``abort`` alone; other requests of its batch go on).
        error_status: the HTTP status that ``error`` maps to (500: the engine failed; 429: an
            SLO planner refused it with ``admission: reject``).
        admission: what an SLO planner decided (``"guaranteed"`` or ``"best_effort"``; None:
            no planner, or not decided yet).
        admission_mode: what to do if the planner cannot guarantee it (``"best_effort"`` or
            ``"reject"``; None: the policy's default); a router trying replicas in turn sets it.
    """

    request_id: str
    model: str
    prompt_token_ids: list[int]
    params: SamplingParams
    arrival_time: float
    priority: int = 0
    slo: SLO | None = None
    eos_token_ids: frozenset[int] = frozenset()
    max_model_len: int = 1 << 30
    output_token_ids: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0
    status: RequestStatus = RequestStatus.WAITING
    finish_reason: FinishReason | None = None
    stop_reason: int | str | None = None
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    finish_time: float | None = None
    num_preemptions: int = 0
    error: str | None = None
    error_status: int = 500
    admission: str | None = None
    admission_mode: str | None = None
    # Log-probabilities, one entry per output token when params.logprobs is set:
    # (sampled token logprob, ((token_id, logprob), ...) top alternatives).
    output_logprobs: list[tuple[float, tuple[tuple[int, float], ...]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.prompt_token_ids:
            raise ValueError(f"request {self.request_id}: the prompt is empty")

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_token_ids)

    @property
    def num_tokens(self) -> int:
        """Prompt plus output tokens known so far."""
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def num_uncomputed_tokens(self) -> int:
        """Tokens whose KV is still to be computed before the next sample."""
        return self.num_tokens - self.num_computed_tokens

    @property
    def is_finished(self) -> bool:
        return self.status is RequestStatus.FINISHED

    def token_ids_slice(self, start: int, end: int) -> list[int]:
        """Tokens at absolute positions ``[start, end)``."""
        p = len(self.prompt_token_ids)
        if end <= p:
            return self.prompt_token_ids[start:end]
        if start >= p:
            return self.output_token_ids[start - p : end - p]
        return self.prompt_token_ids[start:] + self.output_token_ids[: end - p]

    def check_stop_after_append(self) -> FinishReason | None:
        """Finish reason implied by the last appended token (token-level checks only).

        Stop strings are checked by the detokenizer, which owns the text.
        """
        last = self.output_token_ids[-1]
        p = self.params
        if not p.ignore_eos and last in self.eos_token_ids:
            self.stop_reason = None
            return FinishReason.STOP
        if last in p.stop_token_ids:
            self.stop_reason = last
            return FinishReason.STOP
        if self.num_output_tokens >= p.max_tokens or self.num_tokens >= self.max_model_len:
            return FinishReason.LENGTH
        return None
