"""Fast analytic latency of services sharing one device group (torch-free).

Placement and replacement compare thousands of candidate plans, too many to simulate each,
so they score a plan with this queueing approximation of the simulator (as AlpaServe's
search uses an approximator next to its event simulator, ``multi-model-sharing.md`` §4.3).
It is our design (``§2.4`` step 3 allows "a queueing approximation"); the simulator and the
benchmark judge the plans it picks.

Model of one group (its models take turns per iteration, :mod:`seallm.sched`): a request of
service ``k`` (rate ``lam_k`` req/s, mean ``I_k`` prompt and ``O_k`` output tokens) costs a
prefill ``P_k`` (one batch of ``I_k`` tokens) and ``O_k`` decode iterations of
``tau_k(B_k)`` shared by the ``B_k`` requests decoding together. With ``u_j = lam_j (P_j +
O_j tau_j(B_j) / B_j)`` the share of time model ``j`` keeps the group busy and ``u`` their
sum:

* P_k is the chunked prefill (``ceil(I_k / chunk)`` iterations of the scheduler's token
  budget, :class:`CostTable`);
* ``f_k = 1 - (u - u_k) - lam_k P_k``: the share of time left to the service's decoding
  by the other models' iterations and its own prefills; TPOT_k = tau_k(B_k) / f_k;
* B_k = max(1, N_k) with N_k = lam_k (O_k - 1) TPOT_k decoding at once (Little's law),
  solved by damped fixed-point iteration;
* TTFT_k = (P_k + W) / (1 - (u - u_k)), W = sum_j lam_j P_j^2 / (2 (1 - sum_j lam_j P_j))
  + sum_j u_j tau_j / 2 (Pollaczek-Khinchine wait behind queued prefills, plus the rest
  of the iteration under way), stretched by the other models' turns;
* E2E_k = TTFT_k + (O_k - 1) TPOT_k.

A group where some service would need more than ``max_batch`` sequences at once (or whose
``f_k`` vanishes), or whose KV pages cannot hold the decoding batches, is overloaded: each
of its services gets :data:`OVERLOADED` times its served-alone latency scaled by the
overload, so that a search still prefers the less overloaded of two bad plans.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from seallm.cluster.catalog import CatalogModel
from seallm.cost import BatchShape, DeviceSpec, RooflineCostModel

#: Latency factor of an overloaded group (x served-alone latency x utilization).
OVERLOADED = 100.0


@dataclass(frozen=True)
class ServiceLoad:
    """One service as placement sees it.

    Attributes:
        name: service (served model) name. arch: its architecture.
        rate: arrival rate (req/s). input_len, output_len: mean prompt and output tokens.
    """

    name: str
    arch: CatalogModel
    rate: float
    input_len: float
    output_len: float

    def __post_init__(self) -> None:
        if not (self.rate >= 0 and math.isfinite(self.rate)):
            raise ValueError(f"service {self.name!r}: rate must be finite and >= 0, got {self.rate}")
        if not (self.input_len >= 1 and self.output_len >= 1):
            raise ValueError(f"service {self.name!r}: mean lengths must be >= 1 token")


@dataclass(frozen=True)
class GroupEstimate:
    """Predicted behaviour of one group.

    Attributes:
        e2e_s: service -> mean E2E latency (s). ttft_s, tpot_s: its TTFT and TPOT (s).
        utilization: share of time the group computes (>= 1: saturated).
        feasible: below saturation and within KV memory.
    """

    e2e_s: dict[str, float]
    ttft_s: dict[str, float]
    tpot_s: dict[str, float]
    utilization: float
    feasible: bool


class CostTable:
    """Step-time pieces of one (architecture, device, TP degree), cached: prefill of a mean
    prompt, decode iterations by batch size, and the served-alone latency.

    ``chunk_tokens``: the scheduler's per-iteration token budget (chunked prefill: a prompt
    takes ``ceil(I / chunk_tokens)`` iterations, each paying the step overhead); None: one
    iteration per prompt."""

    def __init__(self, arch: CatalogModel, device: DeviceSpec, tensor_parallel_size: int,
                 chunk_tokens: int | None = None) -> None:
        self.model = RooflineCostModel(arch.shape, device, tensor_parallel_size)
        self.chunk_tokens = chunk_tokens
        self._pre: dict[int, float] = {}

    def prefill_s(self, input_len: float) -> float:
        """Seconds of the prefill of ``input_len`` tokens, chunk by chunk."""
        n = max(1, int(round(input_len)))
        t = self._pre.get(n)
        if t is None:
            step = self.chunk_tokens or n
            t, start = 0.0, 0
            while start < n:
                k = min(step, n - start)
                t += self.model.step_time(BatchShape(k, start + k, 1, 1, k * start + k * (k + 1) // 2))
                start += k
            self._pre[n] = t
        return t

    def decode_s(self, batch: float, context: float) -> float:
        """Seconds of one decode iteration of ``batch`` sequences of ``context`` tokens each."""
        b = max(1.0, batch)
        return self.model.step_time(BatchShape(int(math.ceil(b)), int(b * context), int(math.ceil(b)),
                                               int(math.ceil(b)), int(b * context)))

    def alone_s(self, input_len: float, output_len: float) -> float:
        """E2E latency of one request served alone (s)."""
        return self.prefill_s(input_len) + max(output_len - 1, 0) * self.decode_s(1, input_len + output_len / 2)


def estimate_group(services: Sequence[tuple[ServiceLoad, float]], tables: Sequence[CostTable],
                   kv_tokens: Sequence[float], iterations: int = 60, max_batch: int = 256) -> GroupEstimate:
    """Predict one group serving ``services`` (each with the share of its rate sent here,
    req/s) with the matching cost ``tables``; ``kv_tokens``: per service, the tokens of KV it
    may hold (its share of the pool); ``max_batch``: most sequences of one iteration. See
    the module docstring for the model.

    Raises:
        ValueError: lengths of the three sequences differ.
    """
    if not len(services) == len(tables) == len(kv_tokens):
        raise ValueError("services, tables and kv_tokens must have the same length")
    n = len(services)
    lam = [r for _, r in services]
    pre = [t.prefill_s(s.input_len) for (s, _), t in zip(services, tables)]
    ctx = [s.input_len + s.output_len / 2 for s, _ in services]
    out = [s.output_len for s, _ in services]
    names = [s.name for s, _ in services]
    batch = [1.0] * n
    tpot = [0.0] * n
    share = [0.0] * n
    tau = [0.0] * n
    free = [1.0] * n
    demand = [0.0] * n  # decoding requests the service would need (Little), uncapped
    for _ in range(iterations):
        tau = [t.decode_s(b, c) for t, b, c in zip(tables, batch, ctx)]
        share = [lam[k] * (pre[k] + out[k] * tau[k] / batch[k]) for k in range(n)]
        u = sum(share)
        new = []
        for k in range(n):
            free[k] = 1.0 - (u - share[k]) - lam[k] * pre[k]
            tpot[k] = tau[k] / max(free[k], 1e-9)
            demand[k] = lam[k] * (out[k] - 1) * tpot[k]
            new.append(min(max_batch, max(1.0, demand[k])))
        if all(abs(a - b) <= 1e-3 * b for a, b in zip(new, batch)):
            break
        batch = [0.5 * (a + b) for a, b in zip(new, batch)]
    kv_ok = all(batch[k] * ctx[k] <= kv_tokens[k] for k in range(n))
    over = min(1e3, max([1.0] + [demand[k] / max_batch for k in range(n)]
                        + [1.0 / max(f, 1e-3) for f in free if f <= 0.02]))
    if over > 1.0 or not kv_ok:
        over *= 1.0 if kv_ok else 2.0
        e2e = {names[k]: OVERLOADED * over * tables[k].alone_s(services[k][0].input_len, out[k]) for k in range(n)}
        return GroupEstimate(e2e, dict.fromkeys(names, math.inf), dict.fromkeys(names, math.inf), sum(share), False)
    rho_pre = sum(lam[k] * pre[k] for k in range(n))
    wait = sum(lam[k] * pre[k] ** 2 for k in range(n)) / (2 * max(1 - rho_pre, 1e-3)) \
        + sum(share[k] * tau[k] / 2 for k in range(n))
    ttft = {names[k]: (pre[k] + wait) / max(free[k] + lam[k] * pre[k], 1e-3) for k in range(n)}
    tp = {names[k]: tpot[k] for k in range(n)}
    e2e = {names[k]: ttft[names[k]] + (out[k] - 1) * tpot[k] for k in range(n)}
    return GroupEstimate(e2e, ttft, tp, sum(share), True)
