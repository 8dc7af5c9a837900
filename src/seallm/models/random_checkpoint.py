"""Write small random-weight checkpoints with real files (tests, benchmarks, the demo).

The files are exactly what ``transformers``' ``save_pretrained`` writes (config.json,
safetensors, generation_config.json) plus a byte-level BPE tokenizer with a chat template,
so loading them exercises the same code as a downloaded checkpoint. Nothing is downloaded.
"""

from __future__ import annotations

import os
from typing import Any

_CORPUS = (
    "The quick brown fox jumps over the lazy dog. Serving many language models on few "
    "devices needs careful scheduling of prefill and decode, paged KV memory and low "
    "latency streaming. def main():\n    return sum(x * x for x in range(10))\n"
    "Hello! How are you today? I am fine, thank you. What is the capital of France? Paris. "
    "import numpy as np\nclass Request:\n    pass\n"
)

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

_ARCH_CONFIGS = {
    "llama": ("LlamaConfig", "LlamaForCausalLM"),
    "mistral": ("MistralConfig", "MistralForCausalLM"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM"),
}

TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=1024, vocab_size=512)


def write_tokenizer(path: str, vocab_size: int = 512) -> Any:
    """Train a byte-level BPE tokenizer (<= ``vocab_size`` tokens) on a fixed corpus and save
    it with a chat template; returns the ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|bos|>", "<|eos|>", "<|pad|>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|eos|>",
                                   pad_token="<|pad|>", additional_special_tokens=specials[3:],
                                   model_input_names=["input_ids", "attention_mask"])
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(path)
    return fast


def write_random_checkpoint(path: str, arch: str, dtype: str = "float32", seed: int = 0,
                            tokenizer: bool = True, **overrides: Any) -> str:
    """Save a random-weight ``arch`` model ("llama", "mistral", "qwen2", "qwen3") to ``path``.

    Args:
        path: folder to create.
        dtype: "float32", "bfloat16" or "float16".
        seed: torch seed for the weights.
        tokenizer: also write the byte-level tokenizer (its ids fit a 512-token vocabulary).
        overrides: config fields (defaults: :data:`TINY`).

    Raises:
        ValueError: unknown ``arch``.
    """
    import torch
    import transformers

    if arch not in _ARCH_CONFIGS:
        raise ValueError(f"unknown arch {arch!r}; known: {sorted(_ARCH_CONFIGS)}")
    cfg_name, model_name = _ARCH_CONFIGS[arch]
    fields = dict(TINY, initializer_range=0.1, bos_token_id=0, eos_token_id=1, pad_token_id=2)
    fields.update(overrides)
    cfg = getattr(transformers, cfg_name)(**fields)
    torch.manual_seed(seed)
    model = getattr(transformers, model_name)(cfg).to(getattr(torch, dtype))
    os.makedirs(path, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    if tokenizer:
        write_tokenizer(path, min(512, cfg.vocab_size))
    return path
