"""The front end's replicas: one :class:`EngineClient` (an engine process, supervised) per
replica of the deployment, and the :class:`~seallm.cluster.router.Router` that picks one for
each request.

A deployment without ``replicas`` has one; the server code is the same for one or many.
Replicas fail independently: when one engine process dies, requests of the models another
replica lists keep being served there, and only requests that can go nowhere get 503.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from seallm.cluster.router import ReplicaView, Router
from seallm.deploy import DeploymentConfig
from seallm.engine.messages import ModelInfo, ModelStats, Ready
from seallm.server.engine_client import FAILED, OK, RESTARTING, STOPPED, EngineClient, EngineDeadError

logger = logging.getLogger("seallm.server")


def _status(c: EngineClient) -> str:
    """A client's status, "restarting" while it says "ok" but its process is gone."""
    return c.status if c.alive or c.status != OK else RESTARTING


class ReplicaSet:
    """Every replica of a deployment behind one endpoint.

    Args:
        cfg: the deployment; each of ``cfg.replica_deployments()`` gets an engine client.
        client_factory: builds the client of one replica's deployment (tests inject fakes).

    ``ready`` merges what the replicas announced: every model once (a model several replicas
    list shows the first replica's info).
    """

    def __init__(self, cfg: DeploymentConfig,
                 client_factory: Callable[[DeploymentConfig], EngineClient] = EngineClient) -> None:
        self.cfg = cfg
        subs = cfg.replica_deployments()
        self.names: list[str] = [name for name, _ in subs]
        self.clients: list[EngineClient] = [client_factory(sub) for _, sub in subs]
        self.models_of = [frozenset(m.name for m in sub.models) for _, sub in subs]
        self.router = Router(cfg.routing_policy)
        self.routed = [0] * len(self.clients)  # HTTP requests routed to each replica

    # ---- life cycle ---------------------------------------------------------------------------
    async def start(self, timeout: float = 600.0) -> None:
        """Start every replica's engine (concurrently); a failed start stops the others.

        Raises:
            RuntimeError: a replica failed to start (its name and the engine's message).
        """
        results = await asyncio.gather(*(c.start(timeout) for c in self.clients), return_exceptions=True)
        for name, res in zip(self.names, results):
            if isinstance(res, BaseException):
                await self.shutdown()
                if isinstance(res, RuntimeError) and len(self.clients) > 1:
                    raise RuntimeError(f"replica {name!r}: {res}") from res
                raise res

    async def shutdown(self) -> None:
        await asyncio.gather(*(c.shutdown() for c in self.clients), return_exceptions=True)

    # ---- what the app reads -------------------------------------------------------------------
    @property
    def ready(self) -> Ready:
        first = next(c.ready for c in self.clients if c.ready is not None)
        models: dict[str, ModelInfo] = {}
        for c in self.clients:
            for m in (c.ready.models if c.ready is not None else ()):
                models.setdefault(m.name, m)
        pages = sum(c.ready.num_pages for c in self.clients if c.ready is not None)
        return Ready(models=list(models.values()), scheduling_policy=first.scheduling_policy, num_pages=pages,
                     page_size_bytes=first.page_size_bytes)

    @property
    def alive(self) -> bool:
        """Every replica is serving."""
        return all(c.alive for c in self.clients)

    @property
    def restarts(self) -> int:
        return sum(c.restarts for c in self.clients)

    def status(self) -> str:
        """"ok" when every replica serves; else the worst of the others ("failed" over
        "restarting"), "stopped" once shut down."""
        st = {_status(c) for c in self.clients}
        for s in (STOPPED, FAILED, RESTARTING):
            if s in st:
                return s
        return OK

    def retry_after(self) -> float | None:
        hints = [c.retry_after() for c in self.clients if not c.alive]
        hints = [h for h in hints if h is not None]
        return min(hints) if hints else None

    def last_death(self) -> str | None:
        deaths = [f"{n}: {c.last_death}" if len(self.clients) > 1 else c.last_death
                  for n, c in zip(self.names, self.clients) if c.last_death]
        return "; ".join(deaths) or None

    def describe(self) -> list[dict]:
        """Per replica: name, status, restarts, models, engine pid, sequences in flight,
        HTTP requests routed to it so far, and the last engine exit."""
        return [{"name": n, "status": _status(c),
                 "restarts": c.restarts, "models": sorted(ms), "pid": c.pid, "in_flight": c.num_in_flight,
                 "requests_routed": k, "last_engine_exit": c.last_death}
                for n, c, ms, k in zip(self.names, self.clients, self.models_of, self.routed)]

    def is_resident(self, model: str) -> bool | None:
        """Whether some replica holds ``model``'s weights now (None: no replica reported)."""
        seen = [c.state.resident[model] for c in self.clients if model in c.state.resident]
        return any(seen) if seen else None

    def stats(self) -> dict[str, ModelStats]:
        """Per model, the latest load statistics summed over the replicas."""
        out: dict[str, ModelStats] = {}
        for c in self.clients:
            for m, s in c.state.stats.items():
                t = out.get(m)
                out[m] = s if t is None else ModelStats(
                    t.running + s.running, t.waiting + s.waiting, t.kv_pages_used + s.kv_pages_used,
                    t.swapped + s.swapped, t.preemptions + s.preemptions, t.swap_outs + s.swap_outs,
                    t.resident or s.resident, t.weights_bytes + s.weights_bytes,
                    t.concurrent_iterations + s.concurrent_iterations)
        return out

    def views(self) -> list[ReplicaView]:
        out = []
        for n, c, ms in zip(self.names, self.clients, self.models_of):
            st = c.state
            out.append(ReplicaView(n, ms, frozenset(m for m, r in st.resident.items() if r), c.alive,
                                   c.num_in_flight))
        return out

    # ---- requests -----------------------------------------------------------------------------
    def pick(self, model: str) -> EngineClient:
        """The replica for a new request of ``model`` (by the routing policy).

        Raises:
            EngineDeadError: no replica that lists ``model`` is serving.
        """
        return self.try_order(model)[0]

    def try_order(self, model: str) -> list[EngineClient]:
        """The replicas to try in turn for a new request of ``model``: one, or with the
        ``slo`` routing policy every live replica that lists it, the routed one first
        (:meth:`Router.try_order`).

        Raises:
            EngineDeadError: no replica that lists ``model`` is serving.
        """
        order = self.router.try_order(model, self.views())
        if order:
            self.routed[order[0]] += 1
            return [self.clients[i] for i in order]
        owners = self.owners(model)
        if len(owners) == 1:
            raise owners[0]._unavailable()
        hints = [h for h in (c.retry_after() for c in owners) if h is not None]
        raise EngineDeadError(f"every replica serving {model!r} is down (restarting or failed)",
                              min(hints) if hints else None)

    def abort(self, request_ids: list[str], reason: str = "abort") -> None:
        """Abort requests wherever they run (each replica ignores ids it does not hold).
        Synchronous, as :meth:`EngineClient.abort`."""
        for c in self.clients:
            c.abort(request_ids, reason)

    def owners(self, model: str) -> list[EngineClient]:
        """The clients of the replicas that list ``model``."""
        return [c for c, ms in zip(self.clients, self.models_of) if model in ms]

    async def load_model(self, model: str) -> None:
        """Make ``model`` resident on every replica that lists it (see
        :meth:`EngineClient.load_model` for the errors raised)."""
        await asyncio.gather(*(c.load_model(model) for c in self.owners(model)))

    async def unload_model(self, model: str, force: bool = False) -> None:
        """Take ``model`` off every replica that lists it (see :meth:`EngineClient.unload_model`)."""
        await asyncio.gather(*(c.unload_model(model, force) for c in self.owners(model)))

    # ---- callbacks ------------------------------------------------------------------------------
    def on(self, restart: Callable[[], None] | None = None, model_event: Callable | None = None,
           ready: Callable[[Ready], None] | None = None) -> None:
        """Register callbacks on every replica: a restart attempt, a model event, a restarted
        engine ready."""
        for c in self.clients:
            if restart is not None:
                c.on_restart.append(restart)
            if model_event is not None:
                c.on_model_event.append(model_event)
            if ready is not None:
                c.on_ready.append(ready)
