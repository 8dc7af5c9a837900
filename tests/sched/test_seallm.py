"""SeaLLM doubling-budget scheduling (torch-free, fabricated step results, deterministic)."""

from __future__ import annotations

import math

import pytest

from seallm.core import ManualClock, Request, SamplingParams
from seallm.engine import ReplicaCore
from seallm.kv import KVCacheManager, KVSpec, PagePool
from seallm.sched import FCFSPolicy, Scheduler, SchedulerConfig, make_policy
from seallm.sched.profile import ProfileSeed, ServiceProfile
from seallm.sched.seallm import SeaLLMConfig, SeaLLMPolicy
from tests.sched.fakes import FakeExecutor

SPEC = KVSpec(num_layers=2, num_kv_heads=2, head_dim=8, dtype_bytes=4)  # 256 B/token
PAGE = 256 * 4  # 4 tokens per page
STEP = 0.01  # the fake executor's step time (s)
SEED = ProfileSeed(iteration_time_s=STEP, prefill_time_per_token_s=1e-4, output_lengths=(10,))


def make(policy, num_pages=256, budget=64, max_seqs=64, models=("a", "b"), host_pages=0):
    kv = KVCacheManager(PagePool(num_pages, PAGE), PagePool(host_pages, PAGE) if host_pages else None)
    for m in models:
        kv.add_model(m, SPEC)
    sched = Scheduler(kv, policy, SchedulerConfig(budget, max_seqs, "swap" if host_pages else "recompute"))
    return ReplicaCore(sched, FakeExecutor({m: kv.tokens_per_page(m) for m in models}), ManualClock())


def seallm(**kw):
    kw.setdefault("seeds", {"a": SEED, "b": SEED})
    return SeaLLMPolicy(SeaLLMConfig(**kw))


def req(rid, model="a", n_prompt=8, max_tokens=5, t=0.0, priority=0):
    return Request(rid, model, list(range(3, 3 + n_prompt)), SamplingParams(max_tokens=max_tokens, ignore_eos=True),
                   arrival_time=t, priority=priority)


def drive(core, arrivals, limit=20_000):
    """Run with requests arriving at their arrival_time; returns finish order and the requests."""
    pending = sorted(arrivals, key=lambda r: r.arrival_time)
    order, reqs = [], {r.request_id: r for r in arrivals}
    for _ in range(limit):
        now = core.clock.now()
        while pending and pending[0].arrival_time <= now + 1e-12:
            core.add_request(pending.pop(0))
        if not pending and not core.has_unfinished():
            break
        for r in core.step():
            if r.is_finished:
                order.append(r.request_id)
        core.scheduler.check_integrity()
        if core.idle:  # an executed iteration moved the clock by its step time
            core.clock.advance(STEP)
    assert not core.has_unfinished() and not pending
    return order, reqs


def test_short_request_behind_long_ones_finishes_first():
    def scenario(policy):
        core = make(policy, max_seqs=2)
        arrivals = [req("long0", max_tokens=300, t=0.0), req("long1", max_tokens=300, t=0.0),
                    req("short", max_tokens=5, t=0.5)]
        return drive(core, arrivals)

    fcfs_order, fcfs_reqs = scenario(FCFSPolicy())
    db_order, db_reqs = scenario(seallm())
    assert fcfs_order.index("short") == 2  # FCFS: head-of-line blocked behind both
    assert db_order[0] == "short"  # SeaLLM: the demoted long requests yield
    short_e2e = db_reqs["short"].finish_time - db_reqs["short"].arrival_time
    assert short_e2e < 0.2 < fcfs_reqs["short"].finish_time - fcfs_reqs["short"].arrival_time


