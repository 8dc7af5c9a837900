"""One device's pool of fixed-size byte pages (SeaLLM §2.6: no static per-model quotas)."""

from __future__ import annotations


class OutOfPagesError(RuntimeError):
    """Not enough free pages for an all-or-nothing allocation."""


class PagePool:
    """Free list and ownership of ``num_pages`` pages of ``page_size_bytes`` bytes.

    Pages are identified by index ``0 .. num_pages-1``; the device tensor that backs them
    (``num_pages * page_size_bytes`` bytes) lives in the worker. Allocation is all-or-nothing.

    Raises:
        ValueError: if ``num_pages`` < 1 or ``page_size_bytes`` < 1.
    """

    def __init__(self, num_pages: int, page_size_bytes: int) -> None:
        if num_pages < 1:
            raise ValueError(f"the KV pool needs at least one page, got num_pages={num_pages}")
        if page_size_bytes < 1:
            raise ValueError(f"page_size_bytes must be >= 1, got {page_size_bytes}")
        self.num_pages = num_pages
        self.page_size_bytes = page_size_bytes
        # Stack of free pages; low ids come out first (keeps tests readable).
        self._free: list[int] = list(range(num_pages - 1, -1, -1))
        self._owner: list[str | None] = [None] * num_pages

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def num_used(self) -> int:
        return self.num_pages - len(self._free)

    def owner(self, page: int) -> str | None:
        """The owner tag of ``page`` (None when free)."""
        return self._owner[page]

    def allocate(self, n: int, owner: str) -> list[int]:
        """Take ``n`` pages for ``owner``, all or nothing.

        Raises:
            OutOfPagesError: if fewer than ``n`` pages are free (nothing is taken).
            ValueError: if ``n`` < 0.
        """
        if n < 0:
            raise ValueError(f"cannot allocate {n} pages")
        if n > len(self._free):
            raise OutOfPagesError(f"need {n} pages, {len(self._free)} free of {self.num_pages}")
        if n == 0:
            return []
        pages = self._free[-n:]
        del self._free[-n:]
        pages.reverse()
        for p in pages:
            self._owner[p] = owner
        return pages

    def free(self, pages: list[int], owner: str) -> None:
        """Return ``pages`` held by ``owner`` to the pool.

        Raises:
            ValueError: if a page is not held by ``owner`` (double free or wrong owner);
                no page is freed in that case.
        """
        for p in pages:
            if self._owner[p] != owner:
                raise ValueError(f"page {p} is owned by {self._owner[p]!r}, not {owner!r}")
        for p in pages:
            self._owner[p] = None
        self._free.extend(reversed(pages))

    def check_integrity(self) -> None:
        """Verify that every page is either free exactly once or owned, never both.

        Raises:
            AssertionError: describing the first inconsistency found.
        """
        seen = set()
        for p in self._free:
            assert 0 <= p < self.num_pages, f"free list holds out-of-range page {p}"
            assert p not in seen, f"page {p} is on the free list twice"
            assert self._owner[p] is None, f"page {p} is free and owned by {self._owner[p]!r}"
            seen.add(p)
        for p in range(self.num_pages):
            if p not in seen:
                assert self._owner[p] is not None, f"page {p} is neither free nor owned (lost)"
