"""Token sampling: greedy, temperature, top-k, top-p, min-p, per-request seeds, logprobs."""

from __future__ import annotations

import torch

from seallm.core import SampleOutput, SamplingParams


class Sampler:
    """Samples one token per row of a logits matrix.

    A request with a ``seed`` gets its own ``torch.Generator``, kept across iterations (and
    across preemption), so the same seed gives the same tokens whatever else is in the batch.
    Log-probabilities are those of the model's raw distribution (before temperature and
    filtering), as in vLLM.
    """

    def __init__(self) -> None:
        self._generators: dict[str, torch.Generator] = {}

    def forget(self, request_ids: tuple[str, ...] | list[str]) -> None:
        """Drop per-request state of finished requests."""
        for rid in request_ids:
            self._generators.pop(rid, None)

    def _generator(self, rid: str, params: SamplingParams) -> torch.Generator | None:
        if params.seed is None:
            return None
        g = self._generators.get(rid)
        if g is None:
            g = torch.Generator(device="cpu")
            g.manual_seed(params.seed)
            self._generators[rid] = g
        return g

    def sample(self, logits: torch.Tensor, request_ids: list[str], params: list[SamplingParams]) -> list[SampleOutput]:
        """Sample one token per row.

        Shapes: ``logits`` [S, vocab] float32; ``request_ids``, ``params``: S entries.
        """
        tokens = logits.argmax(dim=-1).tolist()
        logp = None
        if any(p.logprobs is not None for p in params):
            logp = torch.log_softmax(logits, dim=-1)
        out = []
        for i, (rid, p) in enumerate(zip(request_ids, params)):
            if not p.greedy:
                tokens[i] = self._sample_row(logits[i], p, self._generator(rid, p))
            if p.logprobs is None:
                out.append(SampleOutput(tokens[i]))
                continue
            row = logp[i]
            top: tuple[tuple[int, float], ...] = ()
            if p.logprobs > 0:
                vals, idx = row.topk(min(p.logprobs, row.numel()))
                top = tuple(zip(idx.tolist(), vals.tolist()))
            out.append(SampleOutput(tokens[i], float(row[tokens[i]]), top))
        return out

    @staticmethod
    def _sample_row(row: torch.Tensor, p: SamplingParams, gen: torch.Generator | None) -> int:
        x = row / p.temperature
        if p.top_k > 0 and p.top_k < x.numel():
            kth = torch.topk(x, p.top_k).values[-1]
            x = x.masked_fill(x < kth, float("-inf"))
        if p.top_p < 1.0:
            probs = torch.softmax(x, dim=-1)
            sp, idx = probs.sort(descending=True)
            drop = (sp.cumsum(0) - sp) > p.top_p  # keep until the mass reaches top_p
            x = x.clone()
            x[idx[drop]] = float("-inf")
        if p.min_p > 0.0:
            probs = torch.softmax(x, dim=-1)
            x = x.masked_fill(probs < p.min_p * probs.max(), float("-inf"))
        probs = torch.softmax(x, dim=-1)
        return int(torch.multinomial(probs, 1, generator=gen))
