"""Paged attention over the unified KV pool: the CPU reference backend.

Each model views the device's byte pool as ``[num_pages, num_layers, 2, tokens_per_page,
num_kv_heads, head_dim]`` (a strided view, DESIGN.md decision 2). One forward pass takes a
ragged batch: decode tokens (one query each, batched together) and prefill chunks (each
attends to its earlier prefix in the cache plus itself, causally).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from seallm.models.cpu_kernels import decode_attention_available
from seallm.models.cpu_kernels import paged_decode_attention as cpu_paged_decode_attention


def kv_view(pool: torch.Tensor, page_size_bytes: int, num_layers: int, tokens_per_page: int,
            num_kv_heads: int, head_dim: int, dtype: torch.dtype) -> torch.Tensor:
    """A model's view of the byte pool.

    Shapes: ``pool`` uint8 [num_pages * page_size_bytes] ->
    [num_pages, num_layers, 2, tokens_per_page, num_kv_heads, head_dim] of ``dtype``.

    Raises:
        ValueError: if the model's KV of one page does not fit in ``page_size_bytes`` or the
            page size is not a multiple of the element size.
    """
    esize = torch.tensor([], dtype=dtype).element_size()
    if page_size_bytes % esize:
        raise ValueError(f"page size {page_size_bytes} is not a multiple of {esize}-byte elements")
    page_elems = page_size_bytes // esize
    need = num_layers * 2 * tokens_per_page * num_kv_heads * head_dim
    if need > page_elems:
        raise ValueError(f"{need} elements per page needed, page holds {page_elems}")
    num_pages = pool.numel() // page_size_bytes
    flat = pool.view(dtype)
    tok = num_kv_heads * head_dim
    return flat.as_strided(
        (num_pages, num_layers, 2, tokens_per_page, num_kv_heads, head_dim),
        (page_elems, 2 * tokens_per_page * tok, tokens_per_page * tok, tok, head_dim, 1),
    )


@dataclass
class PrefillSeq:
    """One prefill chunk: rows ``[row_start, row_end)`` of the batch."""

    row_start: int
    row_end: int
    block_table: torch.Tensor  # [P] long, pages covering the whole context
    context_len: int  # start_pos + chunk length
    fresh: bool  # start_pos == 0: no earlier prefix, plain causal attention on the chunk
    mask: torch.Tensor | None  # [1, 1, n, P * tokens_per_page] bool (True = attend), if not fresh


@dataclass
class AttentionMetadata:
    """Per-iteration inputs of the attention backend, built once and shared by all layers.

    Rows ``[0, num_decode)`` are decode tokens; prefill chunks follow.
    """

    slot_pages: torch.Tensor  # [T] long: page of each new token's KV
    slot_offsets: torch.Tensor  # [T] long: offset inside the page
    num_decode: int
    decode_block_tables: torch.Tensor | None  # [Bd, Pmax] long
    decode_mask: torch.Tensor | None  # [Bd, 1, 1, Pmax * tokens_per_page] bool
    prefills: list[PrefillSeq]
    decode_context_lens: torch.Tensor | None = None  # [Bd] long: keys of each decode query (CPU kernel)
    sliding_window: int | None = None  # the model's window (None: full attention)
    # write_kv: page stride -> flat row of each new token's slot (built on first use)
    slot_rows_cache: dict = field(default_factory=dict)


def build_metadata(
    chunks: list[tuple[int, int, list[int] | tuple[int, ...]]],
    num_decode: int,
    tokens_per_page: int,
    sliding_window: int | None,
) -> AttentionMetadata:
    """Metadata for a batch of ``(start_pos, num_tokens, block_table)`` chunks, decode
    chunks (one token with a prefix) first.

    Raises:
        ValueError: if a block table does not cover its chunk.
    """
    tpp = tokens_per_page
    pages, offs = [], []
    for start, n, table in chunks:
        if len(table) * tpp < start + n:
            raise ValueError(f"block table of {len(table)} pages cannot hold {start + n} tokens")
        for pos in range(start, start + n):
            pages.append(table[pos // tpp])
            offs.append(pos % tpp)
    slot_pages = torch.tensor(pages, dtype=torch.long)
    slot_offsets = torch.tensor(offs, dtype=torch.long)

    dec_bt = dec_mask = dec_ctx = None
    if num_decode:
        dec = chunks[:num_decode]
        pmax = max(len(t) for _, _, t in dec)
        bt = torch.zeros(num_decode, pmax, dtype=torch.long)
        for i, (_, _, t) in enumerate(dec):
            bt[i, : len(t)] = torch.tensor(t, dtype=torch.long)
        ctx = torch.tensor([s + 1 for s, _, _ in dec], dtype=torch.long)
        kpos = torch.arange(pmax * tpp)
        m = kpos[None, :] < ctx[:, None]
        if sliding_window is not None:
            m &= kpos[None, :] > (ctx[:, None] - 1 - sliding_window)
        dec_bt, dec_mask, dec_ctx = bt, m[:, None, None, :], ctx

    prefills = []
    row = num_decode
    for start, n, table in chunks[num_decode:]:
        fresh = start == 0 and sliding_window is None
        bt = torch.tensor(list(table[: -(-(start + n) // tpp)]), dtype=torch.long)
        mask = None
        if not fresh:
            qpos = torch.arange(start, start + n)
            kpos = torch.arange(bt.numel() * tpp)
            m = kpos[None, :] <= qpos[:, None]
            if sliding_window is not None:
                m &= kpos[None, :] > (qpos[:, None] - sliding_window)
            mask = m[None, None]
        prefills.append(PrefillSeq(row, row + n, bt, start + n, fresh, mask))
        row += n
    return AttentionMetadata(slot_pages, slot_offsets, num_decode, dec_bt, dec_mask, prefills, dec_ctx,
                             sliding_window)


def layer_page_views(pool_view: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, K and V as 2-D strided views ``[num_pages, tokens_per_page * Hkv * D]``
    of the model's pool view (one row per page), for fast page gathers with
    ``index_select`` (advanced indexing of the strided view is ~20x slower)."""
    n, L, _, tpp, hkv, d = pool_view.shape
    row = tpp * hkv * d
    out = []
    for layer in range(L):
        k = pool_view[:, layer, 0]
        v = pool_view[:, layer, 1]
        out.append((k.as_strided((n, row), (k.stride(0), 1)), v.as_strided((n, row), (v.stride(0), 1))))
    return out