@pytest.mark.parametrize("true_steps", [7, 60, 500])
def test_demotion_is_logarithmic_and_work_bounded(true_steps):
    policy = seallm()
    core = make(policy, max_seqs=4)
    r = req("r", n_prompt=4, max_tokens=true_steps)
    core.add_request(r)
    b0 = policy.state("r").budget_s
    levels = []
    while core.has_unfinished():
        core.step()
        if core.idle:  # an executed iteration moved the clock by its step time
            core.clock.advance(STEP)
        st = policy.state("r")
        if st is not None:
            levels.append(st.level)
    size = true_steps * STEP  # the request's true size: every step it ran cost STEP
    final = levels[-1]
    # Budgets b0, 2 b0, 4 b0, ...: reaching level k takes b0 (2^k - 1) of work.
    assert final == math.floor(math.log2(size / b0 + 1) + 1e-9)
    assert b0 * (2 ** final - 1) <= size + 1e-9  # work before the final level <= true size
    assert b0 * 2 ** final <= 2 * size + b0 + 1e-9  # the final budget overshoots by < 2x
    assert all(y - x in (0, 1) for x, y in zip(levels, levels[1:]))  # one level at a time


def test_fixed_budget_ablation_demotes_linearly():
    policy = seallm(doubling=False)
    core = make(policy)
    core.add_request(req("r", n_prompt=4, max_tokens=100))
    b0 = policy.state("r").budget_s
    for _ in range(99):
        core.step()
        if core.idle:  # an executed iteration moved the clock by its step time
            core.clock.advance(STEP)
    assert policy.state("r").level == math.floor(99 * STEP / b0 + 1e-9)


@pytest.mark.parametrize("kw,bound", [(dict(aging_interval_s=0.2, aging_factor=None), 6.0),
                                      (dict(aging_interval_s=None, aging_factor=2.0), 8.0)])
def test_no_starvation_under_sustained_overload(kw, bound):
    # One seat, a new short request every step: a long request must still finish, within the
    # aging bound (one boost per aging interval, or per aging_factor x its budget, waited).
    core = make(seallm(**kw), max_seqs=1)
    arrivals = [req("long", max_tokens=60, t=0.0)]
    arrivals += [req(f"s{i}", max_tokens=3, t=0.05 + i * STEP * 3) for i in range(400)]
    order, reqs = drive(core, arrivals)
    long = reqs["long"]
    assert "long" in order
    # Stated bound: every stretch of waiting is at most (level + 2) aging intervals (or, with
    # aging_factor, that many times its budget, which doubles per level), and the request
    # needs at most log2 levels; here that caps E2E well below the 12 s the overload lasts.
    assert long.finish_time - long.arrival_time < bound
    assert all(r.is_finished for r in reqs.values())


def test_without_aging_the_long_request_waits_for_the_overload_to_end():
    core = make(seallm(aging_interval_s=None, aging_factor=None, tail_guard_factor=None), max_seqs=1)
    arrivals = [req("long", max_tokens=60, t=0.0)]
    arrivals += [req(f"s{i}", max_tokens=3, t=0.05 + i * STEP * 3) for i in range(400)]
    order, reqs = drive(core, arrivals)
    assert order[-1] == "long"  # starved until the stream of short requests dried up


def test_cross_model_priority():
    """A short request of model B overtakes a long one of model A on the same device: under
    SeaLLM no iteration of A runs between B's arrival and B's finish; FCFS alternates models."""
    for policy, a_steps_allowed in ((seallm(), 0), (FCFSPolicy(), None)):
        core = make(policy, max_seqs=1)
        arrivals = [req("A-long", "a", max_tokens=200, t=0.0), req("B-short", "b", max_tokens=4, t=0.3)]
        order, reqs = drive(core, arrivals)
        b = reqs["B-short"]
        plans = core.executor.plans
        # plan i ran during [i * STEP, (i + 1) * STEP)
        between = [p.model for i, p in enumerate(plans) if b.arrival_time <= i * STEP < b.finish_time - 1e-9]
        a_steps = between.count("a")
        assert order[0] == "B-short"
        if a_steps_allowed is not None:
            assert a_steps <= a_steps_allowed, between
        else:
            assert a_steps >= 3, between  # round robin: A keeps half the iterations


