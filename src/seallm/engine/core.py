"""``ReplicaCore``: schedule -> execute -> update, one iteration at a time."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

from seallm.core import Clock, FinishReason, ManualClock, Request, StepPlan, StepResult, WallClock
from seallm.engine.executor import ConcurrentExecutor, Executor, ModelLoader
from seallm.engine.messages import ModelEvent
from seallm.sched import Scheduler
from seallm.sched.residency import ResidencyManager

logger = logging.getLogger("seallm.engine")


@dataclass(frozen=True)
class ModelLoad:
    """One model's load on a replica at an instant.

    Attributes:
        resident: its weights are on the device. loading: a load of it is under way.
        running, waiting: requests (waiting includes held ones while not resident).
        kv_pages: device pages its requests hold. weights_bytes: bytes of its weights.
        arrival_rate: recent arrivals per second (exponentially decayed).
    """

    resident: bool
    loading: bool
    running: int
    waiting: int
    kv_pages: int
    weights_bytes: int
    arrival_rate: float


@dataclass(frozen=True)
class ReplicaSnapshot:
    """A replica's load, what a router or a placement step reads: per model, and the free
    device pages of the unified pool (``time``: when it was taken, s)."""

    time: float
    models: dict[str, ModelLoad]
    kv_pages_free: int
    kv_pages_total: int


class ReplicaCore:
    """One device's engine loop body, shared by the real engine and the simulator.

    Args:
        scheduler: queues, KV pages and policy of the device.
        executor: runs a plan (torch model runner, or a cost model in the simulator); to load
            and unload models at run time it must also be a :class:`ModelLoader`.
        clock: source of ``now`` in seconds. Executors report how long an iteration took
            (``StepResult.step_time + swap_time``) and never move a clock: on a
            :class:`~seallm.core.ManualClock` (simulated time) the core advances it by that
            much; wall time moves by itself.
        residency: which models are resident and what to load next (None: a fixed set).
        concurrent_max_tokens: with a :class:`ConcurrentExecutor` of more than one plan
            (a CPU shared by several models), an iteration of at most this many tokens runs
            together with decode-only iterations of other models
            (:meth:`Scheduler.schedule_concurrent`, at most this many tokens each), each on
            its share of the cores; larger iterations (prefill) and iterations with page
            copies (swap preemption) run alone on all of them.

    Concurrent iterations (our design, issue 10 item 4): on a CPU, a small decode batch
    does not use two cores well (the ~125M Llama, batch 8, bf16: 15.5 ms per iteration on
    two cores, 25 ms on one), so two models' decode iterations side by side on one core each
    give both more tokens per second than taking turns on both cores; a prefill, which
    scales, keeps every core.

    Residency changes happen at iteration boundaries, at the start of :meth:`step`: finished
    loads make their models resident, then the manager's evictions and next load run. They
    are reported in ``events`` (:class:`ModelEvent`), which the caller drains.
    """

    def __init__(self, scheduler: Scheduler, executor: Executor, clock: Clock | None = None,
                 residency: ResidencyManager | None = None, concurrent_max_tokens: int = 128) -> None:
        self.scheduler = scheduler
        self.executor = executor
        self.max_concurrent_plans = (max(1, int(executor.max_concurrent_plans))
                                     if isinstance(executor, ConcurrentExecutor) else 1)
        self.concurrent_max_tokens = concurrent_max_tokens
        self.num_concurrent_steps = 0  # steps that ran more than one model's iteration
        self.concurrent_iterations_by_model: dict[str, int] = {}  # of those steps' iterations, per model
        self._loads = isinstance(executor, ModelLoader)  # checked once: a Protocol isinstance is slow
        self.clock = clock or WallClock()
        self.residency = residency
        self.num_steps = 0
        self.events: list[ModelEvent] = []
        self.idle = False  # the last step ran no iteration (nothing runnable, or only loads)
        # (model, executor seconds: forward pass + page copies) of the iteration the last
        # step ran, None if it ran none
        self.last_executed: tuple[str, float] | None = None

    def add_request(self, request: Request) -> None:
        """Queue a request (see :meth:`Scheduler.add_request` for the errors raised). A request
        of a non-resident model is held until the model is loaded; its budget includes the
        predicted load time (``SchedulingPolicy.on_model_delay``)."""
        rm = self.residency
        if rm is not None and request.model in self.scheduler.waiting:
            delay = 0.0 if self.scheduler.is_resident(request.model) else rm.predicted_load_s(request.model)
            self.scheduler.policy.on_model_delay(request.model, delay)
        self.scheduler.add_request(request)
        if rm is not None:
            rm.on_arrival(request.model, request.arrival_time)

    # ---- residency ---------------------------------------------------------------------------
    def load_model(self, model: str) -> None:
        """Ask for ``model`` to be made resident (room is made by the residency policy).

        Raises:
            ValueError: an unknown model, or an executor that cannot load models.
        """
        self._check_dynamic(model)
        if self.residency.pending_unload(model):  # a load cancels an unload still draining
            self.scheduler.set_admission(model, None)
        self.residency.request_load(model)

    def unload_model(self, model: str, force: bool = False) -> None:
        """Ask for ``model`` to leave the device: once its current requests finished, or at
        the next boundary with ``force`` (they are aborted).

        Raises:
            ValueError: an unknown or pinned model, or an executor that cannot unload models.
        """
        self._check_dynamic(model)
        self.residency.request_unload(model, force, self.scheduler)

    def is_resident(self, model: str) -> bool:
        return self.scheduler.is_resident(model)

    def snapshot(self) -> ReplicaSnapshot:
        """Queues, pages, weight bytes and arrival rates per model, now."""
        now = self.clock.now()
        sched, rm = self.scheduler, self.residency
        used = sched.kv.pages_used_by_model()
        models = {}
        for m in sched.specs:
            resident = sched.is_resident(m)
            models[m] = ModelLoad(resident, rm is not None and rm.loading == m, sched.num_running(m),
                                  sched.num_waiting(m), used.get(m, 0),
                                  rm.weights_bytes.get(m, 0) if rm is not None else 0,
                                  rm.arrival_rate(m, now) if rm is not None else 0.0)
        return ReplicaSnapshot(now, models, sched.kv.pool.num_free, sched.kv.pool.num_pages)

    def _check_dynamic(self, model: str) -> None:
        if model not in self.scheduler.specs:
            raise ValueError(f"unknown model {model!r}; models: {sorted(self.scheduler.specs)}")
        if self.residency is None or not self._loads:
            raise ValueError("this replica's executor cannot load or unload models")

    def _manage_residency(self) -> list[Request]:
        """Apply finished loads, then this boundary's evictions and next load; returns the
        requests finished here (aborted by a forced unload, or failed with a failed load)."""
        rm, sched = self.residency, self.scheduler
        if rm is None or not self._loads:
            return []
        now = self.clock.now()
        out: list[Request] = []
        for ev in self.executor.poll_loads():
            self.events.append(ev)
            if ev.kind == "loaded":
                sched.add_model(ev.model)
                rm.on_loaded(ev.model, ev.seconds, ev.weights_bytes, [r.request_id for r in sched.waiting[ev.model]])
                logger.info("model %s loaded from %s in %.2f s", ev.model, ev.source, ev.seconds)
            else:
                rm.on_load_failed(ev.model)
                logger.error("model %s failed to load: %s", ev.model, ev.error)
                for r in list(sched.waiting[ev.model]):
                    sched.finish_request(r.request_id, FinishReason.ABORT, now)
                    r.error = f"model {ev.model!r} could not be loaded: {ev.error}"
                    out.append(r)
        decision = rm.step(sched, now)
        for model, abort in decision.evict:
            out += sched.remove_model(model, now, abort=abort)
            self.executor.unload(model)
            rm.on_unloaded(model)
            self.events.append(ModelEvent(model, "unloaded"))
            logger.info("model %s unloaded%s", model, " (forced)" if abort else "")
        if decision.load is not None:
            rm.on_load_started(decision.load)
            self.executor.start_load(decision.load)
        return out

    def abort_request(self, request_id: str, reason: FinishReason = FinishReason.ABORT) -> Request | None:
        """End a request now and free its KV pages; None if it was unknown or done."""
        return self.scheduler.finish_request(request_id, reason, self.clock.now())

    def has_unfinished(self) -> bool:
        """Requests queued or running, or a residency change under way or asked for."""
        return self.scheduler.has_unfinished() or (self.residency is not None and self.residency.has_pending())

    def step(self) -> list[Request]:
        """Run one iteration; returns the requests that got a token (finished ones included)
        and those whose processing failed (finished with ``abort`` and ``error`` set).

        A failing iteration fails only the requests that cause it: when the executor raises
        on a batch of several sequences, each sequence runs again alone (without the plan's
        page copies, which already ran); a sequence that fails alone is finished with an
        error, the others keep their results.
        """
        self.last_executed = None
        done = self._manage_residency()
        plan = self.plan()
        done += self.scheduler.take_failed()
        self.idle = plan is None
        if plan is None:
            return done
        # Not beside page copies: a page a swap-out still reads may already be free for a side plan.
        if self.max_concurrent_plans > 1 and plan.num_tokens <= self.concurrent_max_tokens and not plan.swaps:
            plans = [plan]
            while len(plans) < self.max_concurrent_plans:
                side = self.scheduler.schedule_concurrent(self.clock.now(), [p.model for p in plans],
                                                          self.concurrent_max_tokens)
                if side is None:
                    break
                plans.append(side)
            if len(plans) > 1:
                return done + self._step_concurrent(plans)
        return done + self._run(plan)

    def _run(self, plan: StepPlan) -> list[Request]:
        """Execute one plan alone and apply it (a failure through :meth:`_isolate`)."""
        try:
            result = self.executor.execute(plan)
        except Exception as e:  # noqa: BLE001 - isolate whatever failed
            return self._isolate(plan, e)
        self.elapse(result)
        self.last_executed = (plan.model, result.step_time + result.swap_time)
        if self.residency is not None:
            self.residency.on_run(plan.model, self.clock.now(), result.step_time, plan.num_tokens)
        return self.apply(plan, result)

    def _step_concurrent(self, plans: list[StepPlan]) -> list[Request]:
        """Run several models' plans at once and apply the results together
        (:meth:`Scheduler.update_concurrent`); a failed plan goes through :meth:`_isolate`,
        serially, after the others. When the executor refuses the group as a whole, each
        plan runs alone, one after the other."""
        t0 = time.perf_counter()
        try:
            results = self.executor.execute_concurrent(plans)
        except Exception as e:  # noqa: BLE001 - not a plan's fault: run them one at a time
            logger.error("concurrent iterations of %s failed (%s: %s); running them one at a time",
                         [p.model for p in plans], type(e).__name__, e, exc_info=e)
            out: list[Request] = []
            for plan in plans:
                out += self._run(plan)
            return out
        wall = time.perf_counter() - t0
        self.num_concurrent_steps += 1
        for p in plans:
            self.concurrent_iterations_by_model[p.model] = self.concurrent_iterations_by_model.get(p.model, 0) + 1
        if isinstance(self.clock, ManualClock):  # the plans' shares add up to the device's busy time
            self.clock.advance(sum(r.step_time + r.swap_time for r in results if isinstance(r, StepResult)))
        self.last_executed = (plans[0].model, wall)
        now = self.clock.now()
        ok = [(p, r) for p, r in zip(plans, results) if isinstance(r, StepResult)]
        failed = [(p, r) for p, r in zip(plans, results) if not isinstance(r, StepResult)]
        if self.residency is not None:
            for plan, result in ok:
                self.residency.on_run(plan.model, now, result.step_time, plan.num_tokens)
        self.num_steps += len(ok)
        out = self.scheduler.update_concurrent([p for p, _ in ok], [r for _, r in ok], now) if ok else []
        for plan, error in failed:
            out += self._isolate(plan, error)
        return out

    def elapse(self, result: StepResult) -> None:
        """Account for the time an executed plan took: on simulated time (a
        :class:`~seallm.core.ManualClock`) move the clock by ``step_time + swap_time`` (s);
        wall time has moved by itself."""
        if isinstance(self.clock, ManualClock):
            self.clock.advance(result.step_time + result.swap_time)

    def plan(self) -> StepPlan | None:
        """First half of an iteration: the scheduler's plan at ``clock.now()`` (None: nothing
        to run). Whoever executes it (this core's executor, or a simulator interleaving many
        replicas by events) must hand the result to :meth:`apply` before the next plan, with
        the clock at the iteration's end (:meth:`elapse` moves a simulated clock there)."""
        return self.scheduler.schedule(self.clock.now())

    def apply(self, plan: StepPlan, result: StepResult) -> list[Request]:
        """Second half: apply ``result`` at ``clock.now()``; returns the requests that got a
        token (finished ones included)."""
        self.num_steps += 1
        return self.scheduler.update(plan, result, self.clock.now())

    def _isolate(self, plan: StepPlan, error: Exception) -> list[Request]:
        logger.error("iteration of %s with %d sequences failed (%s: %s); running them one by one",
                     plan.model, len(plan.seqs), type(error).__name__, error, exc_info=error)
        failed: dict[str, Exception] = {}
        good, samples, step_time = [], {}, 0.0
        if len(plan.seqs) == 1:
            failed[plan.seqs[0].request_id] = error
        else:
            for seq in plan.seqs:
                try:
                    res = self.executor.execute(replace(plan, seqs=(seq,), swaps=()))
                except Exception as e:  # noqa: BLE001
                    failed[seq.request_id] = e
                    continue
                self.elapse(res)
                good.append(seq)
                samples.update(res.samples)
                step_time += res.step_time
        now = self.clock.now()
        out: list[Request] = []
        for rid, e in failed.items():
            r = self.scheduler.finish_request(rid, FinishReason.ABORT, now)
            if r is not None:
                logger.error("request %s failed alone: %s: %s", rid, type(e).__name__, e)
                r.error = f"the engine failed to process this request ({type(e).__name__})"
                out.append(r)
        self.num_steps += 1
        if good:
            out += self.scheduler.update(replace(plan, seqs=tuple(good), swaps=()),
                                         StepResult(plan.model, samples, step_time), now)
        return out