def write_kv(kv_layer: torch.Tensor, k: torch.Tensor, v: torch.Tensor, meta: AttentionMetadata) -> None:
    """Write this step's K/V ([T, Hkv, D]) into their slots of one layer's pages.

    Fast path: the pool seen as rows of ``Hkv * D`` elements (every token slot starts on
    such a row when the page, layer and K/V strides are multiples of it), one
    ``index_copy_`` of contiguous rows per K and V with flat row indices (advanced-index
    assignment into the 5-D strided view is several times slower, most of all in bf16).
    """
    T = k.shape[0]
    tok = k.shape[1] * k.shape[2]
    s0, s1, s2 = kv_layer.stride(0), kv_layer.stride(1), kv_layer.stride(2)
    off = kv_layer.storage_offset()
    if (T and s2 == tok and kv_layer.stride(3) == k.shape[2] and kv_layer.stride(4) == 1
            and s0 % tok == 0 and s1 % tok == 0 and off % tok == 0 and kv_layer.device == k.device):
        base = meta.slot_rows_cache.get(s0)
        if base is None:  # row of each slot relative to page 0 of the layer, shared by all layers
            base = meta.slot_pages * (s0 // tok) + meta.slot_offsets
            meta.slot_rows_cache[s0] = base
        esize = kv_layer.element_size()
        rows = kv_layer.as_strided((kv_layer.untyped_storage().nbytes() // esize // tok, tok), (tok, 1), 0)
        rows.index_copy_(0, base + off // tok, k.reshape(T, tok))
        rows.index_copy_(0, base + (off + s1) // tok, v.reshape(T, tok))
        return
    kv_layer[:, 0][meta.slot_pages, meta.slot_offsets] = k
    kv_layer[:, 1][meta.slot_pages, meta.slot_offsets] = v


def paged_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_layer: torch.Tensor,
                    pages: tuple[torch.Tensor, torch.Tensor], meta: AttentionMetadata,
                    scale: float) -> torch.Tensor:
    """Write this step's K/V into the pages, then attend.

    Shapes: ``q`` [T, H, D]; ``k``, ``v`` [T, Hkv, D]; ``kv_layer``
    [num_pages, 2, tokens_per_page, Hkv, D] (one layer of the model's pool view);
    ``pages``: that layer's K and V rows from :func:`layer_page_views` ->
    output [T, H * D]. GQA: H must be a multiple of Hkv.
    """
    T, H, D = q.shape
    hkv = k.shape[1]
    write_kv(kv_layer, k, v, meta)
    k_rows, v_rows = pages
    out = torch.empty(T, H, D, dtype=q.dtype, device=q.device)
    gqa = H != hkv
    nd = meta.num_decode
    if nd and q.device.type == "cpu" and meta.decode_context_lens is not None and decode_attention_available():
        # Native kernel: reads K/V in place from the pages (no gathers); csrc/paged_attention_cpu.cpp.
        cpu_paged_decode_attention(q[:nd], k_rows, v_rows, meta.decode_block_tables, meta.decode_context_lens,
                                   kv_layer.shape[2], hkv, scale, meta.sliding_window, out=out[:nd])
    elif nd:  # reference / fallback: gather the pages, masked SDPA
        bt = meta.decode_block_tables
        kk = k_rows.index_select(0, bt.view(-1)).view(nd, -1, hkv, D).transpose(1, 2)  # [Bd, Hkv, S, D]
        vv = v_rows.index_select(0, bt.view(-1)).view(nd, -1, hkv, D).transpose(1, 2)
        o = F.scaled_dot_product_attention(q[:nd].unsqueeze(2), kk, vv, attn_mask=meta.decode_mask,
                                           scale=scale, enable_gqa=gqa)  # [Bd, H, 1, D]
        out[:nd] = o.squeeze(2)
    for p in meta.prefills:
        qs = q[p.row_start : p.row_end].transpose(0, 1).unsqueeze(0)  # [1, H, n, D]
        if p.fresh:
            ks = k[p.row_start : p.row_end].transpose(0, 1).unsqueeze(0)
            vs = v[p.row_start : p.row_end].transpose(0, 1).unsqueeze(0)
            o = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=scale, enable_gqa=gqa)
        else:
            ks = k_rows.index_select(0, p.block_table).view(1, -1, hkv, D).transpose(1, 2)
            vs = v_rows.index_select(0, p.block_table).view(1, -1, hkv, D).transpose(1, 2)
            o = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=p.mask, scale=scale, enable_gqa=gqa)
        out[p.row_start : p.row_end] = o[0].transpose(0, 1)
    return out.view(T, H * D)
