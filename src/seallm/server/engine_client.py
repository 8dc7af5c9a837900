"""Front-end side of the engine process: spawn it, send requests, route outputs to waiters,
and restart it when it dies (supervision).

Each engine process ("incarnation") gets its own pair of ``ipc://`` sockets; when it dies they
are closed and their files removed, so nothing the old process sent (or anything queued for
it) can reach the next one, and outputs are routed only by the reader of the current
incarnation.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
import zmq
import zmq.asyncio

from seallm.deploy import DeploymentConfig
from seallm.engine.messages import (AbortRequests, AddRequest, ControlReply, Delta, EngineError, EngineOutputs,
                                    FromEngine, LoadModel, ModelEvent, ModelStats, Ready, Shutdown, UnloadModel)

logger = logging.getLogger("seallm.server")

# EngineClient.status values
STARTING, OK, RESTARTING, FAILED, STOPPED = "starting", "ok", "restarting", "failed", "stopped"


class EngineDeadError(RuntimeError):
    """The engine process is not running (dead, being restarted, or given up on).

    ``retry_after`` is a hint in seconds for a ``Retry-After`` header (None: do not retry,
    the supervisor gave up).
    """

    def __init__(self, message: str, retry_after: float | None = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class _Route:
    queue: asyncio.Queue
    index: int


@dataclass
class EngineState:
    """Latest load statistics reported by the engine, and which models are resident."""

    stats: dict[str, ModelStats] = field(default_factory=dict)
    kv_pages_free: int = 0
    resident: dict[str, bool] = field(default_factory=dict)


class ControlError(RuntimeError):
    """A load or unload the engine refused or could not do; ``status`` is the HTTP status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class RestartPolicy:
    """Bounded restarts with exponential backoff.

    At most ``max_restarts`` restarts within any ``window_s`` seconds; the n-th restart of a
    window waits ``min(backoff_max_s, backoff_s * 2**(n-1))`` before it spawns the engine.
    """

    def __init__(self, max_restarts: int = 5, window_s: float = 600.0, backoff_s: float = 1.0,
                 backoff_max_s: float = 30.0) -> None:
        self.max_restarts, self.window_s = max_restarts, window_s
        self.backoff_s, self.backoff_max_s = backoff_s, backoff_max_s
        self._times: deque[float] = deque()

    @classmethod
    def from_config(cls, cfg: DeploymentConfig) -> "RestartPolicy":
        return cls(cfg.engine_restart_max, cfg.engine_restart_window_s, cfg.engine_restart_backoff_s,
                   cfg.engine_restart_backoff_max_s)

    def next_delay(self, now: float) -> float | None:
        """Seconds to wait before the next restart (recorded as made at ``now``), or None when
        the budget of the window is spent."""
        while self._times and now - self._times[0] >= self.window_s:
            self._times.popleft()
        if len(self._times) >= self.max_restarts:
            return None
        delay = min(self.backoff_max_s, self.backoff_s * 2 ** len(self._times))
        self._times.append(now)
        return delay


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "exit code unknown"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _identity(r: Ready) -> tuple:
    """What a restarted engine must serve exactly as before (KV capacity may differ when the
    pool is sized from free GPU memory)."""
    return (tuple((m.name, m.path, m.architecture, m.max_model_len, m.vocab_size) for m in r.models),
            r.scheduling_policy, r.page_size_bytes)


