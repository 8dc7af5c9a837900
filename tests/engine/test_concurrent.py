"""Concurrent iterations of several models (a CPU's cores split between them): the
scheduler's decode-only side plans and the core's grouped step (torch-free)."""

from __future__ import annotations

import pytest

from seallm.core import FinishReason, ManualClock, Request, SamplingParams, StepResult
from seallm.engine import ReplicaCore
from seallm.engine.executor import ConcurrentExecutor
from seallm.kv import KVCacheManager, KVSpec, PagePool
from seallm.sched import Scheduler, SchedulerConfig, make_policy
from tests.sched.fakes import FakeExecutor

SPEC = KVSpec(num_layers=2, num_kv_heads=2, head_dim=8, dtype_bytes=4)  # 256 B/token
PAGE = 256 * 4  # 4 tokens per page


class LaneExecutor(FakeExecutor):
    """Runs a group of plans one after the other (deterministic), reports each plan's
    share of the device time, and fails a plan holding the poisoned request."""

    max_concurrent_plans = 2

    def __init__(self, *a, poison: str | None = None, **kw) -> None:
        super().__init__(*a, **kw)
        self.groups: list[list] = []
        self.poison = poison

    def execute(self, plan):
        if any(s.request_id == self.poison for s in plan.seqs):
            raise RuntimeError("probability tensor contains inf or nan")
        return super().execute(plan)

    def execute_concurrent(self, plans):
        self.groups.append(list(plans))
        out = []
        for p in plans:
            try:
                r = self.execute(p)
            except Exception as e:  # noqa: BLE001 - per plan, as the real executor reports
                out.append(e)
                continue
            out.append(StepResult(r.model, r.samples, r.step_time / len(plans)))
        return out


def _core(executor_cls, policy="fcfs", num_pages=256, budget=64, host_pages=0, **kw):
    kv = KVCacheManager(PagePool(num_pages, PAGE), PagePool(host_pages, PAGE) if host_pages else None)
    for m in ("a", "b", "c"):
        kv.add_model(m, SPEC)
    ex = executor_cls({m: kv.tokens_per_page(m) for m in ("a", "b", "c")}, **kw)
    mode = "swap" if host_pages else "recompute"
    sched = Scheduler(kv, make_policy(policy), SchedulerConfig(budget, 16, mode))
    return ReplicaCore(sched, ex, ManualClock(), concurrent_max_tokens=8), ex, kv


def _reqs():
    out = []
    for i in range(9):
        m = "abc"[i % 3]
        out.append(Request(f"r{i}", m, list(range(3, 3 + 5 + 3 * i)),
                           SamplingParams(max_tokens=6 + i, ignore_eos=True), arrival_time=0.01 * i))
    return out


def _run(core):
    done = {}
    for _ in range(2000):
        if not core.has_unfinished():
            break
        for r in core.step():
            if r.is_finished:
                done[r.request_id] = r
        core.scheduler.check_integrity()
        if core.idle:
            core.clock.advance(0.01)
    assert not core.has_unfinished()
    return done


def test_lane_executor_is_a_concurrent_executor():
    assert isinstance(LaneExecutor({"a": 4}), ConcurrentExecutor)
    assert not isinstance(FakeExecutor({"a": 4}), ConcurrentExecutor)


@pytest.mark.parametrize("policy", ["fcfs", "seallm"])
def test_concurrent_groups_give_the_serial_tokens(policy):
    serial, _, _ = _core(FakeExecutor, policy)
    conc, ex, kv = _core(LaneExecutor, policy)
    assert (serial.max_concurrent_plans, conc.max_concurrent_plans) == (1, 2)
    for c in (serial, conc):
        for r in _reqs():
            c.add_request(r)
    a, b = _run(serial), _run(conc)
    assert {k: v.output_token_ids for k, v in a.items()} == {k: v.output_token_ids for k, v in b.items()}
    assert all(r.finish_reason is FinishReason.LENGTH for r in b.values())
    assert conc.num_concurrent_steps == len(ex.groups) > 0
    for group in ex.groups:
        assert 2 <= len(group) <= 2 and len({p.model for p in group}) == len(group)
        assert all(p.num_tokens <= 8 for p in group)
        for side in group[1:]:  # decode tokens only, no page copies, nothing finished
            assert all(s.is_decode and s.sample for s in side.seqs)
            assert side.swaps == () and side.finished_ids == ()
    assert kv.pool.num_used == 0
    kv.check_integrity()


