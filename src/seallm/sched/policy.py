"""The interface a scheduling policy implements.

The :class:`~seallm.sched.scheduler.Scheduler` owns the mechanics (queues, KV pages,
chunking, preemption); a policy answers four questions: which model runs the next
iteration, how urgent each request is, how many tokens each request gets in it
(:meth:`SchedulingPolicy.allocate`), and what to learn from a finished step. The SeaLLM
doubling-budget policy and the SLOs-Serve planner plug in here without engine changes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from seallm.core import Request, StepPlan, StepResult


@dataclass(frozen=True)
class BatchLimits:
    """What one iteration may hold, as the scheduler sees it when a policy allocates.

    Attributes:
        token_budget: the configured most tokens per iteration (``max_num_batched_tokens``).
        max_num_seqs: most sequences per iteration.
        free_pages: free device KV pages of the unified pool now.
        pages_of: request id -> device pages it holds.
        pages_for: (model, tokens) -> pages that many tokens of the model take.
        total_pages: device pages of the unified pool (0: not known).
    """

    token_budget: int
    max_num_seqs: int
    free_pages: int
    pages_of: Callable[[str], int]
    pages_for: Callable[[str, int], int]
    total_pages: int = 0


@dataclass(frozen=True)
class BatchAllocation:
    """A policy's allocation of one iteration of one model.

    Attributes:
        order: the requests that may join the batch, most urgent first (the scheduler
            takes them in this order, running ones before waiting ones, while the budget,
            the sequence limit and the KV pages allow); a candidate left out gets nothing.
        token_budget: most tokens in the iteration (capped by ``max_num_batched_tokens``).
        max_tokens: request id -> most tokens it gets in this iteration (a prefill chunk);
            absent ids (or None): as many as fit.
    """

    order: tuple["Request", ...]
    token_budget: int
    max_tokens: Mapping[str, int] | None = None


class SchedulingPolicy(ABC):
    """Decides model turns and request order on one device.

    Priority keys are compared across all models of the device: the smallest key runs
    first and the largest key loses its KV pages first under memory pressure.
    """

    name: str = "abstract"
    #: Whether higher-priority work may displace running requests (token budget, pages).
    preemptive: bool = False

    @abstractmethod
    def model_order(self, runnable: dict[str, list["Request"]], now: float) -> list[str]:
        """Models to try for the next iteration, best first.

        ``runnable`` maps each model with work to its runnable requests (running ones with
        tokens to compute, then waiting ones)."""

    @abstractmethod
    def priority_key(self, request: "Request", now: float) -> Any:
        """Sortable urgency of ``request``; lower runs first and is preempted last."""

    def allocate(self, model: str, candidates: list["Request"], now: float,
                 limits: BatchLimits) -> BatchAllocation:
        """How the next iteration of ``model`` is filled: which of ``candidates`` (its
        running requests with tokens to compute, then its waiting ones that may start) join,
        in which order, with how many tokens each. Default: every candidate by
        :meth:`priority_key`, as many tokens as fit in ``limits.token_budget``."""
        return BatchAllocation(tuple(sorted(candidates, key=lambda r: self.priority_key(r, now))),
                               limits.token_budget)

    def evicts_for(self, request: "Request") -> bool:
        """Whether a waiting ``request`` that cannot get KV pages may preempt running
        requests with a larger :meth:`priority_key` (recompute) to take theirs. Default: no."""
        return False

    def defers_admission(self, request: "Request") -> bool:
        """Whether ``request`` is acknowledged only once the policy decided on it (it may be
        refused with 429 rather than served best effort). Default: no."""
        return False

    def take_refused(self) -> list[tuple["Request", str]]:
        """Requests the policy refuses (with why), to be finished with HTTP 429 at the next
        iteration boundary; drained by the scheduler. Default: none."""
        return []

    def on_arrival(self, request: "Request", now: float) -> None:
        """A request was queued. Default: nothing."""

    def on_model_delay(self, model: str, seconds: float) -> None:
        """Requests of ``model`` queued from now on wait ``seconds`` for it to be loaded
        (0: it is resident). Default: nothing."""

    def on_step(self, plan: "StepPlan", result: "StepResult", now: float) -> None:
        """Learn from a finished iteration (profiles, budgets). Default: nothing."""

    def on_steps(self, plans: Sequence["StepPlan"], results: Sequence["StepResult"], now: float) -> None:
        """Learn from iterations of different models that ran at the same time, on shares
        of the device, ending at ``now`` (s); ``results[i]`` is ``plans[i]``'s, ``plans[0]``
        the one :meth:`Scheduler.schedule` planned (the model's turn), the others decode-only
        side plans. Default: one :meth:`on_step` each, the side plans first, so that turn
        bookkeeping (FCFS's round-robin) ends on the model whose turn it was: a side plan
        admits nobody, and counting it as a turn could pass over a model that only has
        waiting requests forever. A policy that accounts for waiting overrides it so that
        the requests of one plan do not count as waiting while another's ran."""
        for plan, result in list(zip(plans, results))[::-1]:
            self.on_step(plan, result, now)

    def on_finish(self, request: "Request", now: float) -> None:
        """Forget per-request state. Default: nothing."""

    def on_overhead(self, model: str, iteration_s: float | None = None, ingest_s: float | None = None) -> None:
        """What a live engine measured beyond the executor (s): an iteration of ``model``
        whose loop turn took ``iteration_s`` more than its forward pass and page copies, or
        a request of ``model`` that reached the engine's queue ``ingest_s`` after the front
        end stamped it. Default: nothing (the ``seallm`` policy keeps them in its service
        profiles, where ``seallm simulate`` reads them)."""

    # ---- fast-forward (the simulator, :mod:`seallm.sim.fastforward`) -----------------------
    def steady_decode_until(self, batches: Mapping[str, Sequence["Request"]], now: float) -> float | None:
        """Until when (s) the policy plans a device in *steady decode* the same way:
        ``batches`` maps each model with work to its running requests, which are every
        request of the device, all decoding (one token each), nothing waiting. Up to that
        time each iteration must run the first model of :meth:`model_order` with the
        default allocation (all its requests, one token each, any order), model turns and
        priorities must depend neither on KV pages nor on the requests' token counts (the
        simulator applies those after a run), and the policy's state must change only as
        :meth:`on_decode_run` changes it, so that a simulator may run such iterations
        without plans (:mod:`seallm.sim.fastforward`), with results identical to
        step-by-step ones. None (the default): not supported, never fast-forwarded."""
        return None

    def on_decode_run(self, model: str, requests: Sequence["Request"], step_times: Sequence[float],
                      end_times: Sequence[float], contexts: Sequence[int]) -> None:
        """``len(step_times)`` iterations of ``model`` ran in a steady decode state, one
        after the other, each with ``requests`` as its batch (each took ``step_times[j]`` s,
        ended at ``end_times[j]`` s and read ``contexts[j]`` KV tokens: its shape is
        ``BatchShape(b, contexts[j], b, b, contexts[j])`` for ``b = len(requests)``; the
        device's other requests did not run): change the state exactly as that many
        :meth:`on_step` calls would.
        Only called after :meth:`steady_decode_until` allowed it.

        Raises:
            NotImplementedError: a policy that does not support fast-forward.
        """
        raise NotImplementedError(f"policy {self.name!r} does not support fast-forward")


POLICIES = ("fcfs", "seallm", "slos-serve", "sarathi", "muxserve")


def make_policy(name: str, options: dict | None = None) -> SchedulingPolicy:
    """Policy by name: ``"fcfs"`` (vLLM-like baseline), ``"seallm"`` (doubling budget),
    ``"slos-serve"`` (SLO planner with soft admission) or ``"sarathi"`` (chunked prefill
    with a token budget sized to the tightest TPOT) or ``"muxserve"`` (MuxServe's ADBS
    quotas, a baseline).

    ``options`` are the policy's knobs (for ``seallm``: the fields of
    :class:`~seallm.sched.seallm.SeaLLMConfig`; ``seeds`` maps model -> ProfileSeed fields;
    for ``slos-serve`` and ``sarathi``: the fields of
    :class:`~seallm.sched.slos_serve.SLOsServeConfig`; for ``muxserve``: the fields of
    :class:`~seallm.sched.muxserve.ADBSConfig`).

    Raises:
        ValueError: an unknown name (listing the known ones) or an unknown / invalid option.
    """
    from seallm.sched.fcfs import FCFSPolicy
    from seallm.sched.seallm import SeaLLMConfig, SeaLLMPolicy
    from seallm.sched.profile import ProfileSeed

    options = dict(options or {})
    if name == "fcfs":
        if options:
            raise ValueError(f"policy 'fcfs' takes no options, got {sorted(options)}")
        return FCFSPolicy()
    if name == "seallm":
        seeds = options.pop("seeds", None) or {}
        try:
            seeds = {m: v if isinstance(v, ProfileSeed) else ProfileSeed(**{
                k: tuple(x) if k == "output_lengths" else x for k, x in v.items()}) for m, v in seeds.items()}
            return SeaLLMPolicy(SeaLLMConfig(seeds=seeds, **options))
        except TypeError as e:
            raise ValueError(f"invalid option for policy 'seallm': {e}") from None
    if name in ("slos-serve", "sarathi"):
        from seallm.sched.slos_serve import SarathiPolicy, SLOsServeConfig, SLOsServePolicy

        try:
            config = SLOsServeConfig.from_options(options)
        except TypeError as e:
            raise ValueError(f"invalid option for policy {name!r}: {e}") from None
        return SLOsServePolicy(config) if name == "slos-serve" else SarathiPolicy(config)
    if name == "muxserve":
        from seallm.sched.muxserve import ADBSConfig, ADBSPolicy

        try:
            return ADBSPolicy(ADBSConfig(**options))
        except TypeError as e:
            raise ValueError(f"invalid option for policy 'muxserve': {e}") from None
    raise ValueError(f"unknown scheduling policy {name!r}; known: {list(POLICIES)}")
