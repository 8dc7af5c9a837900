"""Parse a Hugging Face ``config.json`` of the Llama family into a frozen ``ModelConfig``.

Torch-free, so the engine can size the KV cache before any weight is loaded.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from seallm.kv import KVSpec

SUPPORTED_ARCHITECTURES = (
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
)

_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
_DTYPE_ALIASES = {"fp32": "float32", "float": "float32", "float32": "float32", "bf16": "bfloat16",
                  "bfloat16": "bfloat16", "fp16": "float16", "half": "float16", "float16": "float16"}


class CheckpointError(ValueError):
    """A checkpoint folder is unsupported or malformed; the message names the file and field."""


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a Llama-family decoder.

    Attributes:
        path: checkpoint folder.
        architecture: one of ``SUPPORTED_ARCHITECTURES``.
        vocab_size, hidden_size, intermediate_size, num_layers, num_heads, num_kv_heads,
        head_dim: shapes (tokens, elements).
        rms_norm_eps: RMSNorm epsilon.
        rope_theta: RoPE base.
        rope_scaling: ``None`` or a dict (``rope_type`` "linear" or "llama3" and its fields).
        max_model_len: context length in tokens (``max_position_embeddings``).
        tie_word_embeddings: the LM head reuses the embedding matrix.
        qkv_bias: q/k/v projections have biases (Qwen2, Llama ``attention_bias``).
        o_bias: the output projection has a bias (Llama ``attention_bias``).
        mlp_bias: MLP projections have biases (Llama ``mlp_bias``).
        qk_norm: per-head RMSNorm on q and k before RoPE (Qwen3).
        sliding_window: attention window in tokens (Mistral), or None.
        dtype: "float32", "bfloat16" or "float16".
        eos_token_ids: end-of-sequence ids from config.json / generation_config.json.
        bos_token_id: beginning-of-sequence id or None.
    """

    path: str
    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: tuple[tuple[str, Any], ...] | None
    max_model_len: int
    tie_word_embeddings: bool
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    qk_norm: bool
    sliding_window: int | None
    dtype: str
    eos_token_ids: tuple[int, ...]
    bos_token_id: int | None

    @property
    def kv_spec(self) -> KVSpec:
        return KVSpec(self.num_layers, self.num_kv_heads, self.head_dim, _DTYPE_BYTES[self.dtype])

    @property
    def rope_scaling_dict(self) -> dict[str, Any] | None:
        return dict(self.rope_scaling) if self.rope_scaling is not None else None

    @property
    def num_parameters(self) -> int:
        """Parameters of the model as seallm holds it (a tied LM head counted once)."""
        h, inter, d = self.hidden_size, self.intermediate_size, self.head_dim
        qd, kvd = self.num_heads * d, self.num_kv_heads * d
        layer = (qd + 2 * kvd) * h + h * qd + 3 * inter * h + 2 * h
        layer += (qd + 2 * kvd) * self.qkv_bias + h * self.o_bias + (2 * inter + h) * self.mlp_bias
        layer += 2 * d * self.qk_norm
        embed = self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * layer + embed + h

    @property
    def weights_bytes(self) -> int:
        """Bytes of the weights in ``dtype`` (what a load puts on the device)."""
        return self.num_parameters * _DTYPE_BYTES[self.dtype]

def normalize_dtype(dtype: str) -> str:
    """``"bf16"`` -> ``"bfloat16"`` and so on; raises ``ValueError`` for an unknown dtype."""
    try:
        return _DTYPE_ALIASES[str(dtype).replace("torch.", "").lower()]
    except KeyError:
        raise ValueError(f"unsupported dtype {dtype!r}; use float32, bfloat16 or float16") from None


