"""Block tables of every request of every resident model over one shared page pool."""

from __future__ import annotations

from collections import Counter

from seallm.kv.pool import OutOfPagesError, PagePool
from seallm.kv.spec import KVSpec


class KVCacheManager:
    """Unified KV cache of one device (SeaLLM §2.6; DESIGN.md decision 2).

    Models of any architecture share ``pool``; each model's ``tokens_per_page`` is derived
    from its :class:`KVSpec`. Requests get pages on demand (all-or-nothing, with rollback)
    and give them all back when they finish, are aborted or are preempted.

    With a ``host_pool`` (swap space in host memory, pages of the same size), a request's
    pages can be swapped out (:meth:`swap_out`) and back in (:meth:`swap_in`): the manager
    keeps the block tables and returns the page copies the worker must perform, in order.
    A request holds device pages or host pages, never both.

    Raises:
        ValueError: on an unknown model or request id, or a model whose token does not fit
            in one page.
    """

    def __init__(self, pool: PagePool, host_pool: PagePool | None = None) -> None:
        if host_pool is not None and host_pool.page_size_bytes != pool.page_size_bytes:
            raise ValueError(f"host pages ({host_pool.page_size_bytes} B) must match device pages "
                             f"({pool.page_size_bytes} B)")
        self.pool = pool
        self.host_pool = host_pool
        self._host_tables: dict[str, list[int]] = {}  # swapped-out request id -> host pages in order
        self._specs: dict[str, KVSpec] = {}
        self._tokens_per_page: dict[str, int] = {}
        self._tables: dict[str, list[int]] = {}  # request id -> pages in order
        self._model_of: dict[str, str] = {}  # request id -> model
        self._pages_by_model: Counter[str] = Counter()

    # ---- models -------------------------------------------------------------------------
    def add_model(self, name: str, spec: KVSpec) -> None:
        """Make ``name`` resident with KV shape ``spec``."""
        if name in self._specs:
            raise ValueError(f"model {name!r} is already resident")
        self._tokens_per_page[name] = spec.tokens_per_page(self.pool.page_size_bytes)
        self._specs[name] = spec

    def remove_model(self, name: str) -> None:
        """Make ``name`` non-resident (its weights are being unloaded); its tokens-per-page
        is forgotten, the pool stays as it is.

        Raises:
            ValueError: an unknown model, or one whose requests still hold device or host
                pages (free or preempt them first).
        """
        if name not in self._specs:
            raise ValueError(f"model {name!r} is not resident")
        holders = [rid for rid, m in self._model_of.items() if m == name]
        if holders:
            raise ValueError(f"model {name!r} still has {len(holders)} request(s) holding KV pages "
                             f"(e.g. {holders[0]!r}); free them before removing it")
        del self._specs[name]
        del self._tokens_per_page[name]
        self._pages_by_model.pop(name, None)

    def is_resident(self, name: str) -> bool:
        return name in self._specs

    @property
    def models(self) -> list[str]:
        return list(self._specs)

    def spec(self, model: str) -> KVSpec:
        return self._specs[model]

    def tokens_per_page(self, model: str) -> int:
        """Tokens of ``model`` per page."""
        try:
            return self._tokens_per_page[model]
        except KeyError:
            raise ValueError(f"unknown model {model!r}") from None

    def pages_needed(self, model: str, num_tokens: int) -> int:
        """Pages that hold ``num_tokens`` tokens of ``model``."""
        return -(-num_tokens // self.tokens_per_page(model))

    def capacity_tokens(self, model: str) -> int:
        """Tokens of ``model`` the whole pool could hold."""
        return self.pool.num_pages * self.tokens_per_page(model)

    # ---- requests -----------------------------------------------------------------------
    def block_table(self, request_id: str) -> list[int]:
        """Pages of ``request_id`` in token order (empty if it holds none)."""
        return self._tables.get(request_id, [])

    def num_pages_of(self, request_id: str) -> int:
        return len(self._tables.get(request_id, ()))

    def allocate(self, request_id: str, model: str, num_tokens: int) -> bool:
        """Grow ``request_id``'s block table to cover ``num_tokens`` tokens in total.

        All-or-nothing: on failure the table is unchanged and False is returned.
        """
        table = self._tables.get(request_id)
        if table is None:
            if request_id in self._host_tables:
                raise ValueError(f"request {request_id!r} is swapped out; swap it in first")
            if model not in self._specs:
                raise ValueError(f"unknown model {model!r}")
            table = self._tables[request_id] = []
            self._model_of[request_id] = model
        elif self._model_of[request_id] != model:
            raise ValueError(f"request {request_id!r} belongs to {self._model_of[request_id]!r}")
        extra = self.pages_needed(model, num_tokens) - len(table)
        if extra <= 0:
            return True
        try:
            pages = self.pool.allocate(extra, request_id)
        except OutOfPagesError:
            if not table:
                del self._tables[request_id]
                del self._model_of[request_id]
            return False
        table.extend(pages)
        self._pages_by_model[model] += extra
        return True

    def free(self, request_id: str) -> int:
        """Give back every page of ``request_id``, device and host (finish, abort or preemption);
        returns the number of device pages freed."""
        host = self._host_tables.pop(request_id, None)
        if host is not None:
            self.host_pool.free(host, request_id)
            self._model_of.pop(request_id)
            return 0
        table = self._tables.pop(request_id, None)
        if table is None:
            return 0
        model = self._model_of.pop(request_id)
        self.pool.free(table, request_id)
        self._pages_by_model[model] -= len(table)
        return len(table)

    # ---- swapping ----------------------------------------------------------------------
    def num_host_pages_of(self, request_id: str) -> int:
        return len(self._host_tables.get(request_id, ()))

    def is_swapped(self, request_id: str) -> bool:
        """Whether ``request_id``'s KV is in host memory."""
        return request_id in self._host_tables

    def swap_out(self, request_id: str) -> list[tuple[int, int]] | None:
        """Move ``request_id``'s pages to host memory (all or nothing).

        Returns the ``(device page, host page)`` copies to perform, in block-table order, or
        None (nothing changed) when there is no swap space, the request holds no device
        pages, or the host pool lacks free pages.
        """
        table = self._tables.get(request_id)
        if self.host_pool is None or not table:
            return None
        try:
            host = self.host_pool.allocate(len(table), request_id)
        except OutOfPagesError:
            return None
        model = self._model_of[request_id]
        del self._tables[request_id]
        self.pool.free(table, request_id)
        self._pages_by_model[model] -= len(table)
        self._host_tables[request_id] = host
        return list(zip(table, host))

    def swap_in(self, request_id: str, num_tokens: int) -> list[tuple[int, int]] | None:
        """Bring a swapped-out request back with device pages for ``num_tokens`` tokens in
        total (at least what it held); all or nothing.

        Returns the ``(host page, device page)`` copies to perform, or None (nothing
        changed) when the device lacks free pages.

        Raises:
            ValueError: ``request_id`` is not swapped out.
        """
        host = self._host_tables.get(request_id)
        if host is None:
            raise ValueError(f"request {request_id!r} is not swapped out")
        model = self._model_of[request_id]
        n = max(len(host), self.pages_needed(model, num_tokens))
        try:
            pages = self.pool.allocate(n, request_id)
        except OutOfPagesError:
            return None
        del self._host_tables[request_id]
        self.host_pool.free(host, request_id)
        self._tables[request_id] = pages
        self._pages_by_model[model] += n
        return list(zip(host, pages))

    def pages_used_by_model(self) -> dict[str, int]:
        """Pages held by each resident model's requests."""
        return {m: self._pages_by_model[m] for m in self._specs}

    def requests_holding_pages(self) -> list[str]:
        return list(self._tables)

    def check_integrity(self) -> None:
        """Verify that every page is owned once: by one request's table or the free list, on
        the device and in the host swap space; no request holds both.

        Raises:
            AssertionError: describing the first inconsistency.
        """
        self.pool.check_integrity()
        seen: dict[int, str] = {}
        per_model: Counter[str] = Counter()
        for rid, table in self._tables.items():
            assert rid in self._model_of, f"request {rid} has a table but no model"
            per_model[self._model_of[rid]] += len(table)
            for p in table:
                assert p not in seen, f"page {p} is in the tables of {seen[p]} and {rid}"
                assert self.pool.owner(p) == rid, f"page {p} in {rid}'s table is owned by {self.pool.owner(p)!r}"
                seen[p] = rid
        assert len(seen) == self.pool.num_used, (
            f"{self.pool.num_used} pages used but {len(seen)} in block tables (leak)"
        )
        for m in set(per_model) | set(self._pages_by_model):
            assert per_model[m] == self._pages_by_model[m], f"page count of model {m} is off"
        for rid, m in self._model_of.items():
            assert m in self._specs, f"request {rid} holds pages of non-resident model {m}"
        assert set(self._model_of) == set(self._tables) | set(self._host_tables), "stale request models"
        if self.host_pool is None:
            assert not self._host_tables, "host tables without a host pool"
            return
        self.host_pool.check_integrity()
        host_seen: set[int] = set()
        for rid, table in self._host_tables.items():
            assert rid not in self._tables, f"request {rid} holds device and host pages"
            assert rid in self._model_of, f"swapped request {rid} has no model"
            for p in table:
                assert p not in host_seen, f"host page {p} is in two tables"
                assert self.host_pool.owner(p) == rid, f"host page {p} of {rid} owned by {self.host_pool.owner(p)!r}"
                host_seen.add(p)
        assert len(host_seen) == self.host_pool.num_used, "host pages leaked"
