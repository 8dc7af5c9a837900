"""The engine loop: requests in, one iteration, outputs out, driven through an injected
inbox and outbox so that the same loop runs behind ZeroMQ (``seallm serve``'s engine
process) or any other transport (torch-free).

Admission control (per model; our design, in the spirit of CoDel's sojourn-time rule): a
request is refused with an error delta of status 429 when its model already has
``max_waiting_requests`` waiting requests, when its prompt would bring the tokens still to
prefill over ``max_waiting_tokens``, or when the oldest of its waiting requests that never
started has waited longer than ``max_queue_delay_s`` (the standing queue's sojourn time,
which rises as soon as the model falls behind, whatever the device's speed). Every admitted request is acknowledged
at once with an empty delta, before the iteration runs.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable

from seallm.core import FinishReason, Request, WallClock
from seallm.engine.core import ReplicaCore
from seallm.engine.messages import (AbortRequests, AddRequest, ControlReply, Delta, EngineOutputs, FromEngine,
                                    LoadModel, ModelInfo, ModelStats, Ready, Shutdown, ToEngine, UnloadModel)
from seallm.engine.requests import ModelLimits, new_request

logger = logging.getLogger("seallm.engine")

IDLE_POLL_MS = 50
WAIT_POLL_MS = 5  # while work waits only for a model load
STATS_EVERY_S = 0.25

Inbox = Callable[[int], "ToEngine | None"]
"""``inbox(timeout_ms)``: the next message, waiting up to ``timeout_ms`` (0: only what is
there); None when none came. A transport drops (and logs) what it cannot decode."""
Outbox = Callable[[FromEngine], None]
"""``outbox(message)``: send one message to the front end."""


class EngineLoop:
    """An engine's loop: drain the inbox, run one iteration, send the deltas; forever.

    Failure isolation: a message that cannot be decoded is dropped (logged); a request that
    cannot be queued gets an error delta (400, or 429 when its model's waiting queue is
    full); a request whose processing fails in an iteration fails alone
    (:meth:`ReplicaCore.step`). Every queued request is acknowledged at once with an empty
    delta, so the front end knows it was admitted before it answers the client.
    """

    def __init__(self, core: ReplicaCore, configs: dict[str, ModelLimits], inbox: Inbox, outbox: Outbox,
                 max_waiting_requests: int | None = None, max_waiting_tokens: int | None = None,
                 max_queue_delay_s: float | None = None) -> None:
        self.core = core
        self.sched = core.scheduler
        self.kv = core.scheduler.kv
        self.configs = configs
        self.max_waiting_requests = max_waiting_requests
        self.max_waiting_tokens = max_waiting_tokens
        self.max_queue_delay_s = max_queue_delay_s
        self._oldest_waiting: dict[str, float | None] = {}  # per model, valid for one inbox drain
        self.inbox, self._send = inbox, outbox
        self.sent: dict[str, int] = {}  # request id -> output tokens already sent
        self._last_stats = 0.0
        self._waiting_tokens: dict[str, int] = {}  # per model, valid for one inbox drain
        self._ops: list[LoadModel | UnloadModel] = []  # load/unload operations not finished yet
        # Requests whose acknowledgement waits for an SLO planner's verdict (admission_mode
        # "reject": the front end must learn "refused" before it answers, to try elsewhere).
        self._unacked: set[str] = set()
        self._wall = isinstance(core.clock, WallClock)  # overheads are measured on wall time only

    def ready_message(self) -> Ready:
        """The ``Ready`` announcement: every model of the replica, resident or not."""
        rm = self.core.residency
        pinned = rm.config.pinned if rm is not None else frozenset()
        return Ready(
            models=[ModelInfo(n, getattr(c, "path", ""), getattr(c, "architecture", ""), c.max_model_len,
                              c.vocab_size, self.sched.capacity_tokens(n), self.core.is_resident(n), n in pinned)
                    for n, c in self.configs.items()],
            scheduling_policy=self.sched.policy.name, num_pages=self.kv.pool.num_pages,
            page_size_bytes=self.kv.pool.page_size_bytes)

    def run(self) -> None:
        """Announce ``Ready``, then serve until a ``Shutdown`` message arrives."""
        self._send(self.ready_message())
        while True:
            if not self.core.has_unfinished():
                timeout = IDLE_POLL_MS
            else:
                timeout = WAIT_POLL_MS if self.core.idle else 0
            if not self.run_once(timeout):
                return

    def run_once(self, timeout_ms: int = 0) -> bool:
        """One turn: drain the inbox (waiting up to ``timeout_ms`` for the first message),
        acknowledge what was queued, run one iteration if there is work, send its outputs.
        Returns False once a ``Shutdown`` message arrived."""
        acks: list[Delta] = []
        self._waiting_tokens.clear()
        self._oldest_waiting.clear()
        msg = self.inbox(timeout_ms)
        t_turn = time.perf_counter()  # the turn's work starts once the wait is over
        while msg is not None:
            if isinstance(msg, Shutdown):
                return False
            self._handle(msg, acks)
            msg = self.inbox(0)
        if acks:  # admitted or refused: tell the front end before the iteration runs
            self._send(EngineOutputs(acks, None, self.kv.pool.num_free, 0.0))
        deltas: list[Delta] = []
        step_time = 0.0
        if self.core.has_unfinished():
            t0 = time.perf_counter()
            try:
                updated = self.core.step()
            except Exception:  # a scheduler bug: the queues cannot be trusted any more
                logger.error("engine step failed:\n%s", traceback.format_exc())
                updated = self._abort_all()
            deltas = self._verdicts(updated)
            for r in updated:
                deltas.append(self._delta(r))
            step_time = time.perf_counter() - t0
        now = self.core.clock.now()
        events, self.core.events = self.core.events, []
        replies = self._finished_ops(events)
        if deltas or events or replies or now - self._last_stats > STATS_EVERY_S:
            stats = None
            if now - self._last_stats > STATS_EVERY_S or not self.core.has_unfinished() or events:
                stats = self._stats()
                self._last_stats = now
            self._send(EngineOutputs(deltas, stats, self.kv.pool.num_free, step_time, events, replies))
        ran = self.core.last_executed
        if ran is not None and self._wall:  # the loop's time beyond the executor's
            self.sched.policy.on_overhead(ran[0], iteration_s=max(0.0, time.perf_counter() - t_turn - ran[1]))
        return True

    def settled(self) -> bool:
        """No request waits for an admission verdict and no load or unload operation is
        open: a turn with an empty inbox only runs the iteration and sends its deltas."""
        return not self._unacked and not self._ops

    def mark_sent(self, requests: list[Request]) -> None:
        """The tokens of ``requests`` (unfinished) were delivered another way (a simulator's
        fast-forward): the next delta of each starts after them."""
        for r in requests:
            self.sent[r.request_id] = r.num_output_tokens

    def _verdicts(self, updated: list[Request]) -> list[Delta]:
        """Late acknowledgements: the requests waiting for an SLO planner's verdict that got
        one (admitted, or best effort); a refused one's error delta is its verdict."""
        if not self._unacked:
            return []
        out = []
        finished = {r.request_id for r in updated if r.is_finished}
        for rid in list(self._unacked):
            r = self.sched.requests.get(rid)
            if r is None or rid in finished:
                self._unacked.discard(rid)
            elif r.admission is not None:
                self._unacked.discard(rid)
                out.append(Delta(rid, []))
        return out

    def _finished_ops(self, events) -> list[ControlReply]:
        """Replies for the load/unload operations that are done (or failed) now."""
        failed = {e.model: e.error for e in events if e.kind == "load_failed"}
        out, left = [], []
        for op in self._ops:
            if isinstance(op, LoadModel):
                if op.model in failed:
                    out.append(ControlReply(op.op_id, f"model {op.model!r} could not be loaded: {failed[op.model]}",
                                            500))
                elif self.core.is_resident(op.model):
                    out.append(ControlReply(op.op_id))
                else:
                    left.append(op)
            elif not self.core.is_resident(op.model):
                out.append(ControlReply(op.op_id))
            else:
                left.append(op)
        self._ops = left
        return out

    def _admission_error(self, model: str, num_prompt_tokens: int) -> str | None:
        """Why a new request of ``model`` is refused (its waiting queue is full), or None."""
        if self.max_waiting_requests is not None and self.sched.num_waiting(model) >= self.max_waiting_requests:
            return (f"model {model!r} has {self.sched.num_waiting(model)} requests waiting, the limit "
                    f"(max_waiting_requests); retry later")
        if self.max_queue_delay_s is not None:
            if model not in self._oldest_waiting:
                self._oldest_waiting[model] = min((r.arrival_time for r in self.sched.waiting.get(model, ())
                                                   if r.first_scheduled_time is None), default=None)
            oldest = self._oldest_waiting[model]
            waited = self.core.clock.now() - oldest if oldest is not None else 0.0
            if waited > self.max_queue_delay_s:
                return (f"model {model!r} is overloaded: a queued request has waited {waited:.1f} s to start, over "
                        f"max_queue_delay_s={self.max_queue_delay_s:g}; retry later")
        if self.max_waiting_tokens is not None:
            if model not in self._waiting_tokens:
                self._waiting_tokens[model] = sum(r.num_uncomputed_tokens for r in self.sched.waiting.get(model, ()))
            if self._waiting_tokens[model] + num_prompt_tokens > self.max_waiting_tokens:
                return (f"model {model!r} has {self._waiting_tokens[model]} tokens waiting to be prefilled; with "
                        f"this request's {num_prompt_tokens} that exceeds max_waiting_tokens="
                        f"{self.max_waiting_tokens}; retry later")
        return None

    def _handle(self, msg: ToEngine, acks: list[Delta]) -> None:
        if isinstance(msg, AddRequest):
            try:
                cfg = self.configs.get(msg.model)
                if cfg is None:
                    raise ValueError(f"model {msg.model!r} is not served here")
                r = new_request(msg.request_id, msg.model, cfg, msg.prompt_token_ids, msg.params,
                                msg.arrival_time, msg.priority, msg.slo, msg.admission_mode)
                if r.request_id in self.sched.requests:
                    raise ValueError(f"request id {r.request_id!r} is already queued")
                why = self._admission_error(msg.model, r.num_prompt_tokens)
                if why is not None:
                    acks.append(Delta(msg.request_id, [], finish_reason="abort", error=why, error_status=429))
                    return
                self.core.add_request(r)
                if self._wall:  # from the front end's stamp to the queue (same clock: time.time)
                    self.sched.policy.on_overhead(msg.model, ingest_s=max(0.0, self.core.clock.now() - r.arrival_time))
                if msg.model in self._waiting_tokens:
                    self._waiting_tokens[msg.model] += r.num_prompt_tokens
                self.sent[r.request_id] = 0
                if self.sched.policy.defers_admission(r):
                    self._unacked.add(r.request_id)
                else:
                    acks.append(Delta(msg.request_id, []))
            except ValueError as e:
                acks.append(Delta(msg.request_id, [], finish_reason="abort", error=str(e)))
            except Exception as e:  # noqa: BLE001 - one bad request must not stop the engine
                logger.exception("could not queue request %s", msg.request_id)
                acks.append(Delta(msg.request_id, [], finish_reason="abort",
                                  error=f"the engine could not queue this request ({type(e).__name__})",
                                  error_status=500))
        elif isinstance(msg, (LoadModel, UnloadModel)):
            if msg.model not in self.configs:
                self._send(EngineOutputs([], None, self.kv.pool.num_free, 0.0, [], [ControlReply(
                    msg.op_id, f"The model `{msg.model}` does not exist.", 404)]))
                return
            try:
                if isinstance(msg, LoadModel):
                    self.core.load_model(msg.model)
                else:
                    self.core.unload_model(msg.model, msg.force)
            except ValueError as e:
                self._send(EngineOutputs([], None, self.kv.pool.num_free, 0.0, [], [ControlReply(msg.op_id, str(e),
                                                                                                   409)]))
                return
            self._ops.append(msg)
        elif isinstance(msg, AbortRequests):
            reason = FinishReason(msg.reason) if msg.reason in ("stop", "abort") else FinishReason.ABORT
            for rid in msg.request_ids:
                r = self.core.abort_request(rid, reason)
                self.sent.pop(rid, None)
                self._unacked.discard(rid)
                if r is not None:
                    logger.debug("aborted %s (%s)", rid, reason)

    def _delta(self, r: Request) -> Delta:
        start = self.sent.get(r.request_id, 0)
        lps = None
        if r.params.logprobs is not None:
            lps = [(lp, list(top)) for lp, top in r.output_logprobs[start:]]
        d = Delta(r.request_id, r.output_token_ids[start:], lps)
        if r.is_finished:
            self.sent.pop(r.request_id, None)
            d.finish_reason = str(r.finish_reason)
            d.stop_reason = r.stop_reason
            d.first_scheduled_time = r.first_scheduled_time
            d.num_preemptions = r.num_preemptions
            d.admission = r.admission
            if r.error is not None:
                d.error, d.error_status = r.error, r.error_status
        else:
            self.sent[r.request_id] = r.num_output_tokens
        return d

    def _abort_all(self) -> list[Request]:
        out = []
        for rid in list(self.sched.requests):
            r = self.core.abort_request(rid)
            if r is not None:
                r.error = "the engine's scheduler failed; the request was aborted"
                out.append(r)
        for r in out:
            self.sent.pop(r.request_id, None)
        return out

    def _stats(self) -> dict[str, ModelStats]:
        used = self.kv.pages_used_by_model()
        rm = self.core.residency
        out = {}
        for m in self.configs:
            resident = self.core.is_resident(m)
            wb = rm.weights_bytes.get(m, 0) if rm is not None and resident else 0
            out[m] = ModelStats(self.sched.num_running(m), self.sched.num_waiting(m), used.get(m, 0),
                                self.sched.num_swapped(m), self.sched.preemptions_by_model.get(m, 0),
                                self.sched.swap_outs_by_model.get(m, 0), resident, wb,
                                self.core.concurrent_iterations_by_model.get(m, 0))
        return out
