"""The engine loop behind an injected inbox/outbox (torch-free): acknowledgements, admission
control (429), rejected requests (400), a failing request (500) that fails alone."""

from __future__ import annotations

from dataclasses import dataclass, replace

from seallm.core import ManualClock, SamplingParams
from seallm.engine.core import ReplicaCore
from seallm.engine.loop import EngineLoop
from seallm.engine.messages import AbortRequests, AddRequest, EngineOutputs, Ready, Shutdown
from seallm.kv import KVCacheManager, KVSpec, PagePool
from seallm.sched import Scheduler, SchedulerConfig, make_policy
from tests.engine.test_isolation import PoisonExecutor


@dataclass
class Cfg:
    vocab_size: int = 100
    max_model_len: int = 64
    eos_token_ids: tuple = ()
    path: str = "/ckpt"
    architecture: str = "LlamaForCausalLM"


def _loop(messages, max_waiting_requests=None, max_waiting_tokens=None, max_seqs=16, poison="none"):
    kv = KVCacheManager(PagePool(64, 1024))
    kv.add_model("a", KVSpec(2, 2, 8, 4))
    sched = Scheduler(kv, make_policy("fcfs"), SchedulerConfig(64, max_seqs))
    core = ReplicaCore(sched, PoisonExecutor(poison, {"a": kv.tokens_per_page("a")}), ManualClock())
    inbox_items = list(messages)
    sent = []

    def inbox(timeout_ms):
        # "tick" ends one inbox drain; it is consumed once the engine idles (waits > 0 ms),
        # so the requests before it run to completion first.
        if inbox_items and inbox_items[0] == "tick":
            if timeout_ms == 0:
                return None
            inbox_items.pop(0)
        return inbox_items.pop(0) if inbox_items else Shutdown()

    EngineLoop(core, {"a": Cfg()}, inbox, sent.append, max_waiting_requests, max_waiting_tokens).run()
    return sent, kv


def _add(rid, n=3, prompt=(5, 6, 7), model="a"):
    return AddRequest(rid, model, list(prompt), SamplingParams(max_tokens=n, ignore_eos=True), 0.0)


def _deltas(sent):
    return [d for m in sent if isinstance(m, EngineOutputs) for d in m.deltas]


def test_ready_then_acks_before_tokens():
    sent, kv = _loop([_add("r1"), _add("r2")] + ["tick"] * 5)
    assert isinstance(sent[0], Ready) and sent[0].models[0].name == "a"
    first = sent[1]
    assert [(d.request_id, d.token_ids, d.finish_reason) for d in first.deltas] == [("r1", [], None), ("r2", [], None)]
    toks = {}
    for d in _deltas(sent[2:]):
        toks.setdefault(d.request_id, []).extend(d.token_ids)
    assert {k: len(v) for k, v in toks.items()} == {"r1": 3, "r2": 3}


def test_full_waiting_queue_refuses_with_429():
    sent, _ = _loop([_add(f"r{i}") for i in range(5)] + ["tick"], max_waiting_requests=3)
    verdicts = {d.request_id: d for d in sent[1].deltas}
    assert [verdicts[f"r{i}"].error_status for i in range(5) if verdicts[f"r{i}"].error] == [429, 429]
    assert "max_waiting_requests" in verdicts["r3"].error and verdicts["r3"].finish_reason == "abort"


def test_waiting_tokens_bound():
    sent, _ = _loop([_add("r0", prompt=[5] * 30), _add("r1", prompt=[5] * 30), "tick"], max_waiting_tokens=50)
    verdicts = {d.request_id: d for d in sent[1].deltas}
    assert verdicts["r0"].error is None and verdicts["r1"].error_status == 429


def test_rejected_requests_get_400_and_the_loop_goes_on():
    sent, kv = _loop([_add("bad-vocab", prompt=[1, 500]), _add("bad-model", model="zz"), _add("ok"), _add("ok"),
                      "tick", "tick", "tick", "tick"])
    d = _deltas(sent)
    errors = {(x.request_id, x.error_status) for x in d if x.error}
    assert errors == {("bad-vocab", 400), ("bad-model", 400), ("ok", 400)}  # the duplicate id is refused
    assert sum(len(x.token_ids) for x in d if x.request_id == "ok") == 3


def test_a_failing_request_fails_alone_with_500():
    sent, kv = _loop([_add("ok1"), _add("bad"), _add("ok2")] + ["tick"] * 6, poison="bad")
    d = _deltas(sent)
    assert {(x.request_id, x.error_status) for x in d if x.error} == {("bad", 500)}
    assert all(sum(len(x.token_ids) for x in d if x.request_id == r) == 3 for r in ("ok1", "ok2"))


def test_abort_frees_pages():
    sent, kv = _loop([_add("r1", n=50), "tick", AbortRequests(["r1"]), "tick"])
    assert kv.pool.num_free == kv.pool.num_pages


