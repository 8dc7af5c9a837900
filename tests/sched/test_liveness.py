"""Liveness under random workloads (hypothesis, torch-free): whatever the arrivals, sizes,
priorities, pool and swap space, every request finishes with the tokens a roomy pool gives,
the queues and pages stay consistent every iteration, and nothing stalls."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seallm.core import ManualClock, Request, SamplingParams
from seallm.engine import ReplicaCore
from seallm.kv import KVCacheManager, KVSpec, PagePool
from seallm.sched import Scheduler, SchedulerConfig, make_policy
from tests.sched.fakes import FakeExecutor

SPECS = {"a": KVSpec(num_layers=2, num_kv_heads=2, head_dim=8, dtype_bytes=4),  # 4 tokens/page
         "b": KVSpec(num_layers=1, num_kv_heads=2, head_dim=8, dtype_bytes=4)}  # 8 tokens/page
PAGE = 1024
STEP = 0.01

request_st = st.tuples(st.sampled_from("ab"), st.integers(1, 60), st.integers(1, 24), st.integers(0, 40),
                       st.integers(0, 2))  # model, prompt, max_tokens, arrival step, API priority


def _drive(reqs, policy, num_pages, host_pages, budget, max_seqs, max_steps=20_000):
    kv = KVCacheManager(PagePool(num_pages, PAGE), PagePool(host_pages, PAGE) if host_pages else None)
    for m, spec in SPECS.items():
        kv.add_model(m, spec)
    opts = {"aging_interval_s": 0.5} if policy == "seallm" else {}
    sched = Scheduler(kv, make_policy(policy, opts),
                      SchedulerConfig(budget, max_seqs, "swap" if host_pages else "recompute"))
    clock = ManualClock()
    core = ReplicaCore(sched, FakeExecutor({m: kv.tokens_per_page(m) for m in SPECS}), clock)
    pending = sorted(((t, i, m, p, n, pr) for i, (m, p, n, t, pr) in enumerate(reqs)), key=lambda x: (x[0], x[1]))
    done: dict[str, Request] = {}
    step = 0
    while pending or core.has_unfinished():
        while pending and pending[0][0] <= step:
            _, i, m, p, n, pr = pending.pop(0)
            core.add_request(Request(f"r{i}", m, [3 + (i * 7 + k) % 90 for k in range(p)],
                                     SamplingParams(max_tokens=n, ignore_eos=True), clock.now(), priority=pr))
        for r in core.step():
            if r.is_finished:
                done[r.request_id] = r
        sched.check_integrity()
        if core.idle:  # an executed iteration moved the clock by its step time
            clock.advance(STEP)
        step += 1
        assert step < max_steps, f"stalled: {sched.num_running()} running, {sched.num_waiting()} waiting"
    assert kv.pool.num_free == kv.pool.num_pages
    return {k: r.output_token_ids for k, r in done.items()}


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(reqs=st.lists(request_st, min_size=1, max_size=14), policy=st.sampled_from(["fcfs", "seallm"]),
       num_pages=st.integers(16, 40), host_pages=st.sampled_from([0, 4, 64]), budget=st.sampled_from([8, 32]),
       max_seqs=st.sampled_from([1, 3, 16]))
def test_every_request_finishes_with_the_roomy_pool_tokens(reqs, policy, num_pages, host_pages, budget, max_seqs):
    # 16 pages hold 64 tokens of model a: every single request (<= 84 tokens of a) fits alone
    # only from 21 pages, so small pools also exercise requests that cannot all fit at once.
    num_pages = max(num_pages, 22)
    ref = _drive(reqs, policy, 10_000, 0, budget, max_seqs)
    got = _drive(reqs, policy, num_pages, host_pages, budget, max_seqs)
    assert got == ref
    assert len(got) == len(reqs)
