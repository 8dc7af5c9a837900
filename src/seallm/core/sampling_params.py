"""Sampling parameters of one request (vLLM / OpenAI naming)."""

from __future__ import annotations

from dataclasses import dataclass, field

_GREEDY_EPS = 1e-5


@dataclass(frozen=True)
class SamplingParams:
    """How to decode one request.

    Attributes:
        max_tokens: most output tokens to generate (>= 1).
        temperature: softmax temperature (>= 0); values below 1e-5 mean greedy (argmax).
        top_k: keep the k most likely tokens; 0 or -1 disables.
        top_p: keep the smallest set of tokens whose probability sums to >= top_p, in (0, 1].
        min_p: drop tokens whose probability is below ``min_p`` x the top probability, in [0, 1].
        seed: per-request random seed; the same seed gives the same tokens whatever else
            is in the batch.
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
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < -1:
            raise ValueError(f"top_k must be -1, 0 (disabled) or >= 1, got {self.top_k}")
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
