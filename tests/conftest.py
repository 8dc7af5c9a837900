"""Shared fixtures: small random-weight checkpoints with real files, written once per session."""

from __future__ import annotations

import os

import pytest

ARCH_OVERRIDES = {
    # llama3 RoPE scaling with a short original context so the scaling changes frequencies.
    "llama": dict(rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
    "qwen2": {},
    "qwen3": dict(head_dim=32),  # head_dim != hidden / heads, as in real Qwen3
    "mistral": dict(sliding_window=None),
}


@pytest.fixture(scope="session")
def ckpt_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("ckpts")


@pytest.fixture(scope="session")
def checkpoints(ckpt_dir):
    """arch -> folder of a tiny random fp32 checkpoint with a byte-level tokenizer."""
    from seallm.models.random_checkpoint import write_random_checkpoint

    out = {}
    for i, (arch, kw) in enumerate(ARCH_OVERRIDES.items()):
        out[arch] = write_random_checkpoint(os.path.join(ckpt_dir, arch), arch, seed=i, **kw)
    return out


def hf_greedy(path: str, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    """Reference: transformers greedy generate, one prompt at a time, EOS ignored."""
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    outs = []
    with torch.inference_mode():
        for p in prompts:
            o = model.generate(torch.tensor([p]), max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                               do_sample=False, pad_token_id=2, eos_token_id=None)
            outs.append(o[0, len(p):].tolist())
    return outs


def random_prompts(n: int, lengths: list[int], seed: int = 0, vocab: int = 512) -> list[list[int]]:
    import random

    rng = random.Random(seed)
    return [[rng.randrange(3, vocab) for _ in range(lengths[i % len(lengths)])] for i in range(n)]
