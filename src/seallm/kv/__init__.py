"""Unified KV cache bookkeeping (SeaLLM's third component): one byte-page pool per device
shared by every resident model, per-request block tables, all-or-nothing allocation."""

from seallm.kv.manager import KVCacheManager
from seallm.kv.pool import OutOfPagesError, PagePool
from seallm.kv.spec import KVSpec, default_page_size_bytes, parse_bytes

__all__ = [
    "KVCacheManager",
    "KVSpec",
    "OutOfPagesError",
    "PagePool",
    "default_page_size_bytes",
    "parse_bytes",
]
