"""Continuous batching, chunked prefill, preemption and FCFS order (torch-free)."""

from __future__ import annotations

import pytest

from seallm.core import FinishReason, ManualClock, Request, SamplingParams
from seallm.engine import ReplicaCore
from seallm.kv import KVCacheManager, KVSpec, PagePool
from seallm.sched import FCFSPolicy, Scheduler, SchedulerConfig, make_policy
from tests.sched.fakes import FakeExecutor

SPEC_A = KVSpec(num_layers=2, num_kv_heads=2, head_dim=8, dtype_bytes=4)  # 256 B/token
SPEC_B = KVSpec(num_layers=1, num_kv_heads=2, head_dim=8, dtype_bytes=4)  # 128 B/token
PAGE = 256 * 4  # A: 4 tokens/page, B: 8 tokens/page


def make_core(num_pages=64, budget=16, max_seqs=64, models=("a", "b"), host_pages=0, policy=None):
    kv = KVCacheManager(PagePool(num_pages, PAGE), PagePool(host_pages, PAGE) if host_pages else None)
    for m in models:
        kv.add_model(m, SPEC_A if m == "a" else SPEC_B)
    mode = "swap" if host_pages else "recompute"
    sched = Scheduler(kv, policy or FCFSPolicy(), SchedulerConfig(budget, max_seqs, mode))
    ex = FakeExecutor({m: kv.tokens_per_page(m) for m in models})
    return ReplicaCore(sched, ex, ManualClock()), ex


def req(rid, model="a", n_prompt=10, max_tokens=5, t=0.0, **kw):
    return Request(rid, model, list(range(3, 3 + n_prompt)), SamplingParams(max_tokens=max_tokens, ignore_eos=True, **kw),
                   arrival_time=t)


def run(core, limit=10_000):
    outs = {}
    for _ in range(limit):
        if not core.has_unfinished():
            break
        for r in core.step():
            outs[r.request_id] = r
        core.scheduler.check_integrity()
        if core.idle:  # an executed iteration moved the clock by its step time
            core.clock.advance(0.01)
    assert not core.has_unfinished()
    return outs


def test_chunked_prefill_respects_budget_and_mixes_decode():
    core, ex = make_core(budget=8)
    core.add_request(req("r0", n_prompt=3, max_tokens=6))
    core.add_request(req("r1", n_prompt=30, max_tokens=2))
    outs = run(core)
    assert all(p.num_tokens <= 8 for p in ex.plans)
    mixed = [p for p in ex.plans if any(s.is_decode for s in p.seqs) and any(not s.is_decode for s in p.seqs)]
    assert mixed, "decode tokens and prefill chunks must share iterations"
    assert [len(outs[r].output_token_ids) for r in ("r0", "r1")] == [6, 2]
    assert core.scheduler.kv.pool.num_used == 0


def test_same_tokens_whatever_the_budget():
    results = []
    for budget in (1, 3, 64):
        core, _ = make_core(budget=budget)
        for i in range(4):
            core.add_request(req(f"r{i}", n_prompt=5 + 7 * i, max_tokens=6))
        results.append({k: v.output_token_ids for k, v in run(core).items()})
    assert results[0] == results[1] == results[2]


def test_fcfs_admits_in_arrival_order_without_overtaking():
    core, ex = make_core(num_pages=6, budget=64)  # 24 tokens of model a
    core.add_request(req("first", n_prompt=16, max_tokens=4, t=0.0))
    core.add_request(req("big", n_prompt=16, max_tokens=4, t=1.0))  # does not fit beside "first"
    core.add_request(req("small", n_prompt=2, max_tokens=2, t=2.0))  # would fit, must not overtake
    run(core)
    first_step = {r: next(i for i, p in enumerate(ex.plans) if any(s.request_id == r for s in p.seqs))
                  for r in ("first", "big", "small")}
    assert first_step["first"] < first_step["big"] <= first_step["small"]


def _same_output_as_a_big_pool(ref_core, small_core):
    """Three growing requests on both cores; the small core's outputs must equal the big one's."""
    for core in (ref_core, small_core):
        for i in range(3):
            core.add_request(req(f"r{i}", n_prompt=8, max_tokens=12, t=float(i)))
    ref = {k: v.output_token_ids for k, v in run(ref_core).items()}
    got = run(small_core)
    assert {k: v.output_token_ids for k, v in got.items()} == ref
    return got


def test_preemption_recomputes_and_loses_no_token():
    ref_core, _ = make_core(num_pages=200)
    small_core, _ = make_core(num_pages=9)  # 36 tokens of "a": three 12-token requests cannot all grow
    got = _same_output_as_a_big_pool(ref_core, small_core)
    assert small_core.scheduler.num_preemptions > 0
    # FCFS: the earliest request is never the victim.
    assert got["r0"].num_preemptions == 0
    assert got["r2"].num_preemptions > 0


def test_swap_preemption_restores_pages_and_loses_no_token():
    ref_core, _ = make_core(num_pages=200)
    small_core, ex = make_core(num_pages=9, host_pages=64)
    _same_output_as_a_big_pool(ref_core, small_core)
    sched = small_core.scheduler
    assert sched.num_swap_outs > 0 and sched.num_preemptions == sched.num_swap_outs  # nothing recomputed
    assert ex.copied_pages > 0 and any(c.to_host for p in ex.plans for c in p.swaps)
    assert any(not c.to_host for p in ex.plans for c in p.swaps)
    # Swapped requests resumed where they stopped: no chunk ever started over at position 0
    # after a request's first prefill.
    starts = {}
    for p in ex.plans:
        for c in p.seqs:
            assert c.start_pos > 0 or c.request_id not in starts, f"{c.request_id} was recomputed"
            starts.setdefault(c.request_id, c.start_pos)
    assert small_core.scheduler.kv.host_pool.num_used == 0


