"""Swap space: moving a request's pages to host memory and back (torch-free)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seallm.kv import KVCacheManager, KVSpec, PagePool

SPEC = KVSpec(num_layers=2, num_kv_heads=2, head_dim=8, dtype_bytes=4)  # 256 B/token
PAGE = 1024  # 4 tokens per page


def _kv(device_pages=8, host_pages=8):
    kv = KVCacheManager(PagePool(device_pages, PAGE), PagePool(host_pages, PAGE) if host_pages else None)
    kv.add_model("a", SPEC)
    return kv


def test_swap_out_and_in_return_the_copies_in_block_order():
    kv = _kv()
    assert kv.allocate("r", "a", 10)  # 3 pages
    table = kv.block_table("r")
    out = kv.swap_out("r")
    assert [d for d, _ in out] == table
    assert kv.is_swapped("r") and kv.block_table("r") == [] and kv.pool.num_used == 0
    assert kv.num_host_pages_of("r") == 3 and kv.pages_used_by_model() == {"a": 0}
    kv.check_integrity()
    back = kv.swap_in("r", 14)  # and one more page to grow into
    assert [h for h, _ in back] == [h for _, h in out]
    assert [d for _, d in back] == kv.block_table("r")[:3]
    assert len(kv.block_table("r")) == 4 and not kv.is_swapped("r") and kv.host_pool.num_used == 0
    kv.check_integrity()


def test_swaps_are_all_or_nothing():
    kv = _kv(device_pages=4, host_pages=2)
    assert kv.allocate("r", "a", 12)  # 3 pages; the host holds only 2
    assert kv.swap_out("r") is None and kv.num_pages_of("r") == 3
    kv2 = _kv(device_pages=4, host_pages=4)
    assert kv2.allocate("r", "a", 12)
    assert kv2.swap_out("r") is not None
    assert kv2.allocate("s", "a", 8)  # 2 of 4 device pages taken meanwhile
    assert kv2.swap_in("r", 12) is None and kv2.is_swapped("r")  # needs 3, 2 free
    kv2.check_integrity()
    assert _kv(host_pages=0).swap_out("x") is None  # no swap space


def test_swap_errors_and_free():
    kv = _kv()
    assert kv.allocate("r", "a", 4)
    kv.swap_out("r")
    with pytest.raises(ValueError, match="swapped out"):
        kv.allocate("r", "a", 8)
    with pytest.raises(ValueError, match="not swapped out"):
        kv.swap_in("other", 4)
    assert kv.free("r") == 0 and kv.host_pool.num_used == 0  # abort of a swapped request
    kv.check_integrity()
    with pytest.raises(ValueError, match="must match"):
        KVCacheManager(PagePool(4, PAGE), PagePool(4, PAGE * 2))


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(["grow", "free", "out", "in"]), st.integers(0, 5),
                              st.integers(1, 20)), max_size=60))
def test_random_swaps_keep_integrity(ops):
    kv = _kv(device_pages=10, host_pages=6)
    tokens: dict[str, int] = {}
    for op, i, n in ops:
        rid = f"r{i}"
        if op == "grow" and not kv.is_swapped(rid):
            if kv.allocate(rid, "a", tokens.get(rid, 0) + n):
                tokens[rid] = tokens.get(rid, 0) + n
        elif op == "free":
            kv.free(rid)
            tokens.pop(rid, None)
        elif op == "out" and kv.num_pages_of(rid):
            held, host_free = kv.num_pages_of(rid), kv.host_pool.num_free
            pairs = kv.swap_out(rid)
            assert (pairs is not None) == (held <= host_free)
        elif op == "in" and kv.is_swapped(rid):
            pairs = kv.swap_in(rid, tokens[rid])
            if pairs is not None:
                assert len(pairs) == kv.pages_needed("a", tokens[rid])
        kv.check_integrity()
        assert kv.pool.num_used + kv.host_pool.num_used == sum(kv.pages_needed("a", t) for t in tokens.values())