def _read_json(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found (is this a Hugging Face checkpoint folder?)") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def load_model_config(path: str, dtype: str = "auto") -> ModelConfig:
    """Read ``path/config.json`` (and ``generation_config.json`` if present).

    Args:
        path: checkpoint folder.
        dtype: "auto" (the checkpoint's ``torch_dtype``, float32 if absent) or a dtype name.

    Raises:
        CheckpointError: missing folder or file, bad JSON, unsupported architecture, or a
            missing / ill-typed field (the message names the file and the field).
    """
    if not os.path.isdir(path):
        raise CheckpointError(f"{path}: not a directory")
    cfg_path = os.path.join(path, "config.json")
    c = _read_json(cfg_path)

    def field(name: str, kind: type, default: Any = ..., positive: bool = True) -> Any:
        if name not in c or c[name] is None:
            if default is ...:
                raise CheckpointError(f"{cfg_path}: missing field {name!r}")
            return default
        v = c[name]
        if kind is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if not isinstance(v, kind) or isinstance(v, bool) and kind is not bool:
            raise CheckpointError(f"{cfg_path}: field {name!r} must be {kind.__name__}, got {v!r}")
        if positive and kind in (int, float) and v <= 0:
            raise CheckpointError(f"{cfg_path}: field {name!r} must be positive, got {v!r}")
        return v

    archs = c.get("architectures")
    if not isinstance(archs, list) or not archs:
        raise CheckpointError(f"{cfg_path}: missing field 'architectures'")
    arch = archs[0]
    if arch not in SUPPORTED_ARCHITECTURES:
        raise CheckpointError(
            f"{cfg_path}: field 'architectures' is {arch!r}, which seallm does not support; "
            f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    hidden = field("hidden_size", int)
    heads = field("num_attention_heads", int)
    kv_heads = field("num_key_value_heads", int, heads)
    head_dim = field("head_dim", int, hidden // heads)
    if heads % kv_heads:
        raise CheckpointError(f"{cfg_path}: num_attention_heads ({heads}) is not a multiple of num_key_value_heads ({kv_heads})")
    if "head_dim" not in c and hidden % heads:
        raise CheckpointError(f"{cfg_path}: hidden_size ({hidden}) is not a multiple of num_attention_heads ({heads})")

    rope_scaling = c.get("rope_scaling")
    if rope_scaling is not None:
        if not isinstance(rope_scaling, dict):
            raise CheckpointError(f"{cfg_path}: field 'rope_scaling' must be an object")
        rtype = rope_scaling.get("rope_type", rope_scaling.get("type"))
        if rtype == "default":
            rope_scaling = None
        elif rtype not in ("linear", "llama3"):
            raise CheckpointError(
                f"{cfg_path}: field 'rope_scaling.rope_type' is {rtype!r}; supported: default, linear, llama3"
            )
        else:
            rope_scaling = dict(rope_scaling, rope_type=rtype)
            need = ["factor"] + (["low_freq_factor", "high_freq_factor", "original_max_position_embeddings"]
                                 if rtype == "llama3" else [])
            for k in need:
                if not isinstance(rope_scaling.get(k), (int, float)):
                    raise CheckpointError(f"{cfg_path}: field 'rope_scaling.{k}' is missing or not a number")

    if arch == "Qwen2ForCausalLM" and c.get("use_sliding_window"):
        raise CheckpointError(f"{cfg_path}: field 'use_sliding_window' = true is not supported for Qwen2")
    sliding = c.get("sliding_window") if arch == "MistralForCausalLM" else None
    if sliding is not None and (not isinstance(sliding, int) or sliding <= 0):
        raise CheckpointError(f"{cfg_path}: field 'sliding_window' must be a positive integer or null")

    if dtype == "auto":
        raw = c.get("torch_dtype", c.get("dtype", "float32")) or "float32"
        try:
            dt = normalize_dtype(raw)
        except ValueError:
            raise CheckpointError(f"{cfg_path}: field 'torch_dtype' is {raw!r}; supported: float32, bfloat16, float16") from None
    else:
        dt = normalize_dtype(dtype)

    eos: list[int] = []
    for src in (c, _read_optional(os.path.join(path, "generation_config.json"))):
        e = src.get("eos_token_id")
        if isinstance(e, int):
            e = [e]
        if isinstance(e, list):
            eos.extend(int(x) for x in e if isinstance(x, int) and x not in eos)

    return ModelConfig(
        path=os.path.abspath(path),
        architecture=arch,
        vocab_size=field("vocab_size", int),
        hidden_size=hidden,
        intermediate_size=field("intermediate_size", int),
        num_layers=field("num_hidden_layers", int),
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        rms_norm_eps=field("rms_norm_eps", float, 1e-6),
        rope_theta=field("rope_theta", float, 10000.0),
        rope_scaling=tuple(sorted(rope_scaling.items())) if rope_scaling else None,
        max_model_len=field("max_position_embeddings", int, 2048),
        tie_word_embeddings=bool(c.get("tie_word_embeddings", False)),
        qkv_bias=arch == "Qwen2ForCausalLM" or bool(c.get("attention_bias", False)),
        o_bias=arch != "Qwen2ForCausalLM" and bool(c.get("attention_bias", False)),
        mlp_bias=bool(c.get("mlp_bias", False)),
        qk_norm=arch == "Qwen3ForCausalLM",
        sliding_window=sliding,
        dtype=dt,
        eos_token_ids=tuple(eos),
        bos_token_id=c.get("bos_token_id") if isinstance(c.get("bos_token_id"), int) else None,
    )


def _read_optional(path: str) -> dict[str, Any]:
    if not os.path.exists(path):
        return {}
    try:
        return _read_json(path)
    except CheckpointError:
        return {}
