"""Iteration-level continuous batching with chunked prefill over a unified KV cache.

The mechanics are policy-free: the :class:`SchedulingPolicy` picks the model of each
iteration and orders requests; this class fills the token budget, takes KV pages on demand
and preempts (by recompute, or by swapping to host memory) when pages run out.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence

from seallm.core import FinishReason, PageCopy, Request, RequestStatus, SeqChunk, StepPlan, StepResult
from seallm.kv import KVCacheManager, KVSpec
from seallm.sched.config import SchedulerConfig
from seallm.sched.policy import BatchAllocation, BatchLimits, SchedulingPolicy


class Scheduler:
    """Queues and batches of every resident model of one device.

    One call to :meth:`schedule` plans one iteration of one model: running requests first
    (decode tokens and continuing prefill chunks, in priority order), then waiting requests
    while the token budget, the sequence limit and free pages allow. When a running request
    cannot grow, the lowest-priority running request of the device (any model) is preempted:
    its pages are freed and it is recomputed later (vLLM's recompute preemption), or, with
    ``preemption_mode="swap"`` and a KV manager with a host pool, its pages are copied to
    host memory and copied back when it runs again (the plan carries the copies).

    Models loaded and unloaded at run time: the scheduler knows every model the replica may
    hold (``specs``: those not resident in ``kv`` at construction) and queues requests for
    all of them, but plans iterations only for resident ones; requests of a non-resident
    model are held in its waiting queue until :meth:`add_model` makes it resident.
    :meth:`set_admission` restricts which waiting requests of a model may start (a model
    being drained before an unload); :meth:`remove_model` takes a model off the device.

    Raises:
        ValueError: from :meth:`add_request` for an unknown model, a duplicate id, or a
            request that could not fit in the whole KV pool even alone.
    """

    def __init__(self, kv: KVCacheManager, policy: SchedulingPolicy, config: SchedulerConfig | None = None,
                 specs: Mapping[str, KVSpec] | None = None) -> None:
        self.kv = kv
        self.policy = policy
        self.config = config or SchedulerConfig()
        self.specs: dict[str, KVSpec] = {m: kv.spec(m) for m in kv.models}
        for m, spec in (specs or {}).items():
            self.specs.setdefault(m, spec)
        self.requests: dict[str, Request] = {}
        self.waiting: dict[str, deque[Request]] = {m: deque() for m in self.specs}
        self.running: dict[str, list[Request]] = {m: [] for m in self.specs}
        # model -> ids of its waiting requests that may still start (absent: all may).
        self._admissible: dict[str, frozenset[str]] = {}
        self._finished_ids: list[str] = []
        self._swaps: list[PageCopy] = []  # page copies not yet handed to the executor
        self.preemptions_by_model: dict[str, int] = {m: 0 for m in kv.models}
        self.swap_outs_by_model: dict[str, int] = {m: 0 for m in kv.models}
        # Preemptive policies: requests that got device pages (admitted, re-admitted or
        # swapped in) and have not sampled a token since; they are never victims.
        self._protected: set[str] = set()
        self._failed: list[Request] = []  # refused by the policy, not yet reported

    # ---- requests ------------------------------------------------------------------------
    def add_model(self, model: str, spec: KVSpec | None = None) -> None:
        """Make ``model`` resident: its KV shape joins the pool (``spec``, or the one known
        from construction) and its held requests become schedulable.

        Raises:
            ValueError: an unknown model without ``spec``, or one already resident.
        """
        if spec is None:
            if model not in self.specs:
                raise ValueError(f"unknown model {model!r}")
            spec = self.specs[model]
        self.kv.add_model(model, spec)
        self.specs[model] = spec
        self.waiting.setdefault(model, deque())
        self.running.setdefault(model, [])
        self._admissible.pop(model, None)

    def is_resident(self, model: str) -> bool:
        return self.kv.is_resident(model)

    def remove_model(self, model: str, now: float, abort: bool = False) -> list[Request]:
        """Take ``model`` off the device. Its running requests lose their pages (recompute:
        they start again from their prompt and outputs when it is back) and, with ``abort``,
        every request of the model is finished with ``abort`` instead; swapped-out requests
        give back their host pages too. Held requests stay queued for a reload. Returns the
        aborted requests.

        Raises:
            ValueError: ``model`` is not resident.
        """
        if not self.kv.is_resident(model):
            raise ValueError(f"model {model!r} is not resident")
        aborted: list[Request] = []
        if abort:
            for r in list(self.running[model]) + list(self.waiting[model]):
                self._finish(r, FinishReason.ABORT, now)
                aborted.append(r)
        for r in list(self.running[model]):
            self._requeue(r)
        for r in self.waiting[model]:
            if r.status is RequestStatus.SWAPPED:
                self.kv.free(r.request_id)
                r.num_computed_tokens = 0
                r.status = RequestStatus.PREEMPTED
        self.kv.remove_model(model)
        self._admissible.pop(model, None)
        return aborted

    def set_admission(self, model: str, allowed: Iterable[str] | None) -> None:
        """Let only the waiting requests of ``model`` whose ids are in ``allowed`` start from
        now on (an empty set: none; running ones go on); None lifts the restriction."""
        if allowed is None:
            self._admissible.pop(model, None)
        else:
            self._admissible[model] = frozenset(allowed)

    def admissible(self, model: str) -> list[Request]:
        """Waiting requests of a resident ``model`` that may start now."""
        if not self.kv.is_resident(model):
            return []
        allowed = self._admissible.get(model)
        if allowed is None:
            return list(self.waiting[model])
        return [r for r in self.waiting[model] if r.request_id in allowed]

    def num_unfinished(self, model: str) -> int:
        """Requests of ``model`` queued or running."""
        return len(self.waiting[model]) + len(self.running[model])

    def capacity_tokens(self, model: str) -> int:
        """Tokens of ``model`` the whole pool could hold (resident or not)."""
        return self.kv.pool.num_pages * self.specs[model].tokens_per_page(self.kv.pool.page_size_bytes)

    def add_request(self, request: Request) -> None:
        """Queue ``request`` (status WAITING); a request of a known but non-resident model is
        held until the model is resident."""
        if request.model not in self.waiting:
            raise ValueError(f"model {request.model!r} is not served here; models: {sorted(self.waiting)}")
        if request.request_id in self.requests:
            raise ValueError(f"duplicate request id {request.request_id!r}")
        need = min(request.num_prompt_tokens + request.params.max_tokens, request.max_model_len)
        cap = self.capacity_tokens(request.model)
        if need > cap:
            raise ValueError(
                f"request needs up to {need} tokens of KV cache but the whole pool holds {cap} "
                f"tokens of model {request.model!r}; lower max_tokens or raise kv_cache_memory"
            )
        request.status = RequestStatus.WAITING
        self.requests[request.request_id] = request
        self.waiting[request.model].append(request)
        self.policy.on_arrival(request, request.arrival_time)

    def finish_request(self, request_id: str, reason: FinishReason, now: float) -> Request | None:
        """End a request early (abort, or a stop string found by the detokenizer); frees its
        pages. Returns the request, or None if it is unknown or already finished."""
        r = self.requests.get(request_id)
        if r is None or r.is_finished:
            return None
        self._finish(r, reason, now)
        return r

    def has_unfinished(self) -> bool:
        return bool(self.requests)

    def num_waiting(self, model: str | None = None) -> int:
        if model is not None:
            return len(self.waiting[model])
        return sum(len(q) for q in self.waiting.values())

    @property
    def num_preemptions(self) -> int:
        """Requests that lost their device pages since start (recompute or swap), all models."""
        return sum(self.preemptions_by_model.values())

    @property
    def num_swap_outs(self) -> int:
        """Of those, the ones whose pages went to host memory."""
        return sum(self.swap_outs_by_model.values())

    def num_swapped(self, model: str) -> int:
        """Waiting requests of ``model`` whose KV pages are in host memory."""
        return sum(1 for r in self.waiting[model] if r.status is RequestStatus.SWAPPED)

    def num_running(self, model: str | None = None) -> int:
        if model is not None:
            return len(self.running[model])
        return sum(len(q) for q in self.running.values())

    # ---- one iteration ---------------------------------------------------------------------
    def take_failed(self) -> list[Request]:
        """Requests finished with an error at the last :meth:`schedule` (the policy refused
        them: ``error`` set, ``error_status`` 429), to be reported once."""
        out, self._failed = self._failed, []
        return out

    def limits(self) -> BatchLimits:
        """What an iteration may hold now (:meth:`SchedulingPolicy.allocate` reads it)."""
        cfg = self.config
        return BatchLimits(cfg.max_num_batched_tokens, cfg.max_num_seqs, self.kv.pool.num_free,
                           self.kv.num_pages_of, self.kv.pages_needed, self.kv.pool.num_pages)

    def schedule(self, now: float) -> StepPlan | None:
        """Plan the next iteration, or None when no model has runnable work. Requests the
        policy refuses are finished first (:meth:`take_failed`)."""
        for r, why in self.policy.take_refused():
            if not r.is_finished and self.requests.get(r.request_id) is r:
                self._finish(r, FinishReason.ABORT, now)
                r.error, r.error_status = why, 429
                self._failed.append(r)
        runnable = {}
        for m in self.kv.models:
            rs = [r for r in self.running[m] if r.num_uncomputed_tokens] + self.admissible(m)
            if rs:
                runnable[m] = rs
        limits = self.limits()
        for model in self.policy.model_order(runnable, now):
            alloc = self.policy.allocate(model, runnable[model], now, limits)
            if self.policy.preemptive:
                seqs = self._schedule_model_preemptive(model, alloc, now)
            else:
                seqs = self._schedule_model(model, alloc, now)
            if seqs:
                finished, self._finished_ids = tuple(self._finished_ids), []
                swaps, self._swaps = tuple(self._swaps), []
                return StepPlan(model=model, seqs=tuple(seqs), finished_ids=finished, swaps=swaps)
        return None

    def schedule_concurrent(self, now: float, busy: Iterable[str], max_tokens: int) -> StepPlan | None:
        """A decode-only plan that may run *at the same time* as the plans of the models in
        ``busy`` (planned by :meth:`schedule` or by this method since the last
        :meth:`update`), on other cores of the same CPU; None when no other model has one.

        It holds decode tokens of running requests of one model (the first of the policy's
        :meth:`~SchedulingPolicy.model_order` among the models not in ``busy``), in the
        policy's order, at most ``max_tokens`` of them and ``max_num_seqs``, each only while
        a free page covers its next token. Nothing is admitted, preempted or swapped, so
        the requests of the busy plans are untouched and this plan carries no page copies.
        Requests the policy leaves out of its allocation get nothing; admissions wait for
        the model's next :meth:`schedule` turn.
        """
        busy = set(busy)
        runnable = {}
        for m in self.kv.models:
            if m in busy:
                continue
            rs = [r for r in self.running[m] if r.num_uncomputed_tokens == 1]
            if rs:
                runnable[m] = rs
        if not runnable:
            return None
        limits = self.limits()
        for model in self.policy.model_order(runnable, now):
            alloc = self.policy.allocate(model, runnable[model], now, limits)
            seqs: list[SeqChunk] = []
            for r in alloc.order:
                if len(seqs) >= min(max_tokens, self.config.max_num_seqs, alloc.token_budget):
                    break
                if (r.status is not RequestStatus.RUNNING or r.num_uncomputed_tokens != 1
                        or self._cap(alloc, r, 1) == 0):
                    continue
                if not self.kv.allocate(r.request_id, model, r.num_computed_tokens + 1):
                    break  # no free page: the rest waits for the model's own turn
                seqs.append(self._chunk(r, 1))
            if seqs:
                return StepPlan(model=model, seqs=tuple(seqs))
        return None

    @staticmethod
    def _cap(alloc: BatchAllocation, r: Request, budget: int) -> int:
        """Tokens ``r`` gets now: what it has left, within the budget and its allocation."""
        n = min(r.num_uncomputed_tokens, budget)
        if alloc.max_tokens is not None:
            n = min(n, alloc.max_tokens.get(r.request_id, n))
        return max(n, 0)

    def _schedule_model(self, model: str, alloc: BatchAllocation, now: float) -> list[SeqChunk]:
        cfg = self.config
        budget = min(cfg.max_num_batched_tokens, alloc.token_budget)
        seqs: list[SeqChunk] = []
        scheduled: set[str] = set()
        preempted = False

        running = [r for r in alloc.order if r.status is RequestStatus.RUNNING]
        for r in running:
            if budget == 0 or len(seqs) >= cfg.max_num_seqs:
                break
            if r.status is not RequestStatus.RUNNING:  # preempted earlier in this loop
                continue
            n = self._cap(alloc, r, budget)
            if n == 0:
                continue
            while not self.kv.allocate(r.request_id, model, r.num_computed_tokens + n):
                victim = self._pick_victim(scheduled, now)
                placed = self._pick_victim(set(), now, among=scheduled)
                key = self.policy.priority_key
                if placed is not None and key(placed, now) > key(r, now) and (
                        victim is r or key(placed, now) > key(victim, now)):
                    # a lower-priority request already placed in this batch gives its place back
                    i = next(i for i, c in enumerate(seqs) if c.request_id == placed.request_id)
                    budget += seqs.pop(i).num_tokens
                    scheduled.discard(placed.request_id)
                    victim = placed
                self._preempt(victim)
                preempted = True
                if victim is r:
                    break
            if r.status is not RequestStatus.RUNNING:
                continue
            seqs.append(self._chunk(r, n))
            scheduled.add(r.request_id)
            budget -= n

        waiting = [r for r in alloc.order if r.status is not RequestStatus.RUNNING]
        if not preempted and waiting:
            admitted = []
            for r in waiting:
                if budget == 0 or len(seqs) >= cfg.max_num_seqs:
                    break
                n = self._cap(alloc, r, budget)
                if n == 0:
                    continue
                if not self._take_pages(r, r.num_computed_tokens + n):
                    if not (self.policy.evicts_for(r) and self._evict_for(r, r.num_computed_tokens + n, seqs,
                                                                          scheduled, now)):
                        break  # no overtaking: a later request must not take the head's pages
                    budget = min(cfg.max_num_batched_tokens, alloc.token_budget) - sum(c.num_tokens for c in seqs)
                    n = self._cap(alloc, r, budget)
                    if n == 0 or not self._take_pages(r, r.num_computed_tokens + n):
                        break
                self._admit(r, now)
                admitted.append(r)
                seqs.append(self._chunk(r, n))
                budget -= n
            self._remove_waiting(model, admitted)
        return seqs

    def _evict_for(self, r: Request, num_tokens: int, seqs: list[SeqChunk], scheduled: set[str],
                   now: float) -> bool:
        """Preempt running requests (any model) with a larger priority key than waiting
        ``r``, largest first, until ``r`` could hold ``num_tokens`` tokens in free pages; a
        victim already placed in this batch gives its place back. False (nobody evicted)
        when even all of them would not make room."""
        key = self.policy.priority_key
        rk = key(r, now)
        need = self._pages_to_admit(r, num_tokens)
        cands = sorted((v for q in self.running.values() for v in q if key(v, now) > rk),
                       key=lambda v: key(v, now), reverse=True)
        victims, gain = [], 0
        for v in cands:
            if self.kv.pool.num_free + gain >= need:
                break
            victims.append(v)
            gain += self.kv.num_pages_of(v.request_id)
        if self.kv.pool.num_free + gain < need:
            return False
        for v in victims:
            if v.request_id in scheduled:
                i = next(i for i, c in enumerate(seqs) if c.request_id == v.request_id)
                seqs.pop(i)
                scheduled.discard(v.request_id)
            self._preempt(v)
        return True

    def _take_pages(self, r: Request, num_tokens: int) -> bool:
        """Pages for a waiting request to cover ``num_tokens`` tokens: swapped-out ones come
        back from host memory (the copy joins the next plan), the others allocate."""
        if r.status is RequestStatus.SWAPPED:
            pairs = self.kv.swap_in(r.request_id, num_tokens)
            if pairs is None:
                return False
            self._swaps.append(PageCopy(False, tuple(pairs)))
            return True
        return self.kv.allocate(r.request_id, r.model, num_tokens)

    def _room_victims(self, r: Request, num_tokens: int, spared: set[str], now: float) -> list[Request] | None:
        """Lower-priority running requests (lowest first, any model) whose swap-out would let
        waiting ``r`` hold ``num_tokens`` tokens, or None when that is impossible (then
        nobody is evicted). Swap mode only: evicting by recompute to admit a new request
        thrashes. Requests in ``spared`` (admitted in this pass) and requests with nothing
        computed are never victims."""
        if self.config.preemption_mode != "swap" or self.kv.host_pool is None:
            return None
        key = self.policy.priority_key
        rk = key(r, now)
        need = max(self.kv.pages_needed(r.model, num_tokens), self.kv.num_host_pages_of(r.request_id))
        short = need - self.kv.num_pages_of(r.request_id) - self.kv.pool.num_free
        victims, gain, host_free = [], 0, self.kv.host_pool.num_free
        cands = sorted((v for q in self.running.values() for v in q
                        if v.num_computed_tokens > 0 and v.request_id not in spared
                        and v.request_id not in self._protected and not self._spent(v)),
                       key=lambda v: key(v, now), reverse=True)
        for v in cands:
            if gain >= short:
                break
            if key(v, now) <= rk:
                return None
            pages = self.kv.num_pages_of(v.request_id)
            if pages > host_free:
                continue
            victims.append(v)
            gain += pages
            host_free -= pages
        return victims if gain >= short else None

    def _admit(self, r: Request, now: float) -> None:
        """A waiting request got its pages: it joins the running set."""
        r.status = RequestStatus.RUNNING
        if r.first_scheduled_time is None:
            r.first_scheduled_time = now
        self.running[r.model].append(r)

    def _remove_waiting(self, model: str, admitted: list[Request]) -> None:
        if admitted:
            gone = {id(r) for r in admitted}
            self.waiting[model] = deque(r for r in self.waiting[model] if id(r) not in gone)

    def _schedule_model_preemptive(self, model: str, alloc: BatchAllocation, now: float) -> list[SeqChunk]:
        """Priority scheduling over running and waiting requests together (SeaLLM §2.3 rule 4).

        The ``max_num_seqs`` most urgent requests are eligible (a lower-priority running
        request yields its seat and keeps its pages). Among them, decode tokens go first (one
        token each: they keep the batch full at little cost), then prefill chunks in priority
        order. A running request short of KV pages takes them from lower-priority running
        requests of the device (swap or recompute); a waiting request is admitted only into free pages
        and, when it cannot get them, stops admission; in swap mode it may first swap out
        lower-priority running requests, even ones already placed in this batch
        (:meth:`_room_victims`).

        Progress guarantee under overload (our design, against swap ping-pong and recompute
        thrash): (1) a waiting request is admitted only with pages for its whole context (its
        prompt, or everything it had computed), so its prefill never needs more pages; (2)
        from then until it samples a token it is never a victim, neither of another request's
        growth nor of an admission; (3) free pages are reserved for the most urgent waiting
        request of every other model against less urgent admissions, and a waiting request
        that cannot get in blocks the less urgent ones of its model, so no request is
        overtaken for pages it waits for; (4) seats a waiting request could not use go to
        running requests beyond the first ``max_num_seqs``, so pages are never held by
        requests that cannot run. Hence every preemption of a request follows at least one
        new token of it since it last got pages: preemptions <= output tokens, per request.
        (5) A request preempted ``preemption_limit`` times is no longer another's victim
        (only its own failure to grow, with nothing evictable, gives its pages back), so the
        longest, lowest-priority requests are not swapped out over and over (the P99 tail).
        """
        cfg = self.config
        key = self.policy.priority_key
        budget = min(cfg.max_num_batched_tokens, alloc.token_budget)
        seqs: list[SeqChunk] = []
        scheduled: set[str] = set()
        preempted_now: set[str] = set()
        cands = list(alloc.order)
        eligible = cands[: cfg.max_num_seqs]
        decodes = [r for r in eligible if r.status is RequestStatus.RUNNING and r.num_uncomputed_tokens == 1]
        prefills = [r for r in eligible if not (r.status is RequestStatus.RUNNING and r.num_uncomputed_tokens == 1)]
        # Seats a waiting request could not use go to the running requests beyond them, so
        # pages are never held by requests that cannot run while the seat-holders cannot get in.
        backfill = [r for r in cands[cfg.max_num_seqs:] if r.status is RequestStatus.RUNNING]
        heads = self._waiting_heads(model, now)
        admitted = []
        closed = False  # a waiting request failed: no lower one of this model may overtake it
        for r in decodes + prefills + backfill:
            if budget == 0 or len(seqs) >= cfg.max_num_seqs:
                break
            if r.request_id in preempted_now:
                continue
            n = self._cap(alloc, r, budget)
            if n == 0:
                continue
            rk = key(r, now)
            running = r.status is RequestStatus.RUNNING
            if not running:
                if closed:
                    continue
                need = r.num_tokens  # pages for its whole context: no growth until it samples
                reserve = sum(p for k, p in heads if k < rk)
                ok = self.kv.pool.num_free - reserve >= self._pages_to_admit(r, need) and self._take_pages(r, need)
                if not ok and not reserve:
                    victims = self._room_victims(r, need, {a.request_id for a in admitted}, now)
                    for v in victims or ():
                        if v.request_id in scheduled:  # give back its place in this batch
                            i = next(i for i, c in enumerate(seqs) if c.request_id == v.request_id)
                            budget += seqs.pop(i).num_tokens
                            scheduled.discard(v.request_id)
                        self._preempt(v)
                        preempted_now.add(v.request_id)
                    ok = bool(victims) and self._take_pages(r, need)
                if ok:
                    self._admit(r, now)
                    self._protected.add(r.request_id)
                    admitted.append(r)
                    seqs.append(self._chunk(r, n))
                    scheduled.add(r.request_id)
                    budget -= n
                    continue
                closed = True
                continue
            while not self.kv.allocate(r.request_id, model, r.num_computed_tokens + n):
                # A running request that must grow may evict others by swap or recompute (a
                # waiting one only by swap, above: recomputing a victim's whole context to
                # admit a new request thrashes).
                victim = self._pick_victim(scheduled | self._protected | {r.request_id}, now, spare_spent=True)
                if victim is None or key(victim, now) <= rk:
                    break
                self._preempt(victim)
                preempted_now.add(victim.request_id)
            else:
                seqs.append(self._chunk(r, n))
                scheduled.add(r.request_id)
                budget -= n
                continue
            # Cannot grow and nothing of lower priority to take pages from: it gives its own
            # pages back so higher-priority requests are never stuck behind it.
            self._preempt(r)
            preempted_now.add(r.request_id)
        self._remove_waiting(model, admitted)
        return seqs

    def _pages_to_admit(self, r: Request, num_tokens: int) -> int:
        """Free device pages waiting ``r`` needs to hold ``num_tokens`` tokens."""
        return max(self.kv.pages_needed(r.model, num_tokens), self.kv.num_host_pages_of(r.request_id))

    def _waiting_heads(self, model: str, now: float) -> list[tuple]:
        """(key, pages it needs) of the most urgent waiting request of every other model:
        free pages are reserved for it against less urgent admissions of ``model``, so a
        waiting request is never overtaken for pages by another model's lower one."""
        key = self.policy.priority_key
        out = []
        for m in self.kv.models:
            q = self.admissible(m) if m != model else None
            if q:
                h = min(q, key=lambda r: key(r, now))
                out.append((key(h, now), self._pages_to_admit(h, h.num_tokens)))
        return out

    def _chunk(self, r: Request, n: int) -> SeqChunk:
        start = r.num_computed_tokens
        return SeqChunk(
            request_id=r.request_id,
            token_ids=tuple(r.token_ids_slice(start, start + n)),
            start_pos=start,
            block_table=tuple(self.kv.block_table(r.request_id)),
            sample=start + n == r.num_tokens,
            params=r.params,
            num_output_tokens=r.num_output_tokens,
        )

    def _spent(self, r: Request) -> bool:
        """``r`` has been preempted ``preemption_limit`` times: no longer another's victim."""
        limit = self.config.preemption_limit
        return limit is not None and r.num_preemptions >= limit

    def _pick_victim(self, exclude: set[str], now: float, spare_spent: bool = False,
                     among: set[str] | None = None) -> Request | None:
        """Lowest-priority running request of the device (any model) not in ``exclude``
        (nor, with ``spare_spent``, one that reached the preemption limit; with ``among``,
        only those ids)."""
        key = self.policy.priority_key
        cands = [r for q in self.running.values() for r in q
                 if r.request_id not in exclude and not (spare_spent and self._spent(r))
                 and (among is None or r.request_id in among)]
        return max(cands, key=lambda r: key(r, now)) if cands else None

    def _requeue(self, r: Request) -> None:
        """A running request loses its device pages and will be recomputed (its model is
        leaving the device); not counted as a preemption."""
        self.kv.free(r.request_id)
        r.num_computed_tokens = 0
        r.status = RequestStatus.PREEMPTED
        self.running[r.model].remove(r)
        self._protected.discard(r.request_id)
        self.waiting[r.model].appendleft(r)

    def _preempt(self, r: Request) -> None:
        """Take a running request's device pages: swap them out when the mode and the swap
        space allow, else free them (its context is recomputed later)."""
        pairs = None
        if self.config.preemption_mode == "swap" and r.num_computed_tokens > 0:
            pairs = self.kv.swap_out(r.request_id)
        if pairs is not None:
            self._swaps.append(PageCopy(True, tuple(pairs)))
            r.status = RequestStatus.SWAPPED
            self.swap_outs_by_model[r.model] = self.swap_outs_by_model.get(r.model, 0) + 1
        else:
            self.kv.free(r.request_id)
            r.num_computed_tokens = 0
            r.status = RequestStatus.PREEMPTED
        self.running[r.model].remove(r)
        self._protected.discard(r.request_id)
        r.num_preemptions += 1
        self.preemptions_by_model[r.model] = self.preemptions_by_model.get(r.model, 0) + 1
        self.waiting[r.model].appendleft(r)

    def _finish(self, r: Request, reason: FinishReason, now: float) -> None:
        self.kv.free(r.request_id)
        self._protected.discard(r.request_id)
        if r.status is RequestStatus.RUNNING:
            self.running[r.model].remove(r)
        else:
            try:
                self.waiting[r.model].remove(r)
            except ValueError:
                pass
        r.status = RequestStatus.FINISHED
        r.finish_reason = reason
        r.finish_time = now
        del self.requests[r.request_id]
        self._finished_ids.append(r.request_id)
        self.policy.on_finish(r, now)

    def update(self, plan: StepPlan, result: StepResult, now: float) -> list[Request]:
        """Apply an iteration's result: advance computed tokens, append sampled tokens, finish
        requests that hit EOS, a stop token id, ``max_tokens`` or the context length.

        Returns the requests that received a token (finished ones included)."""
        out = self._apply_result(plan, result, now)
        self.policy.on_step(plan, result, now)
        return out

    def update_concurrent(self, plans: Sequence[StepPlan], results: Sequence[StepResult], now: float) -> list[Request]:
        """:meth:`update` for iterations of different models that ran at the same time
        (:meth:`schedule` and :meth:`schedule_concurrent`), all ending at ``now`` (s); the
        policy learns from them together (:meth:`SchedulingPolicy.on_steps`)."""
        out: list[Request] = []
        for plan, result in zip(plans, results):
            out += self._apply_result(plan, result, now)
        self.policy.on_steps(plans, results, now)
        return out

    def _apply_result(self, plan: StepPlan, result: StepResult, now: float) -> list[Request]:
        out: list[Request] = []
        for seq in plan.seqs:
            r = self.requests.get(seq.request_id)
            if r is None or r.status is not RequestStatus.RUNNING:
                continue  # aborted or preempted while the step ran
            r.num_computed_tokens = seq.start_pos + seq.num_tokens
            if not seq.sample:
                continue
            s = result.samples[seq.request_id]
            self._protected.discard(r.request_id)
            r.output_token_ids.append(s.token_id)
            if r.params.logprobs is not None:
                r.output_logprobs.append((s.logprob, s.top_logprobs))
            if r.first_token_time is None:
                r.first_token_time = now
            reason = r.check_stop_after_append()
            if reason is not None:
                self._finish(r, reason, now)
            out.append(r)
        return out

    # ---- fast-forward (the simulator, :mod:`seallm.sim.fastforward`) -----------------------
    def steady_decode(self) -> dict[str, list[Request]] | None:
        """The device in a *steady decode* state, or None: nothing waiting on any model,
        every request running, each with one token to compute (a decode:
        ``num_computed_tokens > 0``, no log-probabilities asked), every model's batch within
        ``max_num_seqs`` and the token budget, and nothing left over from the last plan
        (finished ids, page copies, refusals). Then every iteration runs all running
        requests of the model the policy picks, one token each, until one finishes or pages
        run out. Returns the runnable requests per model, as :meth:`schedule` hands them to
        ``policy.model_order`` (models in pool order)."""
        if self._finished_ids or self._swaps or self._failed:
            return None
        if any(self.waiting.values()):
            return None
        cfg = self.config
        out = {}
        for m in self.kv.models:
            reqs = self.running[m]
            if not reqs:
                continue
            if len(reqs) > cfg.max_num_seqs or len(reqs) > cfg.max_num_batched_tokens:
                return None
            for r in reqs:
                if r.num_computed_tokens == 0 or r.num_uncomputed_tokens != 1 or r.params.logprobs is not None:
                    return None
            out[m] = list(reqs)
        return out or None

    @staticmethod
    def decode_steps_left(r: Request, token_id: int) -> int:
        """Samples of ``token_id`` running ``r`` can take before one finishes it (EOS, a stop
        token, ``max_tokens`` or the context length); the next one after them does."""
        p = r.params
        if token_id in p.stop_token_ids or (not p.ignore_eos and token_id in r.eos_token_ids):
            return 0
        return max(0, min(p.max_tokens - r.num_output_tokens, r.max_model_len - r.num_tokens) - 1)

    def decode_steps(self, requests: list[Request], token_id: int, k: int, first_token_time: float) -> None:
        """``k`` iterations of a steady decode batch applied without plans: each of
        ``requests`` computes ``k`` tokens and samples ``token_id`` ``k`` times, none
        finishing (``k`` within :meth:`decode_steps_left`); ``first_token_time``: the end of
        the first (s). Their KV pages are taken afterwards by :meth:`settle_decode` (until
        then :meth:`check_integrity` fails)."""
        for r in requests:
            r.num_computed_tokens += k
            r.output_token_ids.extend([token_id] * k)
            if r.first_token_time is None:
                r.first_token_time = first_token_time

    def settle_decode(self, requests: list[Request]) -> None:
        """After :meth:`decode_step` calls: the pages for every token ``requests`` computed
        (the caller checked that they are free), as the plans would have taken them.

        Raises:
            RuntimeError: the pages are not free.
        """
        for r in requests:
            if not self.kv.allocate(r.request_id, r.model, r.num_computed_tokens):
                raise RuntimeError(f"request {r.request_id}: its decode run does not fit the free pages")
            self._protected.discard(r.request_id)

    def check_integrity(self) -> None:
        """Queues and KV agree: every request is in exactly one queue once; running requests
        hold device pages for their computed tokens; waiting ones hold no device pages
        (swapped ones hold host pages for theirs); every page is owned once.

        Raises:
            AssertionError: on the first inconsistency.
        """
        self.kv.check_integrity()
        queued = [r.request_id for q in (*self.running.values(), *self.waiting.values()) for r in q]
        assert len(queued) == len(set(queued)), "a request is queued twice"
        assert set(queued) == set(self.requests), "requests and queues disagree"
        for m, q in self.running.items():
            assert not q or self.kv.is_resident(m), f"non-resident model {m} has running requests"
            for r in q:
                assert r.status is RequestStatus.RUNNING, f"{r.request_id} in running with {r.status}"
                need = self.kv.pages_needed(m, r.num_computed_tokens)
                assert self.kv.num_pages_of(r.request_id) >= need, f"{r.request_id} lacks pages"
        for m, q in self.waiting.items():
            for r in q:
                assert self.kv.num_pages_of(r.request_id) == 0, f"waiting {r.request_id} holds pages"
                swapped = r.status is RequestStatus.SWAPPED
                assert swapped == self.kv.is_swapped(r.request_id), f"{r.request_id}: {r.status} vs swap space"
                if swapped:
                    need = self.kv.pages_needed(m, r.num_computed_tokens)
                    assert self.kv.num_host_pages_of(r.request_id) >= need, f"swapped {r.request_id} lacks pages"
                else:
                    assert r.num_computed_tokens == 0, f"waiting {r.request_id} claims computed tokens"