def test_service_aware_budgets_rank_services():
    slow = ProfileSeed(iteration_time_s=0.05, output_lengths=(400,))
    fast = ProfileSeed(iteration_time_s=0.01, output_lengths=(20,))
    policy = SeaLLMPolicy(SeaLLMConfig(seeds={"a": slow, "b": fast}))
    core = make(policy)
    core.add_request(req("x", "a", t=0.0))
    core.add_request(req("y", "b", t=0.0))
    assert policy.priority_key(core.scheduler.requests["y"], 0.0) < policy.priority_key(
        core.scheduler.requests["x"], 0.0)
    agnostic = SeaLLMPolicy(SeaLLMConfig(seeds={"a": slow, "b": fast}, service_aware=False))
    core2 = make(agnostic)
    core2.add_request(req("x", "a"))
    assert agnostic.state("x").budget_s == agnostic.config.agnostic_budget_s


def test_request_priority_comes_first():
    core = make(seallm(), max_seqs=1)
    arrivals = [req("low", max_tokens=5, t=0.0, priority=5), req("high", max_tokens=50, t=0.0, priority=-1)]
    order, _ = drive(core, arrivals)
    assert order == ["high", "low"]


def test_preemption_under_memory_pressure_loses_no_token():
    def run(num_pages):
        core = make(seallm(), num_pages=num_pages, budget=16)
        arrivals = [req(f"r{i}", n_prompt=8, max_tokens=20 + 7 * i, t=0.02 * i) for i in range(6)]
        order, reqs = drive(core, arrivals)
        return {k: v.output_token_ids for k, v in reqs.items()}, core.scheduler.num_preemptions

    ref, _ = run(500)
    got, n = run(16)  # 64 tokens of KV for 6 requests of up to 63 tokens each
    assert n > 0
    assert got == ref


def test_swap_admits_an_urgent_request_into_a_full_pool():
    """With swap preemption a short request need not wait for a long one's pages: the demoted
    long request is swapped out, the short one runs at once, the long one resumes intact."""
    def scenario(host_pages):
        core = make(seallm(), num_pages=28, budget=64, host_pages=host_pages)  # 112 tokens of KV
        arrivals = [req("long", n_prompt=40, max_tokens=70, t=0.0), req("short", n_prompt=30, max_tokens=8, t=0.5)]
        order, reqs = drive(core, arrivals)
        return order, reqs, core

    ref = drive(make(seallm(), num_pages=500), [req("long", n_prompt=40, max_tokens=70)])[1]["long"].output_token_ids
    _, slow, _ = scenario(0)
    order, fast, core = scenario(256)
    e2e = {k: r.finish_time - r.arrival_time for k, r in fast.items()}
    assert order == ["short", "long"]
    assert e2e["short"] < 0.15 < slow["short"].finish_time - slow["short"].arrival_time
    assert core.scheduler.num_swap_outs >= 1
    assert fast["long"].output_token_ids == ref
    # The long request's decode token, already placed in the batch, gave its place back.
    assert all(p.num_tokens <= 64 and len({c.request_id for c in p.seqs}) == len(p.seqs)
               for p in core.executor.plans)


def test_budget_order_keeps_a_demoted_short_service_ahead_of_a_fresh_long_one():
    slow = ProfileSeed(iteration_time_s=0.01, output_lengths=(400,))
    fast = ProfileSeed(iteration_time_s=0.01, output_lengths=(4,))
    for order, expect_b_first in (("budget", True), ("level", False)):
        policy = SeaLLMPolicy(SeaLLMConfig(seeds={"a": slow, "b": fast}, demotion_order=order))
        core = make(policy)
        core.add_request(req("b", "b", max_tokens=6))
        core.add_request(req("a", "a", max_tokens=6))
        st = policy.state("b")
        st.level, st.budget_s, st.attained_s = 1, 2 * st.budget_s, 0.0  # b overran its first budget
        kb = policy.priority_key(core.scheduler.requests["b"], 0.0)
        ka = policy.priority_key(core.scheduler.requests["a"], 0.0)
        assert (kb < ka) == expect_b_first


def test_profiles_learn_from_steps_and_finishes():
    p = ServiceProfile(ProfileSeed(iteration_time_s=1.0, output_lengths=(100,)), smoothing=0.5)
    p.observe_step(0.1, prefill_tokens=0, decode_tokens=8)
    assert p.iteration_time_s == pytest.approx(0.55)
    for n in (10, 20, 30, 40):
        p.observe_output_length(n)
    assert p.output_length(0.5) == 30.0  # nearest rank of [10, 20, 30, 40, 100]
    assert p.estimate(100, 0.5) == pytest.approx(100 * p.prefill_time_per_token_s + 30 * p.iteration_time_s)


