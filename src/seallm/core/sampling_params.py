"""Sampling parameters of one request (vLLM / OpenAI naming)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

_GREEDY_EPS = 1e-5
SEED_MIN = -(1 << 63)  # torch.Generator.manual_seed takes [-2**63, 2**64 - 1]
SEED_MAX = (1 << 64) - 1
TOP_K_MAX = (1 << 31) - 1


@dataclass(frozen=True)
class SamplingParams:
    """How to decode one request.

    Attributes:
        max_tokens: most output tokens to generate (>= 1).
        temperature: softmax temperature (>= 0); values below 1e-5 mean greedy (argmax).
        top_k: keep the k most likely tokens; 0 or -1 disables.
        top_p: keep the smallest set of tokens whose probability sums to >= top_p, in (0, 1].
        min_p: drop tokens whose probability is below ``min_p`` x the top probability, in [0, 1].
        seed: per-request random seed in [-2**63, 2**64 - 1]; the same seed gives the same
            tokens whatever else is in the batch.
        stop: strings that end the output; the matched string is cut from the text unless
            ``include_stop_str_in_output``.
        stop_token_ids: token ids that end the output (kept in ``token_ids``).
        ignore_eos: keep generating past the model's end-of-sequence token.
        logprobs: if set, return the log-probability of each sampled token and the
            ``logprobs`` most likely alternatives (0 = sampled token only).
        skip_special_tokens: drop special tokens from the detokenized text.

    Raises:
        ValueError: on any out-of-range value, with the field named.
    """

    max_tokens: int = 16
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = field(default_factory=tuple)
    stop_token_ids: tuple[int, ...] = field(default_factory=tuple)
    ignore_eos: bool = False
    logprobs: int | None = None
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True

    def __post_init__(self) -> None:
        # Accept lists / a single string from callers, store tuples (hashable, frozen).
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        elif self.stop is None:
            object.__setattr__(self, "stop", ())
        else:
            object.__setattr__(self, "stop", tuple(self.stop))
        if self.stop_token_ids is None:
            object.__setattr__(self, "stop_token_ids", ())
        else:
            object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))
        if not isinstance(self.max_tokens, int) or isinstance(self.max_tokens, bool) or self.max_tokens < 1:
            raise ValueError(f"max_tokens must be an integer >= 1, got {self.max_tokens!r}")
        for name in ("temperature", "top_p", "min_p"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not isinstance(self.top_k, int) or not -1 <= self.top_k <= TOP_K_MAX:
            raise ValueError(f"top_k must be -1, 0 (disabled) or in [1, {TOP_K_MAX}], got {self.top_k}")
        if self.seed is not None and (not isinstance(self.seed, int) or not SEED_MIN <= self.seed <= SEED_MAX):
            raise ValueError(f"seed must be an integer in [{SEED_MIN}, {SEED_MAX}], got {self.seed!r}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0.0 <= self.min_p <= 1.0:
            raise ValueError(f"min_p must be in [0, 1], got {self.min_p}")
        if self.logprobs is not None and self.logprobs < 0:
            raise ValueError(f"logprobs must be >= 0, got {self.logprobs}")
        if any((not isinstance(s, str)) or s == "" for s in self.stop):
            raise ValueError("stop must hold non-empty strings")
        if any(t < 0 for t in self.stop_token_ids):
            raise ValueError("stop_token_ids must be >= 0")

    @property
    def greedy(self) -> bool:
        """True when decoding is argmax (temperature below 1e-5)."""
        return self.temperature < _GREEDY_EPS