class EngineClient:
    """Runs one engine-core process, talks to it over ZeroMQ (``ipc://`` sockets) and restarts
    it when it dies, per ``cfg``'s ``engine_restart_*`` policy.

    Outputs are routed to per-HTTP-request queues as ``(index, Delta)`` pairs, so one HTTP
    request with several prompts or ``n > 1`` reads a single queue. When the engine dies, every
    routed request gets a final delta with ``error_status=503``.

    ``status`` is one of "starting", "ok" (serving), "restarting" (dead; a restart is pending
    or under way), "failed" (restart budget spent; stays so until the server is restarted) or
    "stopped" (shut down).
    """

    def __init__(self, cfg: DeploymentConfig, policy: RestartPolicy | None = None) -> None:
        self.cfg = cfg
        self.ready: Ready | None = None
        self.state = EngineState()
        self.status = STARTING
        self.restarts = 0  # restart attempts so far (successful or not)
        self.last_death: str | None = None  # why the last engine process ended
        self.retry_at: float | None = None  # loop time of the next restart attempt, while "restarting"
        self.on_restart: list[Callable[[], None]] = []  # called at each restart attempt
        self.on_ready: list[Callable[[Ready], None]] = []  # called when a restarted engine is ready
        self.on_model_event: list[Callable[[ModelEvent], None]] = []  # a model loaded or unloaded
        self._ops: dict[str, asyncio.Future] = {}  # load/unload operation id -> its reply
        self.start_timeout = 600.0
        self.policy = policy or RestartPolicy.from_config(cfg)
        self._routes: dict[str, _Route] = {}
        self._dir = tempfile.mkdtemp(prefix="seallm-")
        self._ctx = zmq.asyncio.Context()
        self._enc = msgspec.msgpack.Encoder()
        self._dec = msgspec.msgpack.Decoder(FromEngine)
        self._push: zmq.asyncio.Socket | None = None
        self._pull: zmq.asyncio.Socket | None = None
        self.in_addr = self.out_addr = ""
        self._gen = 0  # incarnation number; a reader delivers only while its number is current
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._reader: asyncio.Task | None = None
        self._supervisor: asyncio.Task | None = None
        self._closing = False
        self._last_output = time.monotonic()  # when the engine last sent anything
        self.hang_timeout_s = cfg.engine_hang_timeout_s

    @property
    def alive(self) -> bool:
        """The engine is serving: started, ready and its process running."""
        return self.status == OK and self._proc is not None and self._proc.is_alive()

    @property
    def num_in_flight(self) -> int:
        """Sequences sent to this engine and not finished (queued or running there)."""
        return len(self._routes)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def retry_after(self) -> float | None:
        """Seconds a client should wait before retrying (None once the supervisor gave up)."""
        if self.status == FAILED or self.status == STOPPED:
            return None
        if self.retry_at is not None:
            return max(1.0, self.retry_at - asyncio.get_running_loop().time())
        return 1.0

    async def start(self, timeout: float = 600.0) -> Ready:
        """Spawn the engine, wait until it has loaded the models, then supervise it.

        Raises:
            RuntimeError: the engine failed to start (message from the engine) or timed out.
        """
        self.start_timeout = timeout
        self.ready = await self._spawn(timeout)
        self.state.resident = {m.name: m.resident for m in self.ready.models}
        self.status = OK
        self._supervisor = asyncio.create_task(self._supervise(), name="seallm-engine-supervisor")
        return self.ready

    # ---- one incarnation ------------------------------------------------------------------
    def _open_sockets(self) -> None:
        tag = uuid.uuid4().hex[:8]
        self.in_addr = f"ipc://{os.path.join(self._dir, f'in-{tag}')}"
        self.out_addr = f"ipc://{os.path.join(self._dir, f'out-{tag}')}"
        self._push = self._ctx.socket(zmq.PUSH)
        self._push.bind(self.in_addr)
        self._pull = self._ctx.socket(zmq.PULL)
        self._pull.bind(self.out_addr)

    def _close_sockets(self) -> None:
        for s in (self._push, self._pull):
            if s is not None:
                s.close(linger=0)
        self._push = self._pull = None
        for f in os.listdir(self._dir):
            try:
                os.unlink(os.path.join(self._dir, f))
            except OSError:
                pass

    async def _spawn(self, timeout: float) -> Ready:
        """Start one engine process on fresh sockets and wait for its Ready.

        Raises:
            RuntimeError: it failed to start; its process and sockets are cleaned up.
        """
        from seallm.server.engine_process import engine_main

        self._gen += 1
        self._open_sockets()
        mp = multiprocessing.get_context("spawn")
        self._proc = mp.Process(target=engine_main, args=(self.cfg, self.in_addr, self.out_addr),
                                name="seallm-engine", daemon=True)
        self._proc.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while True:
                if await self._pull.poll(timeout=200):
                    msg = self._dec.decode(await self._pull.recv())
                    if isinstance(msg, EngineError):
                        raise RuntimeError(f"engine failed to start: {msg.message}")
                    if isinstance(msg, Ready):
                        ready = msg
                        break
                if not self._proc.is_alive():
                    raise RuntimeError("engine process exited during start-up "
                                       f"({_describe_exit(self._proc.exitcode)})")
                if loop.time() > deadline:
                    raise RuntimeError("engine did not become ready in time")
        except BaseException:
            await self._reap()
            self._close_sockets()
            raise
        self._last_output = time.monotonic()
        self._reader = asyncio.create_task(self._read_outputs(self._pull, self._gen), name="seallm-engine-reader")
        return ready

    async def _reap(self) -> None:
        """Make sure the current engine process is gone and joined (no zombie)."""
        proc = self._proc
        if proc is None:
            return
        if proc.is_alive():
            proc.terminate()
            await asyncio.to_thread(proc.join, 5)
            if proc.is_alive():
                proc.kill()
        await asyncio.to_thread(proc.join, 5)

    async def _read_outputs(self, pull: zmq.asyncio.Socket, gen: int) -> None:
        while True:
            try:
                msg = self._dec.decode(await pull.recv())
            except (asyncio.CancelledError, zmq.ZMQError):
                return
            except msgspec.DecodeError:
                logger.error("dropped an engine message the front end cannot decode")
                continue
            if gen != self._gen or not isinstance(msg, EngineOutputs):
                continue
            self._last_output = time.monotonic()
            if msg.stats is not None:
                self.state.stats = msg.stats
            self.state.kv_pages_free = msg.kv_pages_free
            for ev in msg.events:
                if ev.kind in ("loaded", "unloaded"):
                    self.state.resident[ev.model] = ev.kind == "loaded"
                for cb in self.on_model_event:
                    cb(ev)
            for rep in msg.replies:
                fut = self._ops.pop(rep.op_id, None)
                if fut is not None and not fut.done():
                    fut.set_result(rep)
            for d in msg.deltas:
                if d.finish_reason is not None:
                    route = self._routes.pop(d.request_id, None)
                else:
                    route = self._routes.get(d.request_id)
                if route is not None:
                    route.queue.put_nowait((route.index, d))

    def _fail_all(self, why: str, status: int = 503) -> None:
        ops, self._ops = self._ops, {}
        for op_id, fut in ops.items():
            if not fut.done():
                fut.set_result(ControlReply(op_id, why, status))
        routes, self._routes = self._routes, {}
        for rid, route in routes.items():
            route.queue.put_nowait((route.index, Delta(rid, [], finish_reason="abort", error=why,
                                                       error_status=status)))

    # ---- supervision ----------------------------------------------------------------------
    async def _wait_exit(self, proc: multiprocessing.process.BaseProcess) -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        try:
            loop.add_reader(proc.sentinel, lambda: done.done() or done.set_result(None))
        except (NotImplementedError, ValueError, OSError):  # no fd watching: poll
            while proc.is_alive():
                await asyncio.sleep(0.2)
            return
        try:
            await done
        finally:
            loop.remove_reader(proc.sentinel)

    async def _wait_exit_or_hang(self, proc: multiprocessing.process.BaseProcess) -> str | None:
        """Until the engine process ends; if it sends nothing for ``hang_timeout_s`` while
        alive, kill it (SIGKILL) first. Returns why it was killed, or None if it ended alone."""
        exited = asyncio.ensure_future(self._wait_exit(proc))
        if self.hang_timeout_s is None:
            await exited
            return None
        tick = min(1.0, self.hang_timeout_s / 4)
        while True:
            done, _ = await asyncio.wait({exited}, timeout=tick)
            if done:
                return None
            silent = time.monotonic() - self._last_output
            if self.status == OK and not self._closing and silent > self.hang_timeout_s:
                why = f"hung: sent nothing for {silent:.0f} s (engine_hang_timeout_s), killed"
                logger.error("engine process %s %s", proc.pid, why)
                proc.kill()
                await exited
                return why

    async def _bury(self, why: str | None = None) -> str:
        """After the engine died: fail its requests, close its sockets, reap it; returns why."""
        proc = self._proc
        await self._reap()
        why = why or _describe_exit(proc.exitcode if proc is not None else None)
        self._gen += 1  # the old reader delivers nothing from now on
        self._fail_all(f"the engine process died ({why}); the server is restarting it, retry later")
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None
        self._close_sockets()
        self.state = EngineState()
        if proc is not None:
            proc.close()
        self._proc = None
        return why

    async def _supervise(self) -> None:
        try:
            await self._supervise_loop()
        except Exception:  # a bug here must not leave the server "restarting" forever
            logger.critical("engine supervisor failed; the server answers 503 until restarted", exc_info=True)
            self.status, self.retry_at = FAILED, None

    async def _supervise_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            hung = await self._wait_exit_or_hang(self._proc)
            if self._closing:
                return
            self.status = RESTARTING
            n = len(self._routes)
            why = self.last_death = await self._bury(hung)
            logger.error("engine process died (%s); %d in-flight request(s) failed with 503", why, n)
            while True:
                delay = self.policy.next_delay(time.monotonic())
                if delay is None:
                    self.status, self.retry_at = FAILED, None
                    logger.critical("engine: %d restarts within %.0f s (engine_restart_max); giving up. The "
                                    "front end stays up and answers 503; restart the server once the cause "
                                    "(last: %s) is fixed", self.policy.max_restarts, self.policy.window_s,
                                    self.last_death)
                    return
                self.retry_at = loop.time() + delay
                logger.warning("engine: restart %d in %.1f s", self.restarts + 1, delay)
                await asyncio.sleep(delay)
                self.restarts += 1
                for cb in self.on_restart:
                    cb()
                try:
                    ready = await self._spawn(self.start_timeout)
                    if _identity(ready) != _identity(self.ready):
                        raise RuntimeError(f"the restarted engine serves something else ({ready} instead of "
                                           f"{self.ready})")
                except Exception as e:  # noqa: BLE001 - a failed start (or spawn) counts as one restart
                    self.last_death = str(e) if isinstance(e, RuntimeError) else f"{type(e).__name__}: {e}"
                    logger.error("engine: restart %d failed: %s", self.restarts, e)
                    await self._bury()
                    continue
                if ready != self.ready:  # same models, other KV capacity (pool sized from free memory)
                    logger.warning("engine: the restarted engine has %d KV pages (was %d)", ready.num_pages,
                                   self.ready.num_pages)
                self.ready = ready
                self.state.resident = {m.name: m.resident for m in ready.models}
                for cb in self.on_ready:
                    cb(ready)
                self.status, self.retry_at = OK, None
                logger.warning("engine: restarted (restart %d, pid %d); serving again", self.restarts, self.pid)
                break

    # ---- requests -------------------------------------------------------------------------
    def _unavailable(self) -> EngineDeadError:
        if self.status == FAILED:
            return EngineDeadError(f"the engine process died and could not be restarted ({self.last_death})",
                                   None)
        if self.status == STOPPED:
            return EngineDeadError("the server is shutting down", None)
        return EngineDeadError("the engine process is restarting", self.retry_after())

    async def add(self, req: AddRequest, queue: asyncio.Queue, index: int = 0) -> None:
        """Send a request; its deltas will arrive on ``queue`` as ``(index, Delta)``.

        Raises:
            EngineDeadError: the engine process is not serving (see ``status``).
        """
        if not self.alive:
            raise self._unavailable()
        self._routes[req.request_id] = _Route(queue, index)
        fut = self._push.send(self._enc.encode(req))
        if not fut.done():  # a socket closed under it (engine died) cancels it
            await asyncio.wait({fut})
        if fut.cancelled():
            raise self._unavailable()
        fut.result()

    async def load_model(self, model: str) -> None:
        """Make ``model`` resident; returns once it is.

        Raises:
            EngineDeadError: the engine process is not serving.
            ControlError: the engine refused (404 unknown, 409) or the load failed (500).
        """
        await self._control(LoadModel(uuid.uuid4().hex, model))

    async def unload_model(self, model: str, force: bool = False) -> None:
        """Take ``model`` off the device once its current requests finished (``force``: now,
        aborting them); returns once it is off.

        Raises:
            EngineDeadError: the engine process is not serving.
            ControlError: the engine refused (404 unknown, 409 pinned).
        """
        await self._control(UnloadModel(uuid.uuid4().hex, model, force))

    async def _control(self, op: LoadModel | UnloadModel) -> None:
        if not self.alive:
            raise self._unavailable()
        fut = asyncio.get_running_loop().create_future()
        self._ops[op.op_id] = fut
        try:
            await self._push.send(self._enc.encode(op))
            reply: ControlReply = await fut
        finally:
            self._ops.pop(op.op_id, None)
        if reply.error is not None:
            if reply.status == 503:
                raise self._unavailable()
            raise ControlError(reply.error, reply.status)

    def abort(self, request_ids: list[str], reason: str = "abort") -> None:
        """Abort requests (frees their KV pages in the engine); finished ids are ignored.

        Synchronous on purpose: it must work inside a cancelled task (a client that
        disconnected), where any ``await`` would be cancelled again.
        """
        ids = [r for r in request_ids if self._routes.pop(r, None) is not None]
        if ids and self.alive:
            try:
                self._push.send(self._enc.encode(AbortRequests(ids, reason)), flags=zmq.NOBLOCK)
            except zmq.ZMQError:  # engine just died: its requests are gone with it
                pass

    async def shutdown(self) -> None:
        """Stop supervising, ask the engine to exit, then make sure it has."""
        self._closing = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        if self._reader is not None:
            self._reader.cancel()
        proc = self._proc
        if proc is not None and proc.is_alive() and self._push is not None:
            try:
                await asyncio.wait_for(self._push.send(self._enc.encode(Shutdown())), 1.0)
            except (zmq.ZMQError, asyncio.TimeoutError):
                pass
            for _ in range(50):
                if not proc.is_alive():
                    break
                await asyncio.sleep(0.1)
        await self._reap()
        self.status = STOPPED
        self._fail_all("the server is shutting down")
        self._close_sockets()
        self._ctx.term()
        try:
            os.rmdir(self._dir)
        except OSError:
            pass