def test_policy_by_name():
    assert make_policy("seallm").name == "seallm"
    with pytest.raises(ValueError):
        SeaLLMConfig(output_quantile=2.0)


def test_profiles_survive_a_restart(tmp_path):
    policy = seallm()
    core = make(policy)
    for i in range(5):
        core.add_request(req(f"r{i}", max_tokens=3 + i))
    while core.has_unfinished():
        core.step()
        if core.idle:  # an executed iteration moved the clock by its step time
            core.clock.advance(STEP)
    path = str(tmp_path / "profiles.json")
    policy.save_profiles(path)
    fresh = SeaLLMPolicy()
    assert fresh.load_profiles(path) == ["a"]
    assert fresh.profile("a").output_length(0.5) == policy.profile("a").output_length(0.5)
    assert fresh.profile("a").iteration_time_s == pytest.approx(policy.profile("a").iteration_time_s)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a seallm profile file"):
        fresh.load_profiles(str(tmp_path / "bad.json"))


class _LinearTimeExecutor(FakeExecutor):
    """Step time 1 ms + 0.1 ms per batch token + 1 us per context token."""

    def execute(self, plan):
        from seallm.core import StepResult

        r = super().execute(plan)
        return StepResult(r.model, r.samples, 1e-3 + 1e-4 * plan.num_tokens + 1e-6 * plan.num_context_tokens)


def test_cost_model_is_refit_online_and_persisted(tmp_path):
    import json

    from seallm.cost import BatchShape
    from seallm.simulate import load_cost_profile

    policy = seallm(refit_every_steps=40)
    kv = KVCacheManager(PagePool(256, PAGE))
    kv.add_model("a", SPEC)
    core = ReplicaCore(Scheduler(kv, policy, SchedulerConfig(32, 16)), _LinearTimeExecutor({"a": 4}), ManualClock())
    arrivals = [req(f"r{i}", n_prompt=5 + 11 * (i % 7), max_tokens=3 + i % 9, t=0.05 * i) for i in range(60)]
    drive(core, arrivals)
    prof = policy.profile("a")
    assert prof.cost_model is not None and prof.fit_report.r2 > 0.95
    for n, c in ((1, 40), (32, 200), (8, 500)):
        want = 1e-3 + 1e-4 * n + 1e-6 * c
        assert prof.cost_model.step_time(BatchShape(n, c)) == pytest.approx(want, rel=0.1)
    path = tmp_path / "profiles.json"
    policy.save_profiles(str(path))
    assert "cost_model" in json.loads(path.read_text())["a"]
    fresh = SeaLLMPolicy()
    fresh.load_profiles(str(path))
    assert fresh.profile("a").cost_model == load_cost_profile(str(path), "a")
    # a live engine's loop time per iteration is added to every simulated iteration
    policy.on_overhead("a", iteration_s=0.004, ingest_s=0.02)
    policy.save_profiles(str(path))
    slower = load_cost_profile(str(path), "a")
    for n, c in ((1, 40), (32, 200)):
        assert slower.step_time(BatchShape(n, c)) == pytest.approx(prof.cost_model.step_time(BatchShape(n, c)) + 0.004)
    from seallm.simulate import _ingest_delays

    assert _ingest_delays(str(path)) == {"a": 0.02}


def test_profiles_seeded_from_a_trace():
    from seallm.bench.traces import load_azure_trace
    from seallm.deploy import DeploymentConfig, ModelEntry

    cfg = DeploymentConfig(models=(ModelEntry("a", "/unused"),), scheduling_policy="seallm",
                           policy_options={"seeds": {"a": {"trace": "code", "length_scale": 0.5,
                                                           "iteration_time_s": 0.03}}})
    seed = cfg.policy_options["seeds"]["a"]
    outs = load_azure_trace("code").output_lens[-512:]
    assert seed["output_lengths"] == [max(1, round(int(n) * 0.5)) for n in outs]
    policy = make_policy("seallm", cfg.policy_options)
    assert policy.profile("a").iteration_time_s == 0.03
    assert policy.profile("a").output_length(0.5) == sorted(seed["output_lengths"])[255]
    with pytest.raises(ValueError):
        DeploymentConfig(models=(ModelEntry("a", "/unused"),), scheduling_policy="seallm",
                         policy_options={"seeds": {"a": {"trace": "no-such-trace"}}})


