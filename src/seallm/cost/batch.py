"""The shape of one iteration's batch, as cost models see it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from seallm.core import StepPlan


@dataclass(frozen=True)
class BatchShape:
    """Features of one iteration.

    Attributes:
        num_tokens: tokens in the batch (prefill chunks + decode tokens).
        num_context_tokens: KV tokens attended to, summed over sequences (the attention read).
        num_seqs: sequences in the batch.
        num_sampled: sequences whose logits are computed (LM head rows).
        attention_pairs: query-key pairs, summed over sequences (attention FLOPs / (4 H D)).
    """

    num_tokens: int
    num_context_tokens: int
    num_seqs: int = 1
    num_sampled: int = 1
    attention_pairs: int = 0

    @classmethod
    def of(cls, plan: StepPlan) -> "BatchShape":
        """The shape of ``plan`` (the last plan's shape is kept: the executor and the policy
        both ask for it every iteration)."""
        last = _LAST
        if last and last[0] is plan:
            return last[1]
        pairs = sum(s.num_tokens * s.start_pos + s.num_tokens * (s.num_tokens + 1) // 2 for s in plan.seqs)
        shape = cls(plan.num_tokens, plan.num_context_tokens, len(plan.seqs), sum(s.sample for s in plan.seqs), pairs)
        _LAST[:] = [plan, shape]
        return shape


_LAST: list = []  # [plan, its shape]: plans are frozen, so identity means the same shape


class CostModel(Protocol):
    """Predicts the wall time (s) of one iteration of one model on one device."""

    def step_time(self, batch: BatchShape) -> float: ...
