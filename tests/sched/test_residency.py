"""Models loaded and unloaded at run time on one replica (torch-free: cost-model executor)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seallm.core import FinishReason, ManualClock, Request, SamplingParams
from seallm.cost import MaxAffineCostModel
from seallm.engine.replica import ReplicaModel, ReplicaSpec, build_replica
from seallm.kv import KVCacheManager, KVSpec, PagePool
from seallm.sched import SchedulerConfig
from seallm.sched.residency import ResidencyConfig, initial_residents
from seallm.sim.executor import CostModelExecutor

SPEC = KVSpec(num_layers=2, num_kv_heads=2, head_dim=8, dtype_bytes=4)  # 256 B/token
SPEC2 = KVSpec(num_layers=3, num_kv_heads=1, head_dim=16, dtype_bytes=2)  # other shape: 192 B/token
COST = MaxAffineCostModel(((1e-4, 0.0, 1e-3),))
NAMES = ("a", "b", "c", "d")
WEIGHTS = 2_000_000  # bytes per model: 1 ms to load from disk at 2 GB/s


def make(max_resident=2, policy="seallm", pinned=(), sched_policy="fcfs", pages=64, weights_memory=None,
         preemption="swap", preempt_after=1.0):
    clock = ManualClock(0.0)
    models = tuple(ReplicaModel(n, SPEC if i % 2 == 0 else SPEC2, WEIGHTS, n in pinned) for i, n in enumerate(NAMES))
    spec = ReplicaSpec(models=models, kv_cache_bytes=pages * 4096, page_size_bytes=4096,
                       swap_space_bytes=32 * 4096, device="simulated",
                       scheduler=SchedulerConfig(64, 8, preemption), scheduling_policy=sched_policy,
                       policy_options={} if sched_policy == "fcfs" else {"refit_every_steps": None},
                       max_resident_models=max_resident, weights_memory_bytes=weights_memory,
                       residency_policy=policy, residency_preempt_after=preempt_after)
    ex = []

    def factory(layout):
        e = CostModelExecutor({n: COST for n in NAMES}, clock, layout.page_size_bytes,
                              weights_bytes={n: WEIGHTS for n in NAMES})
        ex.append(e)
        return e

    rep = build_replica(spec, factory, clock)
    return rep, ex[0], clock


def req(rid, model, n_in=20, n_out=4, t=0.0, priority=0):
    return Request(rid, model, [5] * n_in, SamplingParams(max_tokens=n_out, ignore_eos=True), arrival_time=t,
                   priority=priority)


class Driver:
    """Steps a replica in simulated time and records what happened."""

    def __init__(self, rep, ex, clock):
        self.rep, self.ex, self.clock = rep, ex, clock
        self.core, self.sched = rep.core, rep.scheduler
        self.finished: dict[str, Request] = {}
        self.events = []
        self.max_resident = 0
        self.log = []  # (time, event kind, model, running requests of the model at that time)

    def step(self):
        before = {m: len(self.sched.running[m]) for m in NAMES}
        now = self.clock.now()
        for r in self.core.step():
            if r.is_finished:
                self.finished[r.request_id] = r
        for ev in self.core.events:
            self.log.append((now, ev.kind, ev.model, before[ev.model]))
        self.events += self.core.events
        self.core.events = []
        self.max_resident = max(self.max_resident, len(self.rep.kv.models))
        self.sched.check_integrity()
        if self.clock.now() == now:
            t = self.ex.next_load_done()
            self.clock.advance(max(t - now, 0.0) if t is not None else 1e-3)

    def run(self, limit=20000):
        n = 0
        while self.core.has_unfinished():
            self.step()
            n += 1
            assert n < limit, "replica did not finish"


def test_initial_residents_pinned_first_and_impossible_limits_refused():
    w = {n: 10 for n in NAMES}
    assert initial_residents(NAMES, w, ResidencyConfig(2, pinned=frozenset({"c"}))) == ["c", "a"]
    assert initial_residents(NAMES, w, ResidencyConfig(None, 25)) == ["a", "b"]
    with pytest.raises(ValueError, match="could never be loaded"):
        initial_residents(NAMES, w, ResidencyConfig(2, pinned=frozenset({"a", "b"})))
    with pytest.raises(ValueError, match="more than weights_memory"):
        initial_residents(NAMES, {**w, "d": 100}, ResidencyConfig(None, 50))
    with pytest.raises(ValueError, match="not in the replica"):
        initial_residents(NAMES, w, ResidencyConfig(2, pinned=frozenset({"x"})))
    with pytest.raises(ValueError, match="unknown residency policy"):
        ResidencyConfig(policy="random")


def test_kv_remove_model_refuses_while_pages_are_held():
    kv = KVCacheManager(PagePool(8, 4096))
    kv.add_model("a", SPEC)
    assert kv.allocate("r", "a", 20)
    with pytest.raises(ValueError, match="holding KV pages"):
        kv.remove_model("a")
    kv.free("r")
    kv.remove_model("a")
    assert kv.models == [] and not kv.is_resident("a")
    kv.check_integrity()
    with pytest.raises(ValueError, match="not resident"):
        kv.remove_model("a")


def test_request_for_non_resident_model_is_held_loaded_and_completes():
    rep, ex, clock = make()
    assert rep.kv.models == ["a", "b"]
    d = Driver(rep, ex, clock)
    rep.core.add_request(req("r1", "c"))
    assert rep.scheduler.num_waiting("c") == 1 and not rep.core.is_resident("c")
    d.run()
    assert d.finished["r1"].num_output_tokens == 4
    assert rep.core.is_resident("c") and len(rep.kv.models) == 2
    assert [(e.kind, e.model) for e in d.events] == [("unloaded", "a"), ("loaded", "c")]
    assert d.events[1].source == "disk" and d.events[1].seconds == pytest.approx(WEIGHTS / 2e9)
    # c was loaded at a load's cost after the arrival: first token after the load time.
    assert d.finished["r1"].first_token_time >= WEIGHTS / 2e9
    # a comes back from the host cache, evicting the least requested idle model.
    rep.core.add_request(req("r2", "a", t=clock.now()))
    d.run()
    assert d.events[-1].kind == "loaded" and d.events[-1].model == "a" and d.events[-1].source == "host_cache"
    assert rep.scheduler.kv.pool.num_used == 0


@pytest.mark.parametrize("policy, preempt_after", [("lru", 1.0), ("seallm", None)])
def test_never_evicts_a_model_with_running_requests_and_never_more_than_the_limit(policy, preempt_after):
    rep, ex, clock = make(policy=policy, preempt_after=preempt_after)
    d = Driver(rep, ex, clock)
    t = 0.0
    for i in range(40):
        rep.core.add_request(req(f"r{i}", NAMES[i % 4], n_in=10 + i % 7, n_out=3 + i % 5, t=t))
        for _ in range(3):
            d.step()
        t = clock.now()
    d.run()
    assert len(d.finished) == 40 and all(r.finish_reason is FinishReason.LENGTH for r in d.finished.values())
    assert d.max_resident <= 2
    unloads = [x for x in d.log if x[1] == "unloaded"]
    assert unloads and all(running == 0 for _, _, _, running in unloads)
    assert rep.kv.pool.num_used == 0


def test_pinned_model_is_never_evicted():
    rep, ex, clock = make(pinned=("b",))
    d = Driver(rep, ex, clock)
    for i in range(24):
        rep.core.add_request(req(f"r{i}", NAMES[(i * 3) % 4], t=clock.now()))
        d.step()
    d.run()
    assert len(d.finished) == 24
    assert "b" not in {e.model for e in d.events if e.kind == "unloaded"}
    assert rep.core.is_resident("b")
    with pytest.raises(ValueError, match="pinned"):
        rep.core.unload_model("b")


def test_force_unload_aborts_its_requests_and_frees_pages():
    rep, ex, clock = make()
    d = Driver(rep, ex, clock)
    for i in range(3):
        rep.core.add_request(req(f"r{i}", "a", n_in=40, n_out=50))
    rep.core.add_request(req("other", "b", n_in=40, n_out=10))
    d.step()
    d.step()
    assert rep.scheduler.running["a"]
    rep.core.unload_model("a", force=True)
    d.run()
    assert all(d.finished[f"r{i}"].finish_reason is FinishReason.ABORT for i in range(3))
    assert d.finished["other"].finish_reason is FinishReason.LENGTH  # a bystander is untouched
    assert not rep.core.is_resident("a") and rep.kv.pool.num_used == 0


def test_unload_drains_current_requests_then_holds_new_ones_for_a_reload():
    rep, ex, clock = make()
    d = Driver(rep, ex, clock)
    rep.core.add_request(req("old1", "a", n_out=20))
    rep.core.add_request(req("old2", "a", n_out=20))
    d.step()
    rep.core.unload_model("a")
    rep.core.add_request(req("new", "a", t=clock.now()))
    while "old1" not in d.finished or "old2" not in d.finished:
        d.step()
        if not {"old1", "old2"} <= set(d.finished):
            assert rep.scheduler.requests["new"].first_scheduled_time is None  # held behind the drain
    d.run()
    kinds = [(e.kind, e.model) for e in d.events]
    assert kinds[:2] == [("unloaded", "a"), ("loaded", "a")]  # unloaded after the drain, reloaded for "new"
    assert all(d.finished[i].finish_reason is FinishReason.LENGTH for i in ("old1", "old2", "new"))


def test_seallm_loads_by_urgency_lru_by_arrival():
    order = {}
    for policy in ("seallm", "lru"):
        rep, ex, clock = make(max_resident=2, policy=policy, pinned=("a",), sched_policy="seallm")
        d = Driver(rep, ex, clock)
        rep.core.add_request(req("late-urgent", "d", t=0.0, priority=-1))
        rep.core.add_request(req("first", "c", t=-1.0))
        d.run()
        order[policy] = [e.model for e in d.events if e.kind == "loaded"]
    assert order["seallm"][0] == "d" and order["lru"][0] == "c"


def test_a_model_just_loaded_serves_what_it_was_loaded_for_before_eviction():
    rep, ex, clock = make(max_resident=1, policy="lru")
    d = Driver(rep, ex, clock)
    rep.core.add_request(req("b1", "b", t=0.0))
    rep.core.add_request(req("c1", "c", t=0.0))
    rep.core.add_request(req("d1", "d", t=0.0))
    d.run()
    loads = [e.model for e in d.events if e.kind == "loaded"]
    assert loads == ["b", "c", "d"]  # each served before the next replaced it: 3 loads, no thrash
    assert all(d.finished[r].num_output_tokens == 4 for r in ("b1", "c1", "d1"))


def test_an_overdue_drain_preempts_once_and_every_request_completes():
    # a and b run long requests; c's short request, more urgent under the seallm scheduling
    # policy, waits. seallm waits for the drain for what preempting costs, then evicts the drained model, preempting its request,
    # which completes after its model's reload; lru waits for the drain to end.
    out = {}
    for policy in ("seallm", "lru"):
        rep, ex, clock = make(policy=policy, sched_policy="seallm", pages=512)
        d = Driver(rep, ex, clock)
        rep.core.add_request(req("a1", "a", n_out=4000))
        rep.core.add_request(req("b1", "b", n_out=4000, t=0.0))
        while clock.now() < 2.5:  # past their first budgets: a fresh request is more urgent
            d.step()
        rep.core.add_request(req("c1", "c", n_out=2, t=clock.now()))
        t_c = clock.now()
        d.run()
        assert {r.num_output_tokens for r in d.finished.values()} == {4000, 2}
        assert all(r.finish_reason is FinishReason.LENGTH for r in d.finished.values())
        preempted = [x for x in d.log if x[1] == "unloaded" and x[3] > 0]
        out[policy] = (d.finished["c1"].finish_time - t_c, len(preempted))
        assert max(r.num_preemptions for r in d.finished.values()) <= (1 if policy == "seallm" else 0)
        assert rep.kv.pool.num_used == 0 and d.max_resident <= 2
    (seallm_wait, seallm_preempted), (lru_wait, lru_preempted) = out["seallm"], out["lru"]
    assert lru_preempted == 0 and seallm_preempted >= 1
    assert seallm_wait < 0.5 * lru_wait  # c did not wait for the rest of a long request


def test_seallm_drains_only_for_more_urgent_work():
    # FCFS keys: c's request is younger than everything a and b run, so seallm residency does
    # not drain them for it (it loads c once a model is idle); lru drains at once.
    for policy, drained in (("seallm", False), ("lru", True)):
        rep, ex, clock = make(policy=policy, sched_policy="fcfs")
        d = Driver(rep, ex, clock)
        rep.core.add_request(req("a1", "a", n_out=50))
        rep.core.add_request(req("b1", "b", n_out=50))
        d.step()
        d.step()
        rep.core.add_request(req("c1", "c", n_out=2, t=clock.now()))
        d.step()
        assert bool(rep.core.residency._drained) is drained
        d.run()
        assert len(d.finished) == 3


def test_busy_models_are_drained_so_a_held_request_is_not_starved():
    rep, ex, clock = make(max_resident=2, policy="lru")
    d = Driver(rep, ex, clock)
    # a and b receive a never-ending stream; c must still get in.
    rep.core.add_request(req("c1", "c", t=0.0))
    i = 0
    while "c1" not in d.finished:
        for m in ("a", "b"):
            rep.core.add_request(req(f"{m}{i}", m, t=clock.now()))
        i += 1
        d.step()
        assert i < 500, "the held request starved"
    d.run()
    assert d.max_resident <= 2


def test_held_request_budget_includes_the_predicted_load_time():
    rep, ex, clock = make(sched_policy="seallm")
    rep.core.add_request(req("resident", "a"))
    rep.core.add_request(req("held", "c"))
    pol = rep.scheduler.policy
    extra = pol.state("held").budget_s - pol.state("resident").budget_s
    assert extra == pytest.approx(WEIGHTS / 1e9)  # the first load is predicted at 1 GB/s


def test_weights_memory_limit_counts_bytes():
    rep, ex, clock = make(max_resident=None, weights_memory=3 * WEIGHTS)
    assert rep.kv.models == ["a", "b", "c"]
    d = Driver(rep, ex, clock)
    rep.core.add_request(req("r", "d"))
    d.run()
    assert len(rep.kv.models) == 3 and rep.core.is_resident("d")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(st.tuples(st.sampled_from(["req", "req", "req", "load", "unload", "force", "step"]),
                              st.sampled_from(NAMES), st.integers(1, 60), st.integers(1, 12)),
                    min_size=1, max_size=40),
       policy=st.sampled_from(["seallm", "lru"]), sched_policy=st.sampled_from(["fcfs", "seallm"]),
       preemption=st.sampled_from(["swap", "recompute"]))
def test_random_loads_unloads_and_requests_keep_the_books(ops, policy, sched_policy, preemption):
    rep, ex, clock = make(policy=policy, pinned=("a",), sched_policy=sched_policy, pages=24, preemption=preemption)
    d = Driver(rep, ex, clock)
    sent = []
    for i, (op, model, n_in, n_out) in enumerate(ops):
        if op == "req":
            rep.core.add_request(req(f"r{i}", model, n_in, n_out, t=clock.now()))
            sent.append(f"r{i}")
        elif op in ("unload", "force"):
            if model == "a":
                with pytest.raises(ValueError):
                    rep.core.unload_model(model, force=op == "force")
            else:
                rep.core.unload_model(model, force=op == "force")
        elif op == "load":
            rep.core.load_model(model)
        d.step()
        assert d.max_resident <= 2 and rep.core.is_resident("a")
    d.run()
    assert set(sent) <= set(d.finished)
    for rid in sent:
        r = d.finished[rid]
        assert r.finish_reason is FinishReason.ABORT or r.num_output_tokens == r.params.max_tokens
    assert rep.kv.pool.num_used == 0
    assert rep.kv.host_pool is None or rep.kv.host_pool.num_used == 0


def test_snapshot_reports_queues_pages_weights_and_rates():
    rep, ex, clock = make()
    rep.core.add_request(req("r1", "a", n_in=40))
    rep.core.add_request(req("r2", "c"))
    rep.core.step()
    snap = rep.core.snapshot()
    a, c = snap.models["a"], snap.models["c"]
    assert a.resident and a.running == 1 and a.kv_pages > 0 and a.weights_bytes == WEIGHTS and a.arrival_rate > 0
    assert not c.resident and c.loading and c.waiting == 1 and c.kv_pages == 0
    assert snap.kv_pages_free == snap.kv_pages_total - a.kv_pages


def test_a_load_cancels_an_unload_that_is_still_draining():
    rep, ex, clock = make()
    d = Driver(rep, ex, clock)
    rep.core.add_request(req("old", "a", n_out=20))
    d.step()
    rep.core.unload_model("a")
    rep.core.add_request(req("new", "a", t=clock.now()))
    rep.core.load_model("a")
    d.run()
    assert not any(e.model == "a" for e in d.events)  # never left the device
    assert d.finished["new"].num_output_tokens == 4