@pytest.mark.parametrize("policy", ["fcfs", "seallm"])
def test_swap_preemption_under_pressure_keeps_every_token(policy):
    serial, _, _ = _core(FakeExecutor, policy, num_pages=14, host_pages=64)
    conc, ex, kv = _core(LaneExecutor, policy, num_pages=14, host_pages=64)
    for c in (serial, conc):
        for r in _reqs():
            c.add_request(r)
    a, b = _run(serial), _run(conc)
    assert {k: v.output_token_ids for k, v in a.items()} == {k: v.output_token_ids for k, v in b.items()}
    assert conc.scheduler.num_swap_outs > 0 and ex.groups
    assert all(p.swaps == () for g in ex.groups for p in g)  # page copies run alone
    assert kv.pool.num_used == 0 and kv.host_pool.num_used == 0
    kv.check_integrity()


def test_large_iterations_run_alone():
    core, ex, _ = _core(LaneExecutor)
    core.add_request(Request("long", "a", list(range(3, 40)), SamplingParams(max_tokens=3, ignore_eos=True), 0.0))
    core.add_request(Request("short", "b", [3, 4, 5], SamplingParams(max_tokens=20, ignore_eos=True), 0.0))
    _run(core)
    grouped = {id(p) for g in ex.groups for p in g}
    serial = [p for p in ex.plans if id(p) not in grouped]
    assert any(p.num_tokens > 8 for p in serial)  # the 37-token prefill had every core
    assert all(p.num_tokens <= 8 for g in ex.groups for p in g)


def test_the_clock_moves_by_the_plans_shares():
    core, ex, _ = _core(LaneExecutor)
    for r in _reqs()[:2]:
        core.add_request(r)
    while not ex.groups:
        before = core.clock.now()
        core.step()
    # two plans of 0.01 s each on half the device: the device was busy 0.01 s
    assert core.clock.now() - before == pytest.approx(0.01)


def test_a_failing_plan_of_a_group_fails_alone():
    core, ex, kv = _core(LaneExecutor, poison="r1")
    reqs = _reqs()[:6]
    for r in reqs:
        core.add_request(r)
    _run(core)
    assert reqs[1].finish_reason is FinishReason.ABORT and "RuntimeError" in reqs[1].error
    for r in reqs[:1] + reqs[2:]:
        assert r.error is None and r.finish_reason is FinishReason.LENGTH
        assert r.num_output_tokens == r.params.max_tokens
    assert ex.groups and kv.pool.num_used == 0


def _decoding_scheduler(num_pages=256):
    """Three requests per model, 4-token prompts (one page each), prefilled: each one's
    next token needs a second page."""
    kv = KVCacheManager(PagePool(num_pages, PAGE))
    for m in ("a", "b"):
        kv.add_model(m, SPEC)
    sched = Scheduler(kv, make_policy("fcfs"), SchedulerConfig(64, 16, "recompute"))
    ex = FakeExecutor({m: kv.tokens_per_page(m) for m in ("a", "b")})
    for i in range(6):
        sched.add_request(Request(f"r{i}", "ab"[i % 2], [3, 4, 5, 6], SamplingParams(max_tokens=20, ignore_eos=True), 0.0))
    for _ in range(2):  # one prefill iteration per model
        plan = sched.schedule(0.0)
        sched.update(plan, ex.execute(plan), 0.0)
    assert all(len(rs) == 3 and all(r.num_uncomputed_tokens == 1 for r in rs) for rs in sched.running.values())
    return sched, kv


def test_schedule_concurrent_plans_decodes_of_an_idle_model():
    sched, kv = _decoding_scheduler()
    plan = sched.schedule(0.0)
    side = sched.schedule_concurrent(0.0, [plan.model], max_tokens=2)
    assert side is not None and side.model != plan.model
    assert side.num_tokens == 2 and all(s.is_decode and s.sample for s in side.seqs)
    assert side.swaps == () and side.finished_ids == ()
    assert sched.schedule_concurrent(0.0, [plan.model, side.model], max_tokens=8) is None
    kv.check_integrity()
    sched.check_integrity()


