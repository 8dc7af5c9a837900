"""A catalog of real model architectures by name: configs embedded, no weights (torch-free).

The cluster simulator and placement need each model's shape (layers, hidden size, heads, KV
heads, vocabulary) to predict step times, weight bytes and KV bytes per token; they never
need its weights. Values are those of the models' Hugging Face ``config.json`` files
(bf16 weights and KV cache). ``LLaMA-7B`` ... ``LLaMA-65B`` are the first LLaMA generation
(the ``huggyllama`` checkpoints MuxServe evaluates on).
"""

from __future__ import annotations

from dataclasses import dataclass

from seallm.cost import ModelShape
from seallm.kv import KVSpec


@dataclass(frozen=True)
class CatalogModel:
    """One architecture of the catalog.

    Attributes:
        name: its name (as on the Hugging Face hub, without the organization).
        shape: sizes for the cost model (bf16: ``dtype_bytes=2``).
        max_model_len: context length (tokens).
        eos_token_id: its end-of-sequence token.
    """

    name: str
    shape: ModelShape
    max_model_len: int
    eos_token_id: int

    @property
    def weights_bytes(self) -> int:
        """Bytes of its weights (bf16)."""
        return self.shape.weights_bytes

    @property
    def kv_spec(self) -> KVSpec:
        """Its KV shape (all KV heads: one page of a tensor-parallel group spans its devices)."""
        s = self.shape
        return KVSpec(s.num_layers, s.num_kv_heads, s.head_dim, s.dtype_bytes)


def _m(name: str, layers: int, hidden: int, inter: int, heads: int, kv_heads: int, vocab: int, ctx: int,
       eos: int) -> CatalogModel:
    return CatalogModel(name, ModelShape(layers, hidden, inter, heads, kv_heads, hidden // heads, vocab, 2), ctx, eos)


CATALOG: dict[str, CatalogModel] = {m.name: m for m in (
    _m("LLaMA-7B", 32, 4096, 11008, 32, 32, 32000, 2048, 2),
    _m("LLaMA-13B", 40, 5120, 13824, 40, 40, 32000, 2048, 2),
    _m("LLaMA-30B", 60, 6656, 17920, 52, 52, 32000, 2048, 2),
    _m("LLaMA-65B", 80, 8192, 22016, 64, 64, 32000, 2048, 2),
    _m("Llama-2-7B", 32, 4096, 11008, 32, 32, 32000, 4096, 2),
    _m("Llama-2-13B", 40, 5120, 13824, 40, 40, 32000, 4096, 2),
    _m("Llama-2-70B", 80, 8192, 28672, 64, 8, 32000, 4096, 2),
    _m("Llama-3.1-8B", 32, 4096, 14336, 32, 8, 128256, 131072, 128001),
    _m("Llama-3.1-70B", 80, 8192, 28672, 64, 8, 128256, 131072, 128001),
    _m("Mistral-7B", 32, 4096, 14336, 32, 8, 32000, 32768, 2),
    _m("Qwen2.5-7B", 28, 3584, 18944, 28, 4, 152064, 32768, 151643),
    _m("Qwen2.5-14B", 48, 5120, 13824, 40, 8, 152064, 32768, 151643),
    _m("Qwen2.5-32B", 64, 5120, 27648, 40, 8, 152064, 32768, 151643),
    _m("Qwen2.5-72B", 80, 8192, 29568, 64, 8, 152064, 32768, 151643),
)}


def catalog_model(name: str) -> CatalogModel:
    """The catalog entry ``name`` (case-insensitive).

    Raises:
        ValueError: an unknown name, listing the known ones.
    """
    for k, v in CATALOG.items():
        if k.lower() == name.lower():
            return v
    raise ValueError(f"unknown architecture {name!r}; the catalog has: {', '.join(CATALOG)}")