def test_profiles_track_input_lengths_and_arrival_rate(tmp_path):
    policy = seallm()
    core = make(policy)
    for i in range(11):
        core.add_request(req(f"r{i}", n_prompt=4 + i, t=0.5 * i))
    p = policy.profile("a")
    assert p.arrival_rate() == pytest.approx(2.0)  # 10 gaps of 0.5 s
    assert p.input_length(0.5) == 9.0
    assert policy.profile("b").arrival_rate() is None
    path = str(tmp_path / "p.json")
    policy.save_profiles(path)
    fresh = SeaLLMPolicy()
    fresh.load_profiles(path)
    assert fresh.profile("a").input_length(0.5) == 9.0


def test_aging_lifts_a_low_priority_request_of_another_model_within_the_bound():
    # Model a never lets up: a fresh priority-0 request every iteration, one seat. A
    # priority-1 request of model b ties with that stream after one aging interval and is
    # ahead of it after two ((p - q + 1) intervals), so it starts within that bound.
    interval = 0.2
    core = make(seallm(aging_interval_s=interval), max_seqs=1)
    arrivals = [req(f"s{i}", "a", max_tokens=2, t=i * STEP) for i in range(300)]
    arrivals.append(req("low", "b", max_tokens=3, t=0.05, priority=1))
    order, reqs = drive(core, arrivals)
    low = reqs["low"]
    wait = low.first_scheduled_time - low.arrival_time
    assert interval * (1 - 1) <= wait <= interval * (1 - 0 + 1) + 2 * STEP
    assert order.index("low") < len(order) - 100  # long before the stream ended
    # Without aging it waits for the stream to end.
    core = make(seallm(aging_interval_s=None), max_seqs=1)
    order, _ = drive(core, [req(f"s{i}", "a", max_tokens=2, t=i * STEP) for i in range(300)]
                     + [req("low", "b", max_tokens=3, t=0.05, priority=1)])
    assert order[-1] == "low"


@pytest.mark.parametrize("host_pages", [0, 6])
def test_a_request_is_never_preempted_before_it_progressed(host_pages):
    # Long prompts in a pool that holds about three of them: every request that got pages
    # samples a token before it can lose them again (no ping-pong, no lost prefills), so it
    # is preempted at most once per output token, and nothing is lost.
    def run(num_pages, hp):
        core = make(seallm(), num_pages=num_pages, budget=16, host_pages=hp)
        arrivals = [req(f"r{i}", "ab"[i % 2], n_prompt=40 + 3 * i, max_tokens=6 + 5 * (i % 4), t=0.01 * i)
                    for i in range(12)]
        return drive(core, arrivals)[1], core.scheduler

    ref, _ = run(1000, 0)
    got, sched = run(40, host_pages)
    assert sched.num_preemptions > 0
    assert {k: r.output_token_ids for k, r in got.items()} == {k: r.output_token_ids for k, r in ref.items()}
    assert all(r.num_preemptions <= r.num_output_tokens for r in got.values())


def test_max_model_skips_bounds_how_long_a_model_is_passed_over():
    """With max_model_skips=1 the long request's model keeps every other iteration while the
    short one of the other model runs (the default, None, gives the short one all of them)."""
    core = make(seallm(max_model_skips=1), max_seqs=1)
    arrivals = [req("A-long", "a", max_tokens=200, t=0.0), req("B-short", "b", max_tokens=4, t=0.3)]
    _, reqs = drive(core, arrivals)
    b = reqs["B-short"]
    between = [p.model for i, p in enumerate(core.executor.plans) if b.arrival_time <= i * STEP < b.finish_time - 1e-9]
    assert all(x != y for x, y in zip(between, between[1:])), between