def test_swap_falls_back_to_recompute_when_the_host_pool_is_full():
    ref_core, _ = make_core(num_pages=200)
    small_core, _ = make_core(num_pages=9, host_pages=4)  # room for one victim's pages, not two
    _same_output_as_a_big_pool(ref_core, small_core)
    sched = small_core.scheduler
    assert 0 < sched.num_swap_outs < sched.num_preemptions  # swapped while it could, then recomputed


def test_aborting_a_swapped_request_frees_its_host_pages():
    core, _ = make_core(num_pages=9, host_pages=64)
    for i in range(3):
        core.add_request(req(f"r{i}", n_prompt=8, max_tokens=12, t=float(i)))
    sched = core.scheduler
    for _ in range(100):
        core.step()
        if sched.num_swap_outs:
            break
    swapped = [r for q in sched.waiting.values() for r in q if r.status.value == "swapped"]
    assert swapped and sched.kv.host_pool.num_used > 0
    core.abort_request(swapped[0].request_id)
    sched.check_integrity()
    run(core)
    assert sched.kv.host_pool.num_used == 0 and sched.kv.pool.num_used == 0


def test_victim_may_belong_to_another_model():
    core, _ = make_core(num_pages=6, budget=64)
    core.add_request(req("a0", "a", n_prompt=8, max_tokens=12, t=0.0))
    core.add_request(req("b0", "b", n_prompt=8, max_tokens=12, t=1.0))
    outs = run(core)
    assert outs["a0"].num_preemptions == 0
    assert outs["b0"].num_preemptions > 0
    assert len(outs["b0"].output_token_ids) == 12


def test_models_take_turns():
    core, ex = make_core(budget=64)
    for i in range(3):
        core.add_request(req(f"a{i}", "a", max_tokens=8))
        core.add_request(req(f"b{i}", "b", max_tokens=8))
    run(core)
    models = [p.model for p in ex.plans]
    assert all(x != y for x, y in zip(models, models[1:])), models


def test_stop_conditions():
    core, _ = make_core()
    r_len = req("len", max_tokens=3)
    r_eos = Request("eos", "a", [5, 6, 7], SamplingParams(max_tokens=50), 0.0, eos_token_ids=frozenset(range(200)))
    r_ign = Request("ign", "a", [5, 6, 7], SamplingParams(max_tokens=4, ignore_eos=True), 0.0,
                    eos_token_ids=frozenset(range(200)))
    r_ctx = Request("ctx", "a", [5, 6, 7], SamplingParams(max_tokens=50, ignore_eos=True), 0.0, max_model_len=6)
    for r in (r_len, r_eos, r_ign, r_ctx):
        core.add_request(r)
    run(core)
    assert (r_len.finish_reason, r_len.num_output_tokens) == (FinishReason.LENGTH, 3)
    assert (r_eos.finish_reason, r_eos.num_output_tokens) == (FinishReason.STOP, 1)
    assert (r_ign.finish_reason, r_ign.num_output_tokens) == (FinishReason.LENGTH, 4)
    assert (r_ctx.finish_reason, r_ctx.num_tokens) == (FinishReason.LENGTH, 6)


def test_stop_token_ids_record_stop_reason():
    core, ex = make_core()
    probe = req("probe", max_tokens=1)
    core.add_request(probe)
    run(core)
    first = probe.output_token_ids[0]
    core2, _ = make_core()
    r = req("r", max_tokens=9, stop_token_ids=[first])
    core2.add_request(r)
    run(core2)
    assert r.finish_reason is FinishReason.STOP and r.stop_reason == first and r.output_token_ids == [first]


def test_abort_frees_pages_mid_request():
    core, _ = make_core()
    core.add_request(req("x", n_prompt=20, max_tokens=100))
    core.step()
    core.step()
    assert core.scheduler.kv.num_pages_of("x") > 0
    r = core.abort_request("x")
    assert r.finish_reason is FinishReason.ABORT
    assert core.scheduler.kv.pool.num_used == 0
    core.scheduler.check_integrity()
    assert core.abort_request("x") is None


def test_add_request_errors():
    core, _ = make_core(num_pages=2)
    with pytest.raises(ValueError, match="not served here"):
        core.add_request(req("x", model="zzz"))
    with pytest.raises(ValueError, match="whole pool"):
        core.add_request(req("y", n_prompt=10, max_tokens=100))
    core.add_request(req("z", n_prompt=2, max_tokens=2))
    with pytest.raises(ValueError, match="duplicate"):
        core.add_request(req("z", n_prompt=2, max_tokens=2))
    with pytest.raises(ValueError, match="unknown scheduling policy"):
        make_policy("nope")
    with pytest.raises(ValueError, match="empty"):
        Request("e", "a", [], SamplingParams(), 0.0)


def test_max_num_seqs_bounds_the_batch():
    core, ex = make_core(max_seqs=3, budget=64)
    for i in range(7):
        core.add_request(req(f"r{i}", n_prompt=2, max_tokens=4))
    run(core)
    assert max(len(p.seqs) for p in ex.plans) == 3


def test_timestamps_are_ordered():
    core, _ = make_core()
    r = req("t", n_prompt=30, max_tokens=4)
    core.add_request(r)
    run(core)
    assert r.arrival_time <= r.first_scheduled_time < r.first_token_time < r.finish_time
