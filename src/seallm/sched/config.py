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

    Raises:
        ValueError: if a limit is below 1.
    """

    max_num_batched_tokens: int = 512
    max_num_seqs: int = 128

    def __post_init__(self) -> None:
        if self.max_num_batched_tokens < 1:
            raise ValueError(f"max_num_batched_tokens must be >= 1, got {self.max_num_batched_tokens}")
        if self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be >= 1, got {self.max_num_seqs}")
