"""A request whose processing fails, fails alone: the engine loop body re-runs the batch
sequence by sequence and finishes only the culprit with an error (torch-free)."""

from __future__ import annotations

from seallm.core import FinishReason, ManualClock, Request, SamplingParams
from seallm.engine.core import ReplicaCore
from seallm.kv import KVCacheManager, KVSpec, PagePool
from seallm.sched import Scheduler, SchedulerConfig, make_policy
from tests.sched.fakes import FakeExecutor


class PoisonExecutor(FakeExecutor):
    """Raises whenever the batch holds the poisoned request (as a NaN temperature would
    make the sampler raise for the whole batch)."""

    def __init__(self, poison: str, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.poison = poison
        self.failures = 0

    def execute(self, plan):
        if any(s.request_id == self.poison for s in plan.seqs):
            self.failures += 1
            raise RuntimeError("probability tensor contains inf or nan")
        return super().execute(plan)


def _core(policy: str, poison: str):
    kv = KVCacheManager(PagePool(64, 4096))
    kv.add_model("a", KVSpec(num_layers=2, num_kv_heads=2, head_dim=16, dtype_bytes=4))
    kv.add_model("b", KVSpec(num_layers=2, num_kv_heads=2, head_dim=16, dtype_bytes=4))
    ex = PoisonExecutor(poison, {m: kv.tokens_per_page(m) for m in ("a", "b")})
    sched = Scheduler(kv, make_policy(policy), SchedulerConfig(64, 16))
    return ReplicaCore(sched, ex, ManualClock()), ex, kv


def _req(rid: str, model: str, n: int = 6) -> Request:
    return Request(rid, model, list(range(3, 3 + 5)), SamplingParams(max_tokens=n, ignore_eos=True), 0.0)


def test_only_the_failing_request_fails():
    for policy in ("fcfs", "seallm"):
        core, ex, kv = _core(policy, poison="bad")
        reqs = [_req("ok1", "a"), _req("bad", "a"), _req("ok2", "a"), _req("other", "b")]
        for r in reqs:
            core.add_request(r)
        failed = []
        for _ in range(100):
            if not core.has_unfinished():
                break
            failed += [r for r in core.step() if r.error]
            core.scheduler.check_integrity()
        assert [r.request_id for r in failed] == ["bad"]
        bad = reqs[1]
        assert bad.finish_reason is FinishReason.ABORT and "RuntimeError" in bad.error
        for r in (reqs[0], reqs[2], reqs[3]):
            assert r.error is None and r.finish_reason is FinishReason.LENGTH and r.num_output_tokens == 6
        assert ex.failures >= 2  # the batch, then the request alone
        assert kv.pool.num_free == kv.pool.num_pages  # every page back


def test_bystanders_get_the_same_tokens_as_without_the_failure():
    # The fake samples from the context read back through the pages, so equal tokens mean
    # the re-run left every bystander's KV intact.
    out = {}
    for poison, ids in (("none", ("ok1", "ok2")), ("bad", ("ok1", "bad", "ok2"))):
        core, _, _ = _core("fcfs", poison)
        reqs = {rid: _req(rid, "a", n=8) for rid in ids}
        for r in reqs.values():
            core.add_request(r)
        while core.has_unfinished():
            core.step()
        out[poison] = {rid: r.output_token_ids for rid, r in reqs.items() if rid != "bad"}
    assert out["none"] == out["bad"]
