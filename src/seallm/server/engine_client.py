"""Front-end side of the engine process: spawn it, send requests, route outputs to waiters."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import tempfile
import uuid
from dataclasses import dataclass, field
import msgspec
import zmq
import zmq.asyncio

from seallm.deploy import DeploymentConfig
from seallm.engine.messages import (AbortRequests, AddRequest, Delta, EngineError, EngineOutputs, FromEngine,
                                    ModelStats, Ready, Shutdown)

logger = logging.getLogger("seallm.server")


class EngineDeadError(RuntimeError):
    """The engine process exited."""


@dataclass
class _Route:
    queue: asyncio.Queue
    index: int


@dataclass
class EngineState:
    """Latest load statistics reported by the engine."""

    stats: dict[str, ModelStats] = field(default_factory=dict)
    kv_pages_free: int = 0


class EngineClient:
    """Runs one engine-core process and talks to it over ZeroMQ (``ipc://`` sockets).

    Outputs are routed to per-HTTP-request queues as ``(index, Delta)`` pairs, so one HTTP
    request with several prompts or ``n > 1`` reads a single queue.
    """

    def __init__(self, cfg: DeploymentConfig) -> None:
        self.cfg = cfg
        self.ready: Ready | None = None
        self.state = EngineState()
        self._routes: dict[str, _Route] = {}
        self._dir = tempfile.mkdtemp(prefix="seallm-")
        tag = uuid.uuid4().hex[:8]
        self.in_addr = f"ipc://{os.path.join(self._dir, f'in-{tag}')}"
        self.out_addr = f"ipc://{os.path.join(self._dir, f'out-{tag}')}"
        self._ctx = zmq.asyncio.Context()
        self._push = self._ctx.socket(zmq.PUSH)
        self._push.bind(self.in_addr)
        self._pull = self._ctx.socket(zmq.PULL)
        self._pull.bind(self.out_addr)
        self._enc = msgspec.msgpack.Encoder()
        self._dec = msgspec.msgpack.Decoder(FromEngine)
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._reader: asyncio.Task | None = None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    async def start(self, timeout: float = 600.0) -> Ready:
        """Spawn the engine and wait until it has loaded the models.

        Raises:
            RuntimeError: the engine failed to start (message from the engine) or timed out.
        """
        from seallm.server.engine_process import engine_main

        mp = multiprocessing.get_context("spawn")
        self._proc = mp.Process(target=engine_main, args=(self.cfg, self.in_addr, self.out_addr),
                                name="seallm-engine", daemon=True)
        self._proc.start()
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            if await self._pull.poll(timeout=200):
                msg = self._dec.decode(await self._pull.recv())
                if isinstance(msg, EngineError):
                    self._proc.join(5)
                    raise RuntimeError(f"engine failed to start: {msg.message}")
                if isinstance(msg, Ready):
                    self.ready = msg
                    break
            if not self._proc.is_alive():
                raise RuntimeError(f"engine process exited during start-up (exit code {self._proc.exitcode})")
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError("engine did not become ready in time")
        self._reader = asyncio.create_task(self._read_outputs())
        return self.ready

    async def _read_outputs(self) -> None:
        while True:
            try:
                if not await self._pull.poll(timeout=1000):
                    if not self.alive:
                        self._fail_all("the engine process exited")
                        return
                    continue
                msg = self._dec.decode(await self._pull.recv())
            except asyncio.CancelledError:
                return
            except zmq.ZMQError:
                return
            if not isinstance(msg, EngineOutputs):
                continue
            if msg.stats is not None:
                self.state.stats = msg.stats
            self.state.kv_pages_free = msg.kv_pages_free
            for d in msg.deltas:
                if d.finish_reason is not None:
                    route = self._routes.pop(d.request_id, None)
                else:
                    route = self._routes.get(d.request_id)
                if route is not None:
                    route.queue.put_nowait((route.index, d))

    def _fail_all(self, why: str) -> None:
        for rid, route in list(self._routes.items()):
            route.queue.put_nowait((route.index, Delta(rid, [], finish_reason="abort", error=why)))
        self._routes.clear()

    async def add(self, req: AddRequest, queue: asyncio.Queue, index: int = 0) -> None:
        """Send a request; its deltas will arrive on ``queue`` as ``(index, Delta)``.

        Raises:
            EngineDeadError: the engine process is gone.
        """
        if not self.alive:
            raise EngineDeadError("the engine process is not running")
        self._routes[req.request_id] = _Route(queue, index)
        await self._push.send(self._enc.encode(req))

    def abort(self, request_ids: list[str], reason: str = "abort") -> None:
        """Abort requests (frees their KV pages in the engine); finished ids are ignored.

        Synchronous on purpose: it must work inside a cancelled task (a client that
        disconnected), where any ``await`` would be cancelled again.
        """
        ids = [r for r in request_ids if self._routes.pop(r, None) is not None]
        if ids and self.alive:
            self._push.send(self._enc.encode(AbortRequests(ids, reason)), flags=zmq.NOBLOCK)

    async def shutdown(self) -> None:
        """Ask the engine to exit, then make sure it has."""
        if self._reader is not None:
            self._reader.cancel()
        if self._proc is not None and self._proc.is_alive():
            try:
                await self._push.send(self._enc.encode(Shutdown()))
            except zmq.ZMQError:
                pass
            for _ in range(50):
                if not self._proc.is_alive():
                    break
                await asyncio.sleep(0.1)
            if self._proc.is_alive():
                self._proc.terminate()
                self._proc.join(5)
        self._push.close(linger=0)
        self._pull.close(linger=0)
        self._ctx.term()
        for f in os.listdir(self._dir):
            try:
                os.unlink(os.path.join(self._dir, f))
            except OSError:
                pass
        try:
            os.rmdir(self._dir)
        except OSError:
            pass
