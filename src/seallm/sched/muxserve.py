"""MuxServe's ADBS (adaptive batch scheduling), a baseline (torch-free).

Reference: ``shared/reference/multi-model-sharing.md`` §3.3 (MuxServe, ICML 2024,
``muxserve/muxsched/scheduler.py``):

* **Quotas** (``init_max_num_seqs``): model ``m`` gets ``ratio_m = rate_m g_m / sum_j
  rate_j g_j`` of the KV pool (``g``: KV bytes per token), which becomes a limit on its
  concurrent sequences, ``max_num_seqs_m = floor(ratio_m x pool tokens of m / avg_seq_len)``
  (``avg_seq_len`` = prompt + output, 416 by default, from ShareGPT).
* **Each iteration** (``adbs_schedule``): round robin over the models, prefill first: the
  models whose waiting requests may start (below their quota) come first, then the others
  for decoding; inside a model, requests in arrival order (no latency or priority notion).
* **Adaptation** (``adapt_max_num_seqs``) every ``adapt_interval_s`` (8 s): a model's
  utilization is its mean batch size over its last 500 batches / its quota; models below
  0.9 donate ``(0.95 - util) x quota`` sequences' worth of pages; models at or above 0.9
  with ``waiting + running >= 1.1 x mean batch`` take about 10 % more, in proportion to what
  was donated; pages left over go to the model with the longest queue.

Differences (ours): MuxServe runs prefill and decode as separate MPS processes with fixed SM
shares; here a device runs one model's iteration at a time (chunked prefill mixes the
prefill into the model's batch), MuxServe's own "temporal multiplexing" variant. A model's
quota bounds its running sequences; the unified pool still hands out the pages (no
head-wise blocks: they only change fragmentation).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from seallm.core import RequestStatus
from seallm.sched.fcfs import FCFSPolicy
from seallm.sched.policy import BatchAllocation, BatchLimits

if TYPE_CHECKING:
    from seallm.core import Request


@dataclass(frozen=True)
class ADBSConfig:
    """ADBS knobs.

    Attributes:
        rates: model -> arrival rate (req/s) for the initial quotas (MuxServe takes them from
            the workload; absent models: the rate measured since the start, at least one
            arrival).
        avg_seq_len: mean prompt + output tokens of a sequence (MuxServe: 416).
        adapt_interval_s: seconds between quota adaptations (MuxServe: 8; None: never, the
            ``fix`` variant).
        history: batches per model the utilization is measured over (MuxServe: 500).

    Raises:
        ValueError: a non-positive length, interval or history, or a negative rate.
    """

    rates: Mapping[str, float] = field(default_factory=dict)
    avg_seq_len: float = 416.0
    adapt_interval_s: float | None = 8.0
    history: int = 500

    def __post_init__(self) -> None:
        if not self.avg_seq_len > 0:
            raise ValueError(f"avg_seq_len must be > 0, got {self.avg_seq_len}")
        if self.adapt_interval_s is not None and not self.adapt_interval_s > 0:
            raise ValueError(f"adapt_interval_s must be > 0 or None, got {self.adapt_interval_s}")
        if self.history < 1:
            raise ValueError(f"history must be >= 1, got {self.history}")
        for m, r in self.rates.items():
            if not (r >= 0 and math.isfinite(r)):
                raise ValueError(f"rate of {m!r} must be finite and >= 0, got {r}")


class ADBSPolicy(FCFSPolicy):
    """MuxServe's ADBS (module docstring): FCFS's arrival order and model ring, with the
    models that may start a prefill first and per-model quotas. ``quota(model)`` gives the
    sequences a model may run now."""

    name = "muxserve"

    def __init__(self, config: ADBSConfig | None = None) -> None:
        super().__init__()
        self.config = config or ADBSConfig()
        self.quota_pages: dict[str, float] = {}  # model -> pages of its quota
        self._pages_per_seq: dict[str, int] = {}
        self._arrivals: dict[str, int] = {}
        self._unfinished: dict[str, int] = {}
        self._batches: dict[str, deque[int]] = {}
        self._t0: float | None = None
        self._next_adapt: float | None = None
        self._total_pages = 0
        self.num_adaptations = 0

    # ---- quotas ---------------------------------------------------------------------------
    def quota(self, model: str) -> int:
        """Most concurrent sequences of ``model`` now (at least 1)."""
        per = self._pages_per_seq.get(model)
        if not per or model not in self.quota_pages:
            return 1 << 30
        return max(1, int(self.quota_pages[model] // per))

    def _rate(self, model: str, now: float) -> float:
        if model in self.config.rates:
            return self.config.rates[model]
        elapsed = max(now - (self._t0 if self._t0 is not None else now), 1.0)
        return max(self._arrivals.get(model, 0), 1) / elapsed

    def _init_quotas(self, limits: BatchLimits, now: float) -> None:
        """Split the pool by rate x KV bytes per token over the models seen (init_max_num_seqs)."""
        self._total_pages = limits.total_pages or limits.free_pages
        seq = max(1, int(round(self.config.avg_seq_len)))
        for m in self._order:
            self._pages_per_seq[m] = max(1, limits.pages_for(m, seq))
        # pages per token of m ~ its KV bytes per token (one pool, fixed-byte pages)
        weight = {m: self._rate(m, now) * limits.pages_for(m, 1 << 20) for m in self._order}
        total = sum(weight.values()) or 1.0
        self.quota_pages = {m: self._total_pages * w / total for m, w in weight.items()}

    def _adapt(self) -> None:
        """adapt_max_num_seqs: donors below 0.9 utilization give, busy models with a queue take."""
        util, mean_bs = {}, {}
        for m in self.quota_pages:
            h = self._batches.get(m)
            mean_bs[m] = sum(h) / len(h) if h else 0.0
            util[m] = mean_bs[m] / self.quota(m)
        donated, gives = 0.0, {}
        for m, u in util.items():
            if u < 0.9:
                give = min(self.quota_pages[m] - self._pages_per_seq[m],
                           max(0.0, 0.95 - u) * self.quota(m) * self._pages_per_seq[m])
                if give > 0:
                    gives[m] = give
                    donated += give
        takers = [m for m, u in util.items()
                  if u >= 0.9 and self._unfinished.get(m, 0) >= 1.1 * mean_bs[m]]
        if not takers or donated <= 0:
            return
        want = {m: 0.1 * self.quota_pages[m] for m in takers}
        scale = min(1.0, donated / sum(want.values()))
        used = 0.0
        for m in takers:
            self.quota_pages[m] += want[m] * scale
            used += want[m] * scale
        for m, g in gives.items():
            self.quota_pages[m] -= g * used / donated
        left = donated - used  # the fragment goes to the longest queue
        if left > 0:
            longest = max(takers, key=lambda m: (self._unfinished.get(m, 0), m))
            self.quota_pages[longest] += left
            for m, g in gives.items():
                self.quota_pages[m] -= g * left / donated
        self.num_adaptations += 1

    # ---- SchedulingPolicy -----------------------------------------------------------------
    def on_arrival(self, request: "Request", now: float) -> None:
        m = request.model
        if self._t0 is None:
            self._t0 = now
            if self.config.adapt_interval_s is not None:
                self._next_adapt = now + self.config.adapt_interval_s
        if m not in self._order:
            self._order.append(m)
            self.quota_pages.clear()  # a new model: quotas are split again
        self._arrivals[m] = self._arrivals.get(m, 0) + 1
        self._unfinished[m] = self._unfinished.get(m, 0) + 1

    def on_finish(self, request: "Request", now: float) -> None:
        m = request.model
        self._unfinished[m] = max(0, self._unfinished.get(m, 0) - 1)

    def model_order(self, runnable: dict[str, list["Request"]], now: float) -> list[str]:
        ring = super().model_order(runnable, now)  # round robin from the model after the last one

        def can_prefill(m: str) -> bool:
            rs = runnable[m]
            if all(r.status is RequestStatus.RUNNING for r in rs):
                return False  # nothing to prefill
            return sum(r.status is RequestStatus.RUNNING for r in rs) < self.quota(m)

        first = {m: can_prefill(m) for m in ring}
        return [m for m in ring if first[m]] + [m for m in ring if not first[m]]

    def allocate(self, model: str, candidates: list["Request"], now: float,
                 limits: BatchLimits) -> BatchAllocation:
        if not self.quota_pages:
            self._init_quotas(limits, now)
        if self._next_adapt is not None and now >= self._next_adapt:
            self._adapt()
            while self._next_adapt <= now:
                self._next_adapt += self.config.adapt_interval_s
        order = sorted(candidates, key=lambda r: self.priority_key(r, now))
        running = [r for r in order if r.status is RequestStatus.RUNNING]
        room = max(0, self.quota(model) - len(running))
        waiting = [r for r in order if r.status is not RequestStatus.RUNNING][:room]
        return BatchAllocation(tuple(running + waiting), limits.token_budget)

    def on_step(self, plan, result, now: float) -> None:
        super().on_step(plan, result, now)
        self._batches.setdefault(plan.model, deque(maxlen=self.config.history)).append(len(plan.seqs))

    def steady_decode_until(self, batches, now: float) -> float | None:
        """Until the next re-adaptation of the quotas (the quotas must exist already)."""
        if not self.quota_pages:
            return None
        return self._next_adapt if self._next_adapt is not None else math.inf

    def on_decode_run(self, model, requests, step_times, end_times, contexts) -> None:
        super().on_decode_run(model, requests, step_times, end_times, contexts)
        h = self._batches.setdefault(model, deque(maxlen=self.config.history))
        h.extend([len(requests)] * min(len(step_times), h.maxlen or len(step_times)))
