"""A deterministic stand-in for the model executor (torch-free)."""

from __future__ import annotations

from seallm.core import SampleOutput, StepPlan, StepResult


class FakeExecutor:
    """Keeps each request's KV in pages, as the real worker does, and samples a token that
    depends on the whole context read back through the block table, so a wrongly chunked,
    recomputed, swapped or overwritten sequence changes its output.

    Device pages and host (swap) pages are dicts ``page -> {slot: token}``; a plan's page
    copies are applied in order before its chunks write their tokens. Also checks that every
    chunk continues exactly where the cached context ends (or starts over at 0 after a
    recompute preemption) and that block tables cover the chunk.
    """

    def __init__(self, tokens_per_page: dict[str, int], vocab: int = 97, eos: int | None = None) -> None:
        self.kv: dict[str, int] = {}  # request id -> tokens cached
        self.plans: list[StepPlan] = []
        self.tpp = tokens_per_page
        self.vocab = vocab
        self.pages: dict[int, dict[int, int]] = {}
        self.host: dict[int, dict[int, int]] = {}
        self.copied_pages = 0

    def execute(self, plan: StepPlan) -> StepResult:
        self.plans.append(plan)
        for c in plan.swaps:
            src, dst = (self.pages, self.host) if c.to_host else (self.host, self.pages)
            for s, d in c.pages:
                dst[d] = dict(src.get(s, {}))
                self.copied_pages += 1
        tpp = self.tpp[plan.model]
        samples = {}
        for s in plan.seqs:
            cached = self.kv.get(s.request_id, 0) if s.start_pos else 0
            assert s.start_pos == cached, f"{s.request_id}: chunk at {s.start_pos}, cache holds {cached}"
            assert len(s.block_table) * tpp >= s.context_len
            for i, tok in enumerate(s.token_ids):
                pos = s.start_pos + i
                self.pages.setdefault(s.block_table[pos // tpp], {})[pos % tpp] = tok
            self.kv[s.request_id] = s.context_len
            if s.sample:
                ctx = tuple(self.pages[s.block_table[p // tpp]].get(p % tpp) for p in range(s.context_len))
                samples[s.request_id] = SampleOutput(3 + hash(ctx) % (self.vocab - 3))
        for rid in plan.finished_ids:
            self.kv.pop(rid, None)
        return StepResult(plan.model, samples, 0.01)