def test_schedule_concurrent_takes_only_free_pages():
    sched, kv = _decoding_scheduler(num_pages=10)  # 6 pages held, the main plan takes 3
    plan = sched.schedule(0.0)
    assert plan.num_tokens == 3 and kv.pool.num_free == 1
    side = sched.schedule_concurrent(0.0, [plan.model], max_tokens=8)
    assert side is not None and side.num_tokens == 1 and kv.pool.num_free == 0
    assert sched.num_preemptions == 0  # nobody was preempted to make room
    kv.check_integrity()


@pytest.mark.parametrize("together", [True, False])
def test_the_policy_learns_a_group_together(together):
    """The seallm policy's tail guard counts a demoted request's waiting; in a group, the
    requests of every plan ran, so none of them waited (applied one by one, the second
    plan's requests would count the first one's iteration as waiting)."""
    kv = KVCacheManager(PagePool(256, PAGE))
    for m in ("a", "b"):
        kv.add_model(m, SPEC)
    policy = make_policy("seallm")
    sched = Scheduler(kv, policy, SchedulerConfig(64, 16, "recompute"))
    ex = FakeExecutor({m: kv.tokens_per_page(m) for m in ("a", "b")})
    for i in range(4):
        sched.add_request(Request(f"r{i}", "ab"[i % 2], [3, 4, 5, 6], SamplingParams(max_tokens=20, ignore_eos=True), 0.0))
    now = 0.0
    for _ in range(2):
        plan = sched.schedule(now)
        now += 0.01
        sched.update(plan, ex.execute(plan), now)
    for st in policy._state.values():
        st.level, st.waited_s = 1, 0.0  # demoted: the tail guard watches them
    plan = sched.schedule(now)
    side = sched.schedule_concurrent(now, [plan.model], 8)
    results = [ex.execute(plan), ex.execute(side)]
    now += 0.5
    if together:
        sched.update_concurrent([plan, side], results, now)
    else:
        for p, r in zip([plan, side], results):
            sched.update(p, r, now)
    waited = {rid: st.waited_s for rid, st in policy._state.items()}
    if together:
        assert all(w == 0.0 for w in waited.values())
    else:
        assert any(w > 0 for w in waited.values())


@pytest.mark.parametrize("policy", ["fcfs", "seallm", "muxserve", "sarathi"])
def test_a_model_with_only_waiting_requests_gets_its_turn(policy):
    """Two models decode long requests side by side; a third only has short requests
    arriving. A side plan admits nobody, so it must not count as the model's turn: the
    third model's requests start as often as when one iteration runs at a time."""
    started = {}
    for cls in (FakeExecutor, LaneExecutor):
        core, ex, _ = _core(cls, policy, num_pages=4096)
        core.concurrent_max_tokens = 128
        for m in "bc":
            core.add_request(Request(f"{m}0", m, [3, 4, 5, 6], SamplingParams(max_tokens=400, ignore_eos=True), 0.0))
        shorts = []
        for step in range(300):
            if step % 3 == 0:
                r = Request(f"a{step}", "a", [3, 4, 5, 6, 7], SamplingParams(max_tokens=30, ignore_eos=True),
                            core.clock.now())
                core.add_request(r)
                shorts.append(r)
            core.step()
            core.scheduler.check_integrity()
        started[cls] = sum(r.num_output_tokens > 0 for r in shorts)
    assert started[LaneExecutor] >= 0.9 * started[FakeExecutor] > 0, started


def test_a_group_the_executor_refuses_runs_plan_by_plan():
    class Refusing(LaneExecutor):
        def execute_concurrent(self, plans):
            raise RuntimeError("lanes unavailable")

    core, ex, kv = _core(Refusing)
    reqs = _reqs()[:4]
    for r in reqs:
        core.add_request(r)
    _run(core)  # every plan of a group re-runs alone, sequence by sequence
    assert all(r.error is None and r.num_output_tokens == r.params.max_tokens for r in reqs)
    assert kv.pool.num_used == 0
