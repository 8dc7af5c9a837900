"""Property tests of the unified page pool across several models (torch-free)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seallm.kv import KVCacheManager, KVSpec, OutOfPagesError, PagePool, default_page_size_bytes, parse_bytes

SPECS = {
    "llama": KVSpec(num_layers=4, num_kv_heads=2, head_dim=16, dtype_bytes=4),
    "qwen3": KVSpec(num_layers=2, num_kv_heads=2, head_dim=32, dtype_bytes=2),
    "big": KVSpec(num_layers=8, num_kv_heads=4, head_dim=16, dtype_bytes=4),
}


def _manager(num_pages: int) -> KVCacheManager:
    page = default_page_size_bytes(list(SPECS.values()))
    kv = KVCacheManager(PagePool(num_pages, page))
    for name, spec in SPECS.items():
        kv.add_model(name, spec)
    return kv


ops = st.lists(
    st.tuples(st.sampled_from(["grow", "free", "preempt"]), st.integers(0, 7), st.sampled_from(sorted(SPECS)),
              st.integers(1, 300)),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(num_pages=st.integers(1, 40), ops=ops)
def test_random_sequences_keep_integrity(num_pages, ops):
    kv = _manager(num_pages)
    owner: dict[str, str] = {}  # request -> model
    tokens: dict[str, int] = {}
    for op, rid_i, model, n in ops:
        rid = f"r{rid_i}"
        if op == "grow":
            model = owner.get(rid, model)
            total = tokens.get(rid, 0) + n
            before_free = kv.pool.num_free
            before = list(kv.block_table(rid))
            ok = kv.allocate(rid, model, total)
            if ok:
                owner[rid], tokens[rid] = model, total
                assert len(kv.block_table(rid)) == kv.pages_needed(model, total)
                assert kv.block_table(rid)[: len(before)] == before  # growth appends
            else:  # all-or-nothing: nothing changed
                assert kv.pool.num_free == before_free
                assert kv.block_table(rid) == before
                assert kv.pages_needed(model, total) - len(before) > before_free
        else:  # finish/abort and preemption both give every page back
            freed = kv.free(rid)
            assert freed == kv.pages_needed(owner[rid], tokens[rid]) if rid in owner else freed == 0
            owner.pop(rid, None)
            tokens.pop(rid, None)
        kv.check_integrity()
        used = kv.pages_used_by_model()
        assert sum(used.values()) == kv.pool.num_used
        for m in SPECS:
            assert used[m] == sum(kv.pages_needed(m, tokens[r]) for r in owner if owner[r] == m)
    for rid in list(owner):
        kv.free(rid)
    kv.check_integrity()
    assert kv.pool.num_free == num_pages  # no page lost


def test_tokens_per_page_differs_by_architecture():
    kv = _manager(4)
    page = kv.pool.page_size_bytes
    assert page == 1 << (SPECS["big"].bytes_per_token * 16 - 1).bit_length()
    for name, spec in SPECS.items():
        assert kv.tokens_per_page(name) == page // spec.bytes_per_token
    assert kv.tokens_per_page("big") == 16
    assert kv.tokens_per_page("qwen3") == 128


def test_pool_errors():
    pool = PagePool(3, 64)
    a = pool.allocate(2, "x")
    with pytest.raises(OutOfPagesError):
        pool.allocate(2, "y")
    assert pool.num_free == 1
    with pytest.raises(ValueError):
        pool.free(a, "y")  # wrong owner frees nothing
    pool.free(a, "x")
    with pytest.raises(ValueError):
        pool.free(a, "x")  # double free
    pool.check_integrity()
    with pytest.raises(ValueError):
        PagePool(0, 64)


def test_integrity_detects_corruption():
    kv = _manager(8)
    kv.allocate("r", "llama", 100)
    kv._tables["r"].append(kv._tables["r"][0])  # the same page twice
    with pytest.raises(AssertionError):
        kv.check_integrity()


def test_page_smaller_than_a_token_is_rejected():
    kv = KVCacheManager(PagePool(4, 16))
    with pytest.raises(ValueError, match="smaller than one token"):
        kv.add_model("big", SPECS["big"])


@pytest.mark.parametrize("text,expected", [("2GiB", 2 << 30), ("512MiB", 512 << 20), ("1.5GB", 1_500_000_000),
                                           (4096, 4096), ("64K", 65536)])
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("bad", ["", "lots", "-1GiB", "2XB", 0, True])
def test_parse_bytes_rejects(bad):
    with pytest.raises(ValueError):
        parse_bytes(bad)
