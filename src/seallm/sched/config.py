"""Scheduler knobs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SchedulerConfig:
    """Limits of one iteration.

    Attributes:
        max_num_batched_tokens: per-iteration token budget (prefill chunks plus decode
            tokens); a longer prompt is prefilled in chunks (chunked prefill).
        max_num_seqs: most sequences in one iteration's batch.
        preemption_mode: what a preempted request loses: ``"recompute"`` (its pages are
            freed and its context is prefilled again later; vLLM's default) or ``"swap"``
            (its pages are copied to the host swap space and back; falls back to recompute
            when the swap space is full). SeaLLM design §2.3 rule 4.3.
        preemption_limit: preemptive policies only: a request that has lost its pages this
            many times is no longer taken as a victim of another request (it still gives its
            own pages back when it cannot grow and nothing is evictable); None: no limit.
            Without it the longest (demoted, lowest-priority) requests are swapped out over
            and over under overload, which is the P99 tail.

    Raises:
        ValueError: if a limit is below 1 or the preemption mode is unknown.
    """

    max_num_batched_tokens: int = 512
    max_num_seqs: int = 128
    preemption_mode: str = "recompute"
    preemption_limit: int | None = 1

    def __post_init__(self) -> None:
        if self.max_num_batched_tokens < 1:
            raise ValueError(f"max_num_batched_tokens must be >= 1, got {self.max_num_batched_tokens}")
        if self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be >= 1, got {self.max_num_seqs}")
        if self.preemption_limit is not None and self.preemption_limit < 1:
            raise ValueError(f"preemption_limit must be >= 1 or None, got {self.preemption_limit}")
        if self.preemption_mode not in ("recompute", "swap"):
            raise ValueError(f"preemption_mode must be 'recompute' or 'swap', got {self.preemption_mode!r}")