def test_tail_guard_bounds_the_slowdown_of_a_demoted_request():
    # Model b always has fresh short work; model a's long request is demoted after its first
    # budget, so by level it would decode only when b runs dry (no aging by time here). The
    # tail guard lifts it after g x its budget of waiting, at every level: it finishes within
    # about (1 + 2g) x its own service time, long before the stream ends; fresh requests of
    # b are never lifted (they are not demoted), so they still go first otherwise.
    g = 1.0

    def arrivals():
        return [req("A-long", "a", max_tokens=200, t=0.0)] + [
            req(f"s{i}", "b", max_tokens=3, t=0.05 + i * STEP) for i in range(1500)]

    core = make(seallm(aging_interval_s=None, tail_guard_factor=g), max_seqs=4)
    order, reqs = drive(core, arrivals())
    long = reqs["A-long"]
    service = 200 * STEP
    assert long.finish_time - long.arrival_time <= (1 + 2 * g) * service + 0.5
    assert order.index("A-long") < len(order) - 500
    assert all(r.num_preemptions == 0 for r in reqs.values())
    core = make(seallm(aging_interval_s=None, tail_guard_factor=None), max_seqs=4)
    order, _ = drive(core, arrivals())
    assert order[-1] == "A-long"


def test_a_lifted_request_takes_turns_instead_of_stalling_the_other_models_fresh_work():
    # Regression (overload, README "Overload"): a tail-guard lift used to raise its request one
    # API class, so its model ran every iteration until the lift was spent (one budget of its
    # work, doubled per level): every fresh request of the other model, decodes included,
    # stalled meanwhile. Now the lifted request's model takes turns with the model that has
    # fresh work: while both have runnable work, neither runs twice in a row.
    g = 1.0
    arrivals = [req("A-long", "a", max_tokens=400, t=0.0)] + [
        req(f"s{i}", "b", max_tokens=3, t=0.05 + i * STEP) for i in range(1500)]
    policy = seallm(aging_interval_s=None, tail_guard_factor=g)
    core = make(policy, max_seqs=4)
    steps = []  # (model of the iteration, whether A-long was lifted then)
    orig = policy.on_step

    def on_step(plan, result, now):
        st = policy.state("A-long")
        steps.append((plan.model, st is not None and st.lift > 0))
        orig(plan, result, now)

    policy.on_step = on_step
    _, reqs = drive(core, arrivals)
    runs = [i for i, (m, lifted) in enumerate(steps) if lifted]
    assert runs, "the demoted request was never lifted"
    # while lifted and b has fresh work (the b stream lasts 15 s), a never runs twice in a row
    stream_end = int(15.0 / STEP) - 10
    lifted_a = [i for i in runs if i < stream_end and steps[i][0] == "a"]
    assert lifted_a
    assert all(steps[i + 1][0] == "b" for i in lifted_a)
    long = reqs["A-long"]
    assert long.finish_time - long.arrival_time <= (2 + 2 * g) * 400 * STEP + 0.5


def test_an_aged_request_waiting_for_pages_does_not_stall_the_other_models_decodes():
    # Regression (overload): model a's second request cannot get pages while a1 runs; after
    # one aging interval its boost used to rank model a ahead of b on every iteration, so b's
    # running request stalled although running a does not admit the aged one any sooner.
    # Aging now lifts a model at most to a tie with the best API priority present: the
    # models keep taking turns and b1 (a fifth of a1's length, never demoted) finishes first.
    core = make(seallm(aging_interval_s=0.05, tail_guard_factor=None), num_pages=48, max_seqs=4)
    arrivals = [req("a1", "a", n_prompt=120, max_tokens=40, t=0.0), req("b1", "b", n_prompt=4, max_tokens=8, t=0.0),
                req("a2", "a", n_prompt=80, max_tokens=4, t=0.01)]
    order, reqs = drive(core, arrivals)
    assert reqs["a2"].first_scheduled_time >= reqs["a1"].finish_time - 1e-9  # it waited for pages
    assert order.index("b1") < order.index("a1")


def test_knob_validation():
    with pytest.raises(ValueError):
        SeaLLMConfig(tail_guard_factor=0)
    with pytest.raises(ValueError):
        SeaLLMConfig(max_model_skips=0)
    with pytest.raises(ValueError):
        SchedulerConfig(preemption_limit=0)
    assert SchedulerConfig().preemption_limit == 1