def _slow_core():
    """One seat, fcfs, and an executor that takes 1 s of clock per iteration."""
    kv = KVCacheManager(PagePool(64, 1024))
    kv.add_model("a", KVSpec(2, 2, 8, 4))
    sched = Scheduler(kv, make_policy("fcfs"), SchedulerConfig(64, 1))
    clock = ManualClock()

    class Slow(PoisonExecutor):
        def execute(self, plan):
            r = super().execute(plan)
            return replace(r, step_time=1.0)  # the core moves the clock by it

    return ReplicaCore(sched, Slow("none", {"a": kv.tokens_per_page("a")}), clock), sched


def test_queue_delay_bound_refuses_while_the_queue_is_slow():
    # One seat: requests queue; the clock advances 1 s per iteration; once the oldest queued
    # request that never started has waited more than max_queue_delay_s, new ones get 429.
    core, sched = _slow_core()
    # (iteration from which the message is delivered, message): at 8 s r4 and r5 still wait.
    script = [(0, _add(f"r{i}", n=2)) for i in range(6)] + [(8, _add("late1")), (8, _add("late2"))]
    sent = []

    def inbox(timeout_ms):
        if script and core.num_steps >= script[0][0]:
            return script.pop(0)[1]
        return Shutdown() if not script and not sched.has_unfinished() else None

    loop = EngineLoop(core, {"a": Cfg()}, inbox, sent.append, max_queue_delay_s=1.5)
    loop.run()
    verdicts = {d.request_id: d for m in sent if isinstance(m, EngineOutputs) for d in m.deltas if not d.token_ids}
    assert verdicts["late1"].error_status == 429 and "max_queue_delay_s" in verdicts["late1"].error


def test_queue_delay_is_forgotten_once_the_queue_drains():
    core, sched = _slow_core()
    script = [(0, _add(f"r{i}", n=2)) for i in range(6)]
    sent = []

    def inbox(timeout_ms):
        if script and core.num_steps >= script[0][0]:
            return script.pop(0)[1]
        if not sched.has_unfinished():
            if "late" not in {d.request_id for m in sent if isinstance(m, EngineOutputs) for d in m.deltas}:
                return _add("late", n=1)  # after the drain: admitted at once
            return Shutdown()
        return None

    loop = EngineLoop(core, {"a": Cfg()}, inbox, sent.append, max_queue_delay_s=1.5)
    loop.run()
    late = [d for m in sent if isinstance(m, EngineOutputs) for d in m.deltas if d.request_id == "late"]
    assert late[0].error is None and sum(len(d.token_ids) for d in late) == 1


def test_a_live_loop_measures_its_overheads_into_the_seallm_profiles():
    import time

    from seallm.core import WallClock

    kv = KVCacheManager(PagePool(64, 1024))
    kv.add_model("a", KVSpec(2, 2, 8, 4))
    policy = make_policy("seallm")
    sched = Scheduler(kv, policy, SchedulerConfig(64, 16))
    core = ReplicaCore(sched, PoisonExecutor("none", {"a": kv.tokens_per_page("a")}), WallClock())
    items = [AddRequest("r1", "a", [5, 6, 7], SamplingParams(max_tokens=4, ignore_eos=True), time.time() - 0.25)]

    def inbox(timeout_ms):
        if items:
            return items.pop(0)
        return Shutdown() if not sched.has_unfinished() else None

    EngineLoop(core, {"a": Cfg()}, inbox, lambda m: None).run()
    prof = policy.profile("a")
    # stamped 0.25 s before it reached the engine; every iteration's turn costs something
    assert 0.25 <= prof.ingest_delay_s < 5.0
    assert prof.iteration_overhead_s is not None and prof.iteration_overhead_s >= 0.0
    d = prof.to_dict()
    from seallm.sched.profile import ServiceProfile

    back = ServiceProfile.from_dict(d)
    assert (back.ingest_delay_s, back.iteration_overhead_s) == (prof.ingest_delay_s, prof.iteration_overhead_s)


def test_a_simulated_loop_measures_no_overheads():
    kv = KVCacheManager(PagePool(64, 1024))
    kv.add_model("a", KVSpec(2, 2, 8, 4))
    policy = make_policy("seallm")
    sched = Scheduler(kv, policy, SchedulerConfig(64, 16))
    core = ReplicaCore(sched, PoisonExecutor("none", {"a": kv.tokens_per_page("a")}), ManualClock())
    items = [_add("r1")]
    EngineLoop(core, {"a": Cfg()}, lambda t: items.pop(0) if items else (None if sched.has_unfinished() else Shutdown()),
               lambda m: None).run()
    assert policy.profile("a").ingest_delay_s is None and policy.profile("a").iteration_overhead_s is None
