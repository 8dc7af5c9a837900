"""Exact fast-forward of steady decode batches: the same results as step-by-step simulation,
request by request and token by token (torch-free)."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from seallm.bench.workload import BenchRequest
from seallm.cluster.replacement import ReplacementConfig
from seallm.core import ManualClock, Request, SamplingParams
from seallm.cost import MaxAffineCostModel
from seallm.kv import KVCacheManager, KVSpec, PagePool
from seallm.sched import Scheduler, SchedulerConfig, make_policy
from seallm.sim import SimModel, simulate_device
from seallm.sim.cluster import SYSTEMS, place, service_loads, simulate_cluster
from seallm.sim.device import simulate_replicas
from seallm.sim.fastforward import fast_forward

from tests.sim.test_cluster import SMALL

SPEC = KVSpec(num_layers=2, num_kv_heads=2, head_dim=8, dtype_bytes=4)  # 256 B/token
PAGE = 256 * 16
# 1 ms per iteration + 0.1 ms per batch token + 1 us per context token
COST = MaxAffineCostModel(((1e-4, 1e-6, 1e-3),))
MODELS = (SimModel("a", SPEC, COST), SimModel("b", SPEC, COST))


def workload(n: int, seed: int, models=("a", "b"), rate: float = 40.0, max_out: int = 200) -> list[BenchRequest]:
    rng = random.Random(seed)
    t, out = 0.0, []
    for _ in range(n):
        t += rng.expovariate(rate)
        out.append(BenchRequest(rng.choice(models), t, rng.randint(1, 120), rng.randint(1, max_out)))
    return out


def same(a, b, fast_forwards: bool = True) -> None:
    """Two simulation results, ``a`` fast-forwarded (``fast_forwards``: some iterations were)
    and ``b`` step by step, agree exactly: every record (token times included), the totals."""
    assert a.records == b.records
    assert (a.num_fast_forwarded > 0) == fast_forwards and b.num_fast_forwarded == 0
    assert (a.num_steps, a.busy_s, a.makespan_s, a.num_preemptions) == (b.num_steps, b.busy_s, b.makespan_s,
                                                                       b.num_preemptions)


@pytest.mark.parametrize("policy", ["fcfs", "seallm", "muxserve", "slos-serve"])
@pytest.mark.parametrize("pages,mode", [(400, "recompute"), (24, "recompute"), (24, "swap")])
def test_one_device_fast_forward_equals_step_by_step(policy, pages, mode):
    reqs = workload(60, seed=pages)
    cfg = SchedulerConfig(max_num_batched_tokens=128, max_num_seqs=8, preemption_mode=mode)
    runs = [simulate_device(reqs, MODELS, make_policy(policy), pages, PAGE, cfg, swap_pages=64, fast_forward=ff)
            for ff in (True, False)]
    same(*runs, fast_forwards=policy != "slos-serve")  # the SLO planner re-plans: never steady
    assert all(r.ok and r.tokens_out == q.output_len for r, q in zip(runs[0].records, reqs))
    if pages == 24:
        assert runs[0].num_preemptions > 0  # memory pressure was exercised


def test_fast_forward_stops_for_chains_forwards_and_loads():
    # tool-calling chains (an arrival that another replica's finish brings), try-then-forward
    # routing over two replicas, and models loaded on demand: still identical
    reqs = workload(40, seed=7, rate=20.0)
    reqs += [BenchRequest("a", 0.0, 30, 40, after=i, tool_delay_s=0.05) for i in range(0, 40, 5)]
    models = tuple(replace(m, weights_bytes=10**8) for m in MODELS)
    kw = dict(max_resident_models=1, disk_bandwidth=1e10)
    for routing in ("round_robin", "slo"):
        runs = [simulate_replicas(reqs, models, lambda: make_policy("seallm"), 2, 200, PAGE, routing_policy=routing,
                                  fast_forward=ff, **kw) for ff in (True, False)]
        same(*runs)
        assert runs[0].num_loads > 2


@pytest.mark.parametrize("system", list(SYSTEMS))
def test_cluster_fast_forward_equals_step_by_step(system):
    names = [s.name for s in SMALL.services]
    reqs = SMALL.workload.requests(names, seed=5)
    loads = service_loads(reqs, SMALL.archs, SMALL.workload.replay_s)
    spec = SYSTEMS[system]
    plan = place(spec, loads, SMALL.cluster)
    runs = [simulate_cluster(reqs, plan, SMALL.cluster, loads, spec, SMALL.scheduler, fast_forward=ff)
            for ff in (True, False)]
    same(*runs)


def test_cluster_fast_forward_equals_step_by_step_while_re_placing():
    names = [s.name for s in SMALL.services]
    wl = replace(SMALL.workload, drift_period_s=5.0, duration_s=30.0)
    reqs = wl.requests(names, seed=2)
    loads = service_loads(reqs, SMALL.archs, wl.replay_s)
    spec = SYSTEMS["seallm"]
    plan = place(spec, loads, SMALL.cluster)
    rc = ReplacementConfig(mode="fixed", interval_s=6.0)
    runs = [simulate_cluster(reqs, plan, SMALL.cluster, loads, spec, SMALL.scheduler, replacement=rc,
                             fast_forward=ff) for ff in (True, False)]
    same(*runs)
    assert runs[0].replacements == runs[1].replacements and runs[0].num_switches > 0


def _scheduler(pages: int, policy: str = "seallm") -> Scheduler:
    return Scheduler(KVCacheManager(PagePool(pages, PAGE)), make_policy(policy), SchedulerConfig(),
                     specs={"a": SPEC})


def _decoding(sched: Scheduler, n: int, prompt: int, max_tokens: int) -> list[Request]:
    sched.add_model("a")
    reqs = [Request(str(i), "a", [5] * prompt, SamplingParams(max_tokens=max_tokens, ignore_eos=True), 0.0)
            for i in range(n)]
    for r in reqs:
        sched.add_request(r)
    while any(r.num_output_tokens == 0 for r in reqs):  # prefill: first tokens sampled
        plan = sched.schedule(0.0)
        from seallm.core import SampleOutput, StepResult
        sched.update(plan, StepResult("a", {s.request_id: SampleOutput(3) for s in plan.seqs if s.sample}, 1e-3), 0.0)
    return reqs


def test_steps_left_stop_before_a_finish_and_pages_are_settled_after_the_run():
    sched = _scheduler(pages=100)
    reqs = _decoding(sched, 2, prompt=10, max_tokens=30)
    batches = sched.steady_decode()
    assert list(batches) == ["a"] and set(batches["a"]) == set(reqs)
    # one token out: 28 more samples leave it unfinished, the 29th (its 30th token) ends it
    assert [sched.decode_steps_left(r, 3) for r in reqs] == [28, 28]
    reqs[0].params = replace(reqs[0].params, stop_token_ids=(3,))
    assert sched.decode_steps_left(reqs[0], 3) == 0 and sched.decode_steps_left(reqs[0], 7) == 28
    sched.decode_steps(reqs, 3, 20, 1.0)
    sched.settle_decode(reqs)
    sched.check_integrity()
    assert all(r.num_computed_tokens == 30 and r.num_output_tokens == 21 for r in reqs)
    assert sched.kv.num_pages_of(reqs[0].request_id) == 2  # 30 tokens at 16 per page
    tight = _scheduler(pages=2)
    reqs = _decoding(tight, 2, prompt=10, max_tokens=5)
    tight.decode_steps(reqs, 3, 7, 1.0)  # 17 tokens each: a second page each, none free
    with pytest.raises(RuntimeError, match="free pages"):
        tight.settle_decode(reqs)


def test_fast_forward_stops_where_pages_run_out():
    # two long requests on a pool that runs out: fast-forward hands the iteration that needs
    # a missing page to the normal path, which preempts; still identical
    reqs = [BenchRequest("a", 0.0, 20, 300), BenchRequest("a", 0.001, 20, 300), BenchRequest("b", 0.002, 20, 300)]
    runs = [simulate_device(reqs, MODELS, make_policy("seallm"), 30, PAGE, fast_forward=ff) for ff in (True, False)]
    same(*runs)
    assert runs[0].num_preemptions > 0


def test_no_steady_decode_while_anything_waits():
    sched = _scheduler(pages=100)
    _decoding(sched, 2, prompt=10, max_tokens=30)
    assert sched.steady_decode() is not None
    sched.add_request(Request("w", "a", [5] * 10, SamplingParams(max_tokens=5), 0.0))
    assert sched.steady_decode() is None  # a waiting request: the next plan admits it


def test_policies_without_fast_forward_support_are_never_fast_forwarded():
    assert make_policy("slos-serve").steady_decode_until({}, 0.0) is None
    with pytest.raises(NotImplementedError):
        make_policy("sarathi").on_decode_run("a", [], [], [], [])
    from seallm.sim.replica import simulated_replica
    from seallm.engine.replica import ReplicaModel, ReplicaSpec

    spec = ReplicaSpec(models=(ReplicaModel("a", SPEC),), kv_cache_bytes=100 * PAGE, device="simulated",
                       page_size_bytes=PAGE, scheduling_policy="slos-serve")
    rep = simulated_replica(spec, {"a": COST}, {"a": MODELS[0]})
    from seallm.engine.messages import AddRequest

    rep.submit(AddRequest("0", "a", [5] * 10, SamplingParams(max_tokens=50, ignore_eos=True), 0.0))
    rep.step()
    rep.step()
    assert rep.core.scheduler.steady_decode() is not None
    assert fast_forward(rep) is None
    assert isinstance(rep.clock, ManualClock)


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy=st.sampled_from(["fcfs", "seallm", "muxserve"]), seed=st.integers(0, 10_000),
       pages=st.integers(12, 200), seqs=st.integers(1, 12), budget=st.sampled_from([16, 64, 256]),
       mode=st.sampled_from(["recompute", "swap"]), models=st.integers(1, 3), chains=st.booleans(),
       rate=st.floats(2.0, 80.0), resident=st.sampled_from([None, 1]))
def test_random_devices_fast_forward_equals_step_by_step(policy, seed, pages, seqs, budget, mode, models, chains,
                                                        rate, resident):
    names = ("a", "b", "c")[:models]
    sims = tuple(SimModel(n, SPEC, COST, weights_bytes=10**7, max_model_len=400) for n in names)
    reqs = workload(25, seed=seed, models=names, rate=rate, max_out=120)
    if chains:
        reqs += [BenchRequest(names[0], 0.0, 10, 15, after=i, tool_delay_s=0.01 * i) for i in range(0, 25, 6)]
    cfg = SchedulerConfig(max_num_batched_tokens=budget, max_num_seqs=seqs, preemption_mode=mode)
    runs = []
    for ff in (True, False):
        try:
            runs.append(simulate_device(reqs, sims, make_policy(policy), pages, PAGE, cfg, swap_pages=32,
                                        max_resident_models=resident, disk_bandwidth=1e9, fast_forward=ff))
        except ValueError as e:  # a request larger than the whole pool: both ways alike
            runs.append(str(e))
    if isinstance(runs[0], str) or isinstance(runs[1], str):
        assert runs[0] == runs[1]
        return
    a, b = runs
    assert a.records == b.records
    assert (a.num_steps, a.busy_s, a.makespan_s, a.num_preemptions, a.num_swap_outs) == (
        b.num_steps, b.busy_s, b.makespan_s, b.num_preemptions, b.num_swap_outs)
