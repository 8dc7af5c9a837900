"""Per-model KV shape and the derivation of tokens per page (SeaLLM §2.6, DESIGN.md decision 2)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KB": 1000, "KIB": 1 << 10, "M": 1 << 20, "MB": 1000**2,
          "MIB": 1 << 20, "G": 1 << 30, "GB": 1000**3, "GIB": 1 << 30, "T": 1 << 40, "TB": 1000**4,
          "TIB": 1 << 40}


def parse_bytes(value: int | float | str) -> int:
    """Parse a memory size: ``2147483648``, ``"2GiB"``, ``"512MiB"``, ``"1.5GB"`` -> bytes.

    Raises:
        ValueError: if the text is not a number with an optional unit (B, KiB, MiB, GiB, TiB,
            KB, MB, GB, TB; K/M/G/T mean the binary units) or the size is not positive.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a memory size: {value!r}")
    if isinstance(value, (int, float)):
        n = int(value)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(value))
        if not m or m.group(2).upper() not in _UNITS:
            raise ValueError(f"not a memory size: {value!r} (examples: '2GiB', '512MiB', 1073741824)")
        n = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if n <= 0:
        raise ValueError(f"memory size must be positive, got {value!r}")
    return n


@dataclass(frozen=True)
class KVSpec:
    """KV cache shape of one model.

    A page holds, for this model, K and V of all layers for ``tokens_per_page`` tokens, laid
    out as ``[num_layers, 2, tokens_per_page, num_kv_heads, head_dim]`` elements of
    ``dtype_bytes`` each; the rest of the page is unused.

    Attributes:
        num_layers: decoder layers.
        num_kv_heads: KV heads (per tensor-parallel rank).
        head_dim: elements per head.
        dtype_bytes: bytes per element (4 fp32, 2 bf16/fp16).
    """

    num_layers: int
    num_kv_heads: int
    head_dim: int
    dtype_bytes: int

    @property
    def bytes_per_token(self) -> int:
        """Bytes of K and V of all layers for one token."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * self.dtype_bytes

    def tokens_per_page(self, page_size_bytes: int) -> int:
        """Tokens of this model that fit in one page.

        Raises:
            ValueError: if one token does not fit in a page.
        """
        t = page_size_bytes // self.bytes_per_token
        if t < 1:
            raise ValueError(
                f"page of {page_size_bytes} bytes is smaller than one token's KV "
                f"({self.bytes_per_token} bytes); raise page_size_bytes"
            )
        return t

def default_page_size_bytes(specs: list[KVSpec], min_tokens_per_page: int = 16) -> int:
    """Smallest power-of-two page that gives every model at least ``min_tokens_per_page`` tokens.

    The model with the largest per-token KV gets 16 tokens per page (vLLM's block size);
    smaller models get proportionally more tokens per page.

    Raises:
        ValueError: if ``specs`` is empty.
    """
    if not specs:
        raise ValueError("need at least one model to size pages")
    need = max(s.bytes_per_token for s in specs) * min_tokens_per_page
    size = 1
    while size < need:
        size <<= 1
    return size
