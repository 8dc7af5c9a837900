"""The engine-core process: owns the device, runs schedule -> execute -> update forever.

It never does HTTP work: requests arrive as :mod:`seallm.engine.messages` over ZeroMQ and
outputs leave the same way, one message per iteration.
"""

from __future__ import annotations

import logging
import signal
import time
import traceback

import msgspec
import zmq

from seallm.core import FinishReason, Request
from seallm.deploy import DeploymentConfig
from seallm.engine.requests import new_request
from seallm.engine.messages import (AbortRequests, AddRequest, Delta, EngineError, EngineOutputs, FromEngine,
                                    ModelInfo, ModelStats, Ready, Shutdown, ToEngine)

logger = logging.getLogger("seallm.engine")

_IDLE_POLL_MS = 50
_STATS_EVERY_S = 0.25


def engine_main(cfg: DeploymentConfig, in_addr: str, out_addr: str) -> None:
    """Entry point of the engine process (spawned by the front end)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the front end decides when to stop
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.connect(in_addr)
    push = ctx.socket(zmq.PUSH)
    push.connect(out_addr)
    enc = msgspec.msgpack.Encoder()
    try:
        from seallm.deploy import build_engine

        stack = build_engine(cfg)
    except Exception as e:  # report why, then exit
        push.send(enc.encode(EngineError(f"{type(e).__name__}: {e}")))
        push.close(linger=2000)
        ctx.term()
        return
    try:
        _EngineLoop(stack, pull, push, enc, cfg).run()
        policy = stack.scheduler.policy
        if cfg.profiles_path and hasattr(policy, "save_profiles"):
            policy.save_profiles(cfg.profiles_path)
            logger.info("service profiles saved to %s", cfg.profiles_path)
    finally:
        pull.close(linger=0)
        push.close(linger=1000)
        ctx.term()


class _EngineLoop:
    """The engine process's loop: drain the inbox, run one iteration, send the deltas.

    Failure isolation: a message that cannot be decoded is dropped (logged); a request that
    cannot be queued gets an error delta (400, or 429 when its model's waiting queue is
    full); a request whose processing fails in an iteration fails alone
    (:meth:`ReplicaCore.step`). Every queued request is acknowledged at once with an empty
    delta, so the front end knows it was admitted before it answers the client.
    """

    def __init__(self, stack, pull: zmq.Socket, push: zmq.Socket, enc: msgspec.msgpack.Encoder,
                 cfg: DeploymentConfig | None = None) -> None:
        self.core = stack.core
        self.kv = stack.kv
        self.sched = stack.scheduler
        self.configs = stack.model_configs
        self.max_waiting_requests = cfg.max_waiting_requests if cfg is not None else None
        self.max_waiting_tokens = cfg.max_waiting_tokens if cfg is not None else None
        self.pull, self.push, self.enc = pull, push, enc
        self.dec = msgspec.msgpack.Decoder(ToEngine)
        self.sent: dict[str, int] = {}  # request id -> output tokens already sent
        self.poller = zmq.Poller()
        self.poller.register(pull, zmq.POLLIN)
        self._last_stats = 0.0
        self._waiting_tokens: dict[str, int] = {}  # per model, valid for one inbox drain

    def _send(self, msg: FromEngine) -> None:
        self.push.send(self.enc.encode(msg), copy=False)

    def run(self) -> None:
        self._send(Ready(
            models=[ModelInfo(n, c.path, c.architecture, c.max_model_len, c.vocab_size, self.kv.capacity_tokens(n))
                    for n, c in self.configs.items()],
            scheduling_policy=self.sched.policy.name, num_pages=self.kv.pool.num_pages,
            page_size_bytes=self.kv.pool.page_size_bytes))
        while True:
            timeout = 0 if self.core.has_unfinished() else _IDLE_POLL_MS
            acks: list[Delta] = []
            self._waiting_tokens.clear()
            while self.poller.poll(timeout):
                timeout = 0
                raw = self.pull.recv(copy=False)
                try:
                    msg = self.dec.decode(raw)
                except (msgspec.DecodeError, msgspec.ValidationError) as e:
                    logger.error("dropped a message the engine cannot decode (%d bytes): %s", len(raw), e)
                    continue
                if isinstance(msg, Shutdown):
                    return
                self._handle(msg, acks)
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
                for r in updated:
                    deltas.append(self._delta(r))
                step_time = time.perf_counter() - t0
            now = self.core.clock.now()
            if deltas or now - self._last_stats > _STATS_EVERY_S:
                stats = None
                if now - self._last_stats > _STATS_EVERY_S or not self.core.has_unfinished():
                    stats = self._stats()
                    self._last_stats = now
                self._send(EngineOutputs(deltas, stats, self.kv.pool.num_free, step_time))

    def _admission_error(self, model: str, num_prompt_tokens: int) -> str | None:
        """Why a new request of ``model`` is refused (its waiting queue is full), or None."""
        if self.max_waiting_requests is not None and self.sched.num_waiting(model) >= self.max_waiting_requests:
            return (f"model {model!r} has {self.sched.num_waiting(model)} requests waiting, the limit "
                    f"(max_waiting_requests); retry later")
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
                                msg.arrival_time, msg.priority, msg.slo)
                if r.request_id in self.sched.requests:
                    raise ValueError(f"request id {r.request_id!r} is already queued")
                why = self._admission_error(msg.model, r.num_prompt_tokens)
                if why is not None:
                    acks.append(Delta(msg.request_id, [], finish_reason="abort", error=why, error_status=429))
                    return
                self.core.add_request(r)
                if msg.model in self._waiting_tokens:
                    self._waiting_tokens[msg.model] += r.num_prompt_tokens
                self.sent[r.request_id] = 0
                acks.append(Delta(msg.request_id, []))
            except ValueError as e:
                acks.append(Delta(msg.request_id, [], finish_reason="abort", error=str(e)))
            except Exception as e:  # noqa: BLE001 - one bad request must not stop the engine
                logger.exception("could not queue request %s", msg.request_id)
                acks.append(Delta(msg.request_id, [], finish_reason="abort",
                                  error=f"the engine could not queue this request ({type(e).__name__})",
                                  error_status=500))
        elif isinstance(msg, AbortRequests):
            reason = FinishReason(msg.reason) if msg.reason in ("stop", "abort") else FinishReason.ABORT
            for rid in msg.request_ids:
                r = self.core.abort_request(rid, reason)
                self.sent.pop(rid, None)
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
            if r.error is not None:
                d.error, d.error_status = r.error, 500
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
        return {m: ModelStats(self.sched.num_running(m), self.sched.num_waiting(m), used.get(m, 0),
                              self.sched.num_swapped(m), self.sched.preemptions_by_model.get(m, 0),
                              self.sched.swap_outs_by_model.get(m, 0))
                for m in self.configs}
