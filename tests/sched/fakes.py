"""A deterministic stand-in for the model executor (torch-free)."""

from __future__ import annotations

from seallm.core import SampleOutput, StepPlan, StepResult


class FakeExecutor:
    """Keeps each request's "KV" (the tokens it was fed) and samples a token that depends on
    the whole context, so a wrongly chunked or wrongly recomputed sequence changes its output.

    Also checks that every chunk continues exactly where the cached context ends (or starts
    over at 0 after preemption) and that block tables cover the chunk.
    """

    def __init__(self, tokens_per_page: dict[str, int], vocab: int = 97, eos: int | None = None) -> None:
        self.kv: dict[str, list[int]] = {}
        self.plans: list[StepPlan] = []
        self.tpp = tokens_per_page
        self.vocab = vocab

    def execute(self, plan: StepPlan) -> StepResult:
        self.plans.append(plan)
        samples = {}
        for s in plan.seqs:
            ctx = self.kv.setdefault(s.request_id, [])
            if s.start_pos == 0:
                ctx.clear()
            assert s.start_pos == len(ctx), f"{s.request_id}: chunk at {s.start_pos}, cache holds {len(ctx)}"
            assert len(s.block_table) * self.tpp[plan.model] >= s.context_len
            ctx.extend(s.token_ids)
            if s.sample:
                samples[s.request_id] = SampleOutput(3 + hash(tuple(ctx)) % (self.vocab - 3))
        for rid in plan.finished_ids:
            self.kv.pop(rid, None)
        return StepResult(plan.model, samples, 0.01)
