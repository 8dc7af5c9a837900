"""Service profiles: what SeaLLM's scheduler knows about each service (model + its traffic).

Reference: SeaLLM (arXiv 2504.15720) §3 "service characteristics"; the concrete form follows
``shared/reference/multi-model-sharing.md`` §2.2 (our design where the paper is silent):
iteration time, prefill time per token, output-length distribution over a sliding window.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class ProfileSeed:
    """Starting values of a service profile (from a deployment file, a trace or a past run).

    Attributes:
        iteration_time_s: time of one decode iteration at the service's typical batch (s).
        prefill_time_per_token_s: prefill cost per prompt token (s).
        output_lengths: observed output lengths (tokens) to start the distribution with.
    """

    iteration_time_s: float = 0.02
    prefill_time_per_token_s: float = 2e-4
    output_lengths: tuple[int, ...] = (128,)


class ServiceProfile:
    """Online profile of one service, refreshed from the iterations it runs.

    Args:
        seed: starting values.
        window: finished requests kept for the output-length distribution.
        smoothing: weight of a new measurement in the exponential moving averages (0..1].
    """

    def __init__(self, seed: ProfileSeed | None = None, window: int = 512, smoothing: float = 0.1) -> None:
        seed = seed or ProfileSeed()
        self.iteration_time_s = seed.iteration_time_s
        self.prefill_time_per_token_s = seed.prefill_time_per_token_s
        self.smoothing = smoothing
        self._prefill_tokens = 256.0  # moving averages behind prefill_time_per_token_s
        self._prefill_s = self._prefill_tokens * self.prefill_time_per_token_s
        self._lengths: deque[int] = deque(seed.output_lengths, maxlen=window)
        self._sorted: list[int] | None = None

    def to_dict(self) -> dict:
        """Plain data for persistence (see :meth:`from_dict`)."""
        return {"iteration_time_s": self.iteration_time_s, "prefill_time_per_token_s": self.prefill_time_per_token_s,
                "output_lengths": list(self._lengths)}

    @classmethod
    def from_dict(cls, d: dict, window: int = 512) -> "ServiceProfile":
        """Raises ``KeyError``/``TypeError``/``ValueError`` on malformed data."""
        lengths = tuple(int(x) for x in d["output_lengths"]) or (128,)
        return cls(ProfileSeed(float(d["iteration_time_s"]), float(d["prefill_time_per_token_s"]), lengths), window)

    def observe_step(self, step_time_s: float, prefill_tokens: int, decode_tokens: int) -> None:
        """Refresh the time model from one iteration of this service (times in s)."""
        a = self.smoothing
        if prefill_tokens == 0 and decode_tokens > 0:
            self.iteration_time_s += a * (step_time_s - self.iteration_time_s)
        elif prefill_tokens > 0:
            # Ratio of moving averages (time over tokens), not an average of per-step ratios:
            # small chunks, whose fixed step cost dominates, must not inflate the estimate.
            t = max(0.0, step_time_s - (self.iteration_time_s if decode_tokens else 0.0))
            self._prefill_s += a * (t - self._prefill_s)
            self._prefill_tokens += a * (prefill_tokens - self._prefill_tokens)
            self.prefill_time_per_token_s = self._prefill_s / self._prefill_tokens

    def observe_output_length(self, n: int) -> None:
        """Record a finished request's output length (tokens)."""
        self._lengths.append(n)
        self._sorted = None

    def output_length(self, quantile: float) -> float:
        """The ``quantile`` (0..1) of recent output lengths, tokens (nearest rank)."""
        if self._sorted is None:
            self._sorted = sorted(self._lengths)
        s = self._sorted
        i = min(len(s) - 1, max(0, int(quantile * len(s) + 0.5) - 1))
        return float(s[i])

    def estimate(self, prompt_tokens: int, quantile: float) -> float:
        """Estimated execution time of a new request (s): prefill of its actual prompt plus an
        output-length statistic times the iteration time (SeaLLM's Ê_r)."""
        return prompt_tokens * self.prefill_time_per_token_s + self.output_length(quantile) * self.iteration_time_s
