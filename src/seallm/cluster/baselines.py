"""The baselines' placement algorithms, re-implemented from their descriptions (torch-free).

References: ``shared/reference/multi-model-sharing.md`` §3.4 (MuxServe) and §4.2
(AlpaServe). vLLM's deployment (every model on dedicated devices) is
:func:`seallm.cluster.placement.place_dedicated`.

Choices where the reference leaves one (ours):

* Both use our LLM cost model (:mod:`seallm.cluster.estimate`, roofline step times of the
  catalog architectures on the cluster's device) in place of their profiled tables (MuxServe:
  A100 profiles; AlpaServe: non-autoregressive models, which the reference says need an LLM
  cost model before AlpaServe can be an LLM baseline).
* MuxServe: no MPS, so no SM split; a mesh's models share it in time (the reference's own
  "temporal multiplexing" variant, MuxServe's placement with continuous batching). Its
  throughput estimate (``estimate_mesh_throughput``) is kept: each LLM's KV share is in
  proportion to rate x KV bytes per token, its peak throughput ``B / (T_prefill(B) + S
  T_decode(B))`` at the largest batch its share holds, and a mesh serves ``min(1, 1/U)`` of
  its rates where ``U = sum rate / peak``. MuxServe's minimum mesh sizes (30B >= 2, 65B >= 4
  devices) become "the smallest group that holds the model" (:meth:`ClusterSpec.min_group_size`).
* AlpaServe: only intra-op (tensor) parallelism within a node (pipeline parallelism across
  nodes is not modelled); its simulator inside the search is replaced by the approximator:
  a replica's goodput is ``min(1, SLO / predicted E2E)`` if its group is not overloaded,
  else 0.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence

from seallm.cluster.estimate import ServiceLoad
from seallm.cluster.placement import DEFAULT_CHUNK_TOKENS, Scorer, _Assignment, groups_of, node_partitions
from seallm.cluster.spec import ClusterSpec, PlacementPlan
from seallm.cost import BatchShape

#: Largest batch of MuxServe's throughput search (sequences).
_MUX_MAX_BATCH = 256


class _MuxThroughput:
    """MuxServe's per-LLM peak throughput on a mesh, cached."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer
        self._cache: dict[tuple, float] = {}

    def peak(self, name: str, size: int, kv_tokens: float) -> float:
        """Requests/s ``name`` serves on ``size`` devices with ``kv_tokens`` of KV."""
        s = self.scorer.services[name]
        seq = s.input_len + s.output_len
        b = int(max(1, min(_MUX_MAX_BATCH, kv_tokens // seq)))
        key = (name, size, b)
        if key not in self._cache:
            t = self.scorer.table(s.arch.name, size)
            n_in = int(b * s.input_len)
            pre = t.model.step_time(BatchShape(n_in, 0, b, b, int(b * s.input_len * (s.input_len + 1) / 2)))
            dec = t.decode_s(b, s.input_len + s.output_len / 2)
            self._cache[key] = b / (pre + s.output_len * dec)
        return self._cache[key]

    def load(self, size: int, members: Sequence[str]) -> float:
        """``U = sum rate / peak`` of a mesh holding ``members`` (KV split in proportion to
        rate x KV bytes per token, as ``estimate_mesh_throughput``)."""
        if not members:
            return 0.0
        svcs = [self.scorer.services[n] for n in members]
        pool = max(self.scorer.cluster.kv_bytes(size, [s.arch for s in svcs]), 0)
        w = [s.rate * s.arch.kv_spec.bytes_per_token + 1e-12 for s in svcs]
        peaks = [self.peak(s.name, size, pool * x / sum(w) / s.arch.kv_spec.bytes_per_token) for s, x in zip(svcs, w)]
        return sum(s.rate / p for s, p in zip(svcs, peaks))

    def mesh(self, size: int, members: Sequence[str]) -> float:
        """Served rate (req/s) of a mesh holding ``members``: ``sum rate x min(1, 1/U)``."""
        u = self.load(size, members)
        return sum(self.scorer.services[n].rate for n in members) * min(1.0, 1.0 / u) if u > 0 else 0.0


def place_muxserve(services: Sequence[ServiceLoad], cluster: ClusterSpec, max_candidates: int = 2000,
                   chunk_tokens: int | None = DEFAULT_CHUNK_TOKENS) -> PlacementPlan:
    """MuxServe's enumeration-based greedy placement (§3.4): for every mesh group (a
    multiset of node partitions, at most ``max_candidates`` in enumeration order), place the
    LLMs by rate x compute weight (weight bytes) descending, each on the feasible mesh with
    the largest increase of estimated served rate (ties: the smaller mesh, then the first);
    keep the mesh group with the largest total served rate, weighted by compute weight
    (ties, common when every candidate serves all rates: the lowest load ``U`` of its most
    loaded mesh, MuxServe's fairness goal; then the first enumerated). One
    placement per LLM (no replicas); the placement is static. ``chunk_tokens``: the
    scheduler's token budget (for the predicted latencies of the plan).

    Raises:
        ValueError: no mesh group holds every LLM.
    """
    t0 = time.perf_counter()
    scorer = Scorer(cluster, services, chunk_tokens=chunk_tokens)
    thr = _MuxThroughput(scorer)
    weight = {s.name: s.arch.weights_bytes for s in services}
    order = sorted(services, key=lambda s: -s.rate * weight[s.name])
    best = None
    combos = itertools.combinations_with_replacement(node_partitions(cluster.devices_per_node), cluster.num_nodes)
    for partition in itertools.islice(combos, max_candidates):
        groups = groups_of(cluster, partition)
        members: list[list[str]] = [[] for _ in groups]
        ok = True
        for s in order:
            pick = None
            for g, (_, devs) in enumerate(groups):
                size = len(devs)
                if not scorer.fits(size, members[g] + [s.name]):
                    continue
                gain = thr.mesh(size, members[g] + [s.name]) - thr.mesh(size, members[g])
                key = (-gain, size, g)
                if pick is None or key < pick:
                    pick = key
            if pick is None:
                ok = False
                break
            members[pick[2]].append(s.name)
        if not ok:
            continue
        total, worst = 0.0, 0.0
        for g, mem in enumerate(members):
            if mem:
                size = len(groups[g][1])
                rate = max(sum(scorer.services[n].rate for n in mem), 1e-12)
                total += thr.mesh(size, mem) / rate * sum(scorer.services[n].rate * weight[n] for n in mem)
                worst = max(worst, thr.load(size, mem))
        if best is None or total > best[0] * (1 + 1e-9) or (total >= best[0] * (1 - 1e-9) and worst < best[1]):
            best = (total, worst, groups, members)
    if best is None:
        raise ValueError("MuxServe placement: no mesh group holds every LLM")
    a = _Assignment(scorer, best[2])
    a.members = best[3]
    a.replicas = {s.name: 1 for s in services}
    return a.plan("muxserve", time.perf_counter() - t0)


def place_alpaserve(services: Sequence[ServiceLoad], cluster: ClusterSpec, slo_scale: float = 5.0,
                    chunk_tokens: int | None = DEFAULT_CHUNK_TOKENS) -> PlacementPlan:
    """AlpaServe's ``mp-search`` (§4.2) with tensor parallelism only: for every group size
    (a power of two up to a node), split the cluster into equal groups, fill them by
    ``replica_placement_fast_greedy`` (repeat: rank models by unserved rate ``rate x (1 -
    goodput)`` descending, models without a replica first (every service is placed at least
    once, ``multi-model-sharing.md`` §2.1; without this, under overload the hot models'
    replicas filled the memory before the big models got one), and groups by served rate
    ascending, add the first (group, model)
    pair not yet placed whose weights and KV floor fit; until nothing fits), and score it
    ``goodput - mean latency / 1e4 + replicas / 1e6``; keep the best. SLO = ``slo_scale``
    x the model's served-alone latency; ``chunk_tokens``: the scheduler's token budget.

    Raises:
        ValueError: no group size holds every model.
    """
    t0 = time.perf_counter()
    scorer = Scorer(cluster, services, chunk_tokens=chunk_tokens)
    slo = {s.name: slo_scale * scorer.alone_s(s.name) for s in services}
    total_rate = sum(s.rate for s in services) or 1.0
    best = None
    size = 1
    while size <= cluster.devices_per_node:
        groups = groups_of(cluster, [(size,) * (cluster.devices_per_node // size)] * cluster.num_nodes)
        a = _Assignment(scorer, groups)
        while True:
            good, served = _alpa_goodput(a, slo)
            unserved = sorted(services, key=lambda s: (s.name in a.replicas, -s.rate * (1 - good.get(s.name, 0.0)),
                                                       s.name))
            gorder = sorted(range(len(groups)), key=lambda g: (served[g], g))
            added = False
            for s in unserved:
                for g in gorder:
                    if s.name in a.members[g] or not scorer.fits(size, a.members[g] + [s.name]):
                        continue
                    a.members[g].append(s.name)
                    a.replicas[s.name] = a.replicas.get(s.name, 0) + 1
                    added = True
                    break
                if added:
                    break
            if not added:
                break
        if all(s.name in a.replicas for s in services):
            good, _ = _alpa_goodput(a, slo)
            goodput = sum(s.rate * good[s.name] for s in services) / total_rate
            lat = a.total() / scorer.total_rate
            score = goodput - lat / 1e4 + sum(a.replicas.values()) / 1e6
            if best is None or score > best[0]:
                best = (score, a)
        size *= 2
    if best is None:
        raise ValueError("AlpaServe placement: no group size holds every model")
    return best[1].plan("alpaserve", time.perf_counter() - t0)


def _alpa_goodput(a: _Assignment, slo: dict[str, float]) -> tuple[dict[str, float], list[float]]:
    """Per model the predicted goodput over its replicas, and per group the served rate."""
    good: dict[str, float] = {}
    served = []
    for g, mem in enumerate(a.members):
        _, est = a.scorer.group(len(a.groups[g][1]), [(n, a.rate(n)) for n in mem])
        rate_here = 0.0
        for n in mem:
            e2e = est.e2e_s[n]
            frac = min(1.0, slo[n] / e2e) if est.feasible else 0.0
            good[n] = good.get(n, 0.0) + frac / a.replicas[n]
            rate_here += a.rate(n) * frac
        served.append(rate_here)
    return good, served
