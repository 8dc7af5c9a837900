"""Load a Hugging Face checkpoint folder (config.json, safetensors shards and index)."""

from __future__ import annotations

import json
import os

import torch
from safetensors import safe_open

from seallm.models.config import CheckpointError, ModelConfig
from seallm.models.llama import LayerWeights, LlamaForCausalLM

_TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def torch_dtype(name: str) -> torch.dtype:
    return _TORCH_DTYPES[name]


class _Shards:
    """Tensor name -> safetensors file, over a single file or an indexed set of shards."""

    def __init__(self, path: str) -> None:
        index = os.path.join(path, "model.safetensors.index.json")
        single = os.path.join(path, "model.safetensors")
        self.where: dict[str, str] = {}
        if os.path.exists(index):
            try:
                with open(index, encoding="utf-8") as f:
                    wmap = json.load(f)["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise CheckpointError(f"{index}: malformed index, needs a 'weight_map' object ({e})") from None
            for name, fname in wmap.items():
                full = os.path.join(path, fname)
                if not os.path.exists(full):
                    raise CheckpointError(f"{index}: weight_map names {fname!r} for {name!r}, but the file is missing")
                self.where[name] = full
        elif os.path.exists(single):
            self.where = {n: single for n in self._keys(single)}
        else:
            files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
            if not files:
                raise CheckpointError(f"{path}: no model.safetensors or model.safetensors.index.json")
            for f in files:
                full = os.path.join(path, f)
                self.where.update({n: full for n in self._keys(full)})
        self._open: dict[str, object] = {}

    @staticmethod
    def _keys(file: str) -> list[str]:
        try:
            with safe_open(file, framework="pt") as f:
                return list(f.keys())
        except Exception as e:  # safetensors raises its own error types
            raise CheckpointError(f"{file}: not a readable safetensors file ({e})") from None

    def has(self, name: str) -> bool:
        return name in self.where

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        if name not in self.where:
            raise CheckpointError(f"checkpoint is missing tensor {name!r} (looked in {sorted(set(self.where.values()))})")
        file = self.where[name]
        if file not in self._open:
            self._open[file] = safe_open(file, framework="pt")
        try:
            t = self._open[file].get_tensor(name)  # type: ignore[attr-defined]
        except Exception as e:
            raise CheckpointError(f"{file}: cannot read tensor {name!r} ({e})") from None
        if tuple(t.shape) != shape:
            raise CheckpointError(f"{file}: tensor {name!r} has shape {tuple(t.shape)}, config.json implies {shape}")
        return t.to(dtype)


def load_model(config: ModelConfig) -> LlamaForCausalLM:
    """Build the model of ``config`` with weights from its folder.

    Raises:
        CheckpointError: a missing file or tensor, or a tensor whose shape disagrees with
            config.json (the message names the file and the tensor).
    """
    c = config
    dt = torch_dtype(c.dtype)
    s = _Shards(c.path)
    h, inter, D = c.hidden_size, c.intermediate_size, c.head_dim
    qd, kvd = c.num_heads * D, c.num_kv_heads * D

    def opt(name: str, shape: tuple[int, ...], present: bool) -> torch.Tensor | None:
        return s.get(name, shape, dt) if present else None

    layers = []
    for i in range(c.num_layers):
        p = f"model.layers.{i}."
        a, m = p + "self_attn.", p + "mlp."
        qkv = torch.cat([s.get(a + "q_proj.weight", (qd, h), dt), s.get(a + "k_proj.weight", (kvd, h), dt),
                         s.get(a + "v_proj.weight", (kvd, h), dt)])
        qkv_b = None
        if c.qkv_bias:
            qkv_b = torch.cat([s.get(a + "q_proj.bias", (qd,), dt), s.get(a + "k_proj.bias", (kvd,), dt),
                               s.get(a + "v_proj.bias", (kvd,), dt)])
        gate_up = torch.cat([s.get(m + "gate_proj.weight", (inter, h), dt), s.get(m + "up_proj.weight", (inter, h), dt)])
        gate_up_b = None
        if c.mlp_bias:
            gate_up_b = torch.cat([s.get(m + "gate_proj.bias", (inter,), dt), s.get(m + "up_proj.bias", (inter,), dt)])
        layers.append(LayerWeights(
            input_norm=s.get(p + "input_layernorm.weight", (h,), dt),
            qkv=qkv, qkv_bias=qkv_b,
            o=s.get(a + "o_proj.weight", (h, qd), dt), o_bias=opt(a + "o_proj.bias", (h,), c.o_bias),
            post_norm=s.get(p + "post_attention_layernorm.weight", (h,), dt),
            gate_up=gate_up, gate_up_bias=gate_up_b,
            down=s.get(m + "down_proj.weight", (h, inter), dt), down_bias=opt(m + "down_proj.bias", (h,), c.mlp_bias),
            q_norm=opt(a + "q_norm.weight", (D,), c.qk_norm), k_norm=opt(a + "k_norm.weight", (D,), c.qk_norm),
        ))
    embed = s.get("model.embed_tokens.weight", (c.vocab_size, h), dt)
    if s.has("lm_head.weight") and not c.tie_word_embeddings:
        lm_head = s.get("lm_head.weight", (c.vocab_size, h), dt)
    elif c.tie_word_embeddings:
        lm_head = embed
    else:
        raise CheckpointError(f"{c.path}: checkpoint has no 'lm_head.weight' and config.json has tie_word_embeddings=false")
    norm = s.get("model.norm.weight", (h,), dt)
    return LlamaForCausalLM(c, embed, layers, norm, lm_head)
