"""Llama-family decoder (Llama 2/3.x, Mistral, Qwen2, Qwen3) over the paged KV pool.

Matches ``transformers``' ``LlamaForCausalLM`` / ``MistralForCausalLM`` /
``Qwen2ForCausalLM`` / ``Qwen3ForCausalLM`` token for token under greedy decoding.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from seallm.models.attention import AttentionMetadata, paged_attention
from seallm.models.config import ModelConfig
from seallm.models.layers import RotaryEmbedding, add_rms_norm, rms_norm, rope_
from seallm.models.linear import linear, pack_linear_weight


@dataclass
class LayerWeights:
    """One decoder layer; q/k/v and gate/up are fused for fewer matmuls."""

    input_norm: torch.Tensor  # [hidden]
    qkv: torch.Tensor  # [(H + 2 Hkv) * D, hidden]
    qkv_bias: torch.Tensor | None
    o: torch.Tensor  # [hidden, H * D]
    o_bias: torch.Tensor | None
    post_norm: torch.Tensor  # [hidden]
    gate_up: torch.Tensor  # [2 * intermediate, hidden]
    gate_up_bias: torch.Tensor | None
    down: torch.Tensor  # [hidden, intermediate]
    down_bias: torch.Tensor | None
    q_norm: torch.Tensor | None = None  # [D] (Qwen3)
    k_norm: torch.Tensor | None = None


class LlamaForCausalLM:
    """Inference-only decoder.

    Args:
        config: parsed ``config.json``.
        embed: [vocab, hidden]; layers: per-layer weights; norm: [hidden];
        lm_head: [vocab, hidden] (the embedding when tied).
    """

    def __init__(self, config: ModelConfig, embed: torch.Tensor, layers: list[LayerWeights],
                 norm: torch.Tensor, lm_head: torch.Tensor) -> None:
        self.config = config
        self.embed = embed
        self.layers = layers
        self.norm = norm
        self.lm_head = lm_head
        self.dtype = embed.dtype
        self.rope = RotaryEmbedding(config.head_dim, config.rope_theta, config.rope_scaling_dict, self.dtype)
        self.scale = config.head_dim ** -0.5
        c = config
        self._split = [c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim, c.num_kv_heads * c.head_dim]

    def packed_for_cpu(self) -> "LlamaForCausalLM":
        """This model with its matmul weights (qkv, o, gate_up, down, an untied LM head)
        packed once for oneDNN (:func:`seallm.models.linear.pack_linear_weight`); the same
        model when packing is off or unsupported. Norms, biases and the embedding stay plain.
        For CPU models only (a packed weight cannot be moved to another device)."""
        names = ("qkv", "o", "gate_up", "down")
        layers = [replace(w, **{n: pack_linear_weight(getattr(w, n)) for n in names}) for w in self.layers]
        lm_head = self.lm_head if self.lm_head is self.embed else pack_linear_weight(self.lm_head)
        return LlamaForCausalLM(self.config, self.embed, layers, self.norm, lm_head)

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, max_pos: int,
                kv_cache: torch.Tensor, kv_pages: list[tuple[torch.Tensor, torch.Tensor]],
                meta: AttentionMetadata, logits_rows: torch.Tensor) -> torch.Tensor:
        """One iteration over a ragged batch.

        Shapes: ``input_ids``, ``positions`` [T] long; ``kv_cache`` the model's pool view
        [num_pages, L, 2, tokens_per_page, Hkv, D]; ``kv_pages`` its per-layer 2-D page
        views (:func:`layer_page_views`); ``logits_rows`` [S] long (rows whose
        next-token logits are needed) -> logits [S, vocab] float32.
        """
        c = self.config
        T = input_ids.shape[0]
        eps = c.rms_norm_eps
        H, Hkv, D = c.num_heads, c.num_kv_heads, c.head_dim
        h = F.embedding(input_ids, self.embed)  # the residual stream, updated in place
        x = add_rms_norm(h, None, self.layers[0].input_norm, eps)
        last = len(self.layers) - 1
        for i, w in enumerate(self.layers):
            qkv = linear(x, w.qkv, w.qkv_bias)
            q, k, v = qkv.split(self._split, dim=-1)
            v = v.view(T, Hkv, D)
            if w.q_norm is not None:  # Qwen3: per-head RMSNorm before RoPE
                q = rms_norm(q.reshape(T, H, D), w.q_norm, eps)
                k = rms_norm(k.reshape(T, Hkv, D), w.k_norm, eps)
                rope_(q, positions, self.rope, max_pos)
                rope_(k, positions, self.rope, max_pos)
            else:  # q and k rotated where they lie in the qkv output
                rope_(qkv[:, : (H + Hkv) * D].view(T, H + Hkv, D), positions, self.rope, max_pos)
                q, k = q.view(T, H, D), k.view(T, Hkv, D)
            a = paged_attention(q, k, v, kv_cache[:, i], kv_pages[i], meta, self.scale)
            x = add_rms_norm(h, linear(a, w.o, w.o_bias), w.post_norm, eps)
            gate, up = linear(x, w.gate_up, w.gate_up_bias).chunk(2, dim=-1)
            down = linear(F.silu(gate) * up, w.down, w.down_bias)
            if i < last:
                x = add_rms_norm(h, down, self.layers[i + 1].input_norm, eps)
            else:
                h.add_(down)
        h = rms_norm(h[logits_rows], self.norm, eps)
        return linear(h, self.lm_head).float()
