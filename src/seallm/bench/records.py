"""What the load client records for one request (:class:`RequestRecord`).

All times are seconds on the client's monotonic clock, relative to the start of the replay
(``time.perf_counter()`` at t0). The request's *arrival* is ``sent_s``, the moment the HTTP
request was started; ``scheduled_s`` is when the workload asked for it (``sent_s -
scheduled_s`` is client lag, plus queueing behind ``max_concurrency``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RequestRecord"]


@dataclass(frozen=True)
class RequestRecord:
    """One request as observed by the client.

    ``input_len`` / ``output_len``: requested prompt tokens and ``max_tokens``.
    ``tokens_in`` / ``tokens_out``: from the server's usage chunk when present, else the
    prompt length sent and the number of streamed token chunks.
    ``token_times_s``: receive time of every streamed token chunk (s).
    ``error``: None on success, else a short description (HTTP status, exception, timeout).
    ``admission``: an SLO planner's verdict, "guaranteed" or "best_effort" (None: none).
    """

    index: int
    model: str
    input_len: int
    output_len: int
    scheduled_s: float
    sent_s: float | None = None
    first_token_s: float | None = None
    finish_s: float | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    token_times_s: tuple[float, ...] = ()
    finish_reason: str | None = None
    error: str | None = None
    admission: str | None = None

    @property
    def ok(self) -> bool:
        """True when the request completed and produced at least one token."""
        return self.error is None and self.first_token_s is not None and self.finish_s is not None

    @property
    def ttft_s(self) -> float | None:
        """Time to first token, s (first token time - arrival); None if failed."""
        return self.first_token_s - self.sent_s if self.ok and self.sent_s is not None else None

    @property
    def e2e_s(self) -> float | None:
        """End-to-end latency, s (finish time - arrival); None if failed."""
        return self.finish_s - self.sent_s if self.ok and self.sent_s is not None else None

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first, s: (E2E - TTFT) / (tokens_out - 1).

        None if failed or if only one token was produced.
        """
        if not self.ok or self.tokens_out < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.tokens_out - 1)

    @property
    def normalized_latency_s(self) -> float | None:
        """E2E / output tokens, s/token; None if failed."""
        if not self.ok or self.tokens_out < 1:
            return None
        return self.e2e_s / self.tokens_out
