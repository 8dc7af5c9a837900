"""Service profiles: what SeaLLM's scheduler knows about each service (model + its traffic).

Reference: SeaLLM (arXiv 2504.15720) §3 "service characteristics"; the concrete form follows
``shared/reference/multi-model-sharing.md`` §2.2 (our design where the paper is silent):
iteration time, prefill time per token, input- and output-length distributions and the
arrival rate over sliding windows, and the step-time model of the service's device (SLOs-Serve's max-affine fit, refit online
from the iterations the engine runs).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from seallm.cost import BatchShape, FitReport, MaxAffineCostModel, fit_max_affine


def _nearest_rank(sorted_values: list[int], quantile: float) -> float:
    """The ``quantile`` (0..1) of a non-empty sorted list, nearest rank."""
    n = len(sorted_values)
    return float(sorted_values[min(n - 1, max(0, int(quantile * n + 0.5) - 1))])


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

    #: Step samples kept for the online refit of the cost model (most recent).
    SAMPLE_WINDOW = 2048

    def __init__(self, seed: ProfileSeed | None = None, window: int = 512, smoothing: float = 0.1) -> None:
        seed = seed or ProfileSeed()
        self.iteration_time_s = seed.iteration_time_s
        self.prefill_time_per_token_s = seed.prefill_time_per_token_s
        self.smoothing = smoothing
        self._prefill_tokens = 256.0  # moving averages behind prefill_time_per_token_s
        self._prefill_s = self._prefill_tokens * self.prefill_time_per_token_s
        self._lengths: deque[int] = deque(seed.output_lengths, maxlen=window)
        self._sorted: list[int] | None = None
        self._input_lengths: deque[int] = deque(maxlen=window)
        self._arrivals: deque[float] = deque(maxlen=window)
        self._samples: deque[tuple[int, int, float]] = deque(maxlen=self.SAMPLE_WINDOW)
        self.cost_model: MaxAffineCostModel | None = None
        self.fit_report: FitReport | None = None
        # What a live engine spends beyond the forward passes (moving averages, s; None:
        # never measured): per iteration (scheduling, bookkeeping, sending the outputs) and
        # per request (from the front end's stamp to the engine queueing it).
        self.iteration_overhead_s: float | None = None
        self.ingest_delay_s: float | None = None

    def to_dict(self) -> dict:
        """Plain data for persistence (see :meth:`from_dict`); includes the fitted cost model
        (``seallm simulate`` reads it) when there is one."""
        d = {"iteration_time_s": self.iteration_time_s, "prefill_time_per_token_s": self.prefill_time_per_token_s,
             "output_lengths": list(self._lengths), "input_lengths": list(self._input_lengths),
             "arrival_rate": self.arrival_rate()}
        for k in ("iteration_overhead_s", "ingest_delay_s"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        if self.cost_model is not None:
            d["cost_model"] = {"kind": "max_affine", "pieces": [list(p) for p in self.cost_model.pieces]}
            if self.fit_report is not None:
                d["fit"] = vars(self.fit_report)
        return d

    @classmethod
    def from_dict(cls, d: dict, window: int = 512) -> "ServiceProfile":
        """Raises ``KeyError``/``TypeError``/``ValueError`` on malformed data."""
        lengths = tuple(int(x) for x in d["output_lengths"]) or (128,)
        p = cls(ProfileSeed(float(d["iteration_time_s"]), float(d["prefill_time_per_token_s"]), lengths), window)
        p._input_lengths.extend(int(x) for x in d.get("input_lengths", ()))
        for k in ("iteration_overhead_s", "ingest_delay_s"):
            if d.get(k) is not None:
                setattr(p, k, float(d[k]))
        if d.get("cost_model") is not None:
            p.cost_model = MaxAffineCostModel(tuple(tuple(float(x) for x in q) for q in d["cost_model"]["pieces"]))
        return p

    def observe_arrival(self, prompt_tokens: int, now: float) -> None:
        """Record a new request: its prompt length (tokens) and arrival time (s)."""
        self._input_lengths.append(prompt_tokens)
        self._arrivals.append(now)

    def input_length(self, quantile: float) -> float | None:
        """The ``quantile`` (0..1) of recent prompt lengths, tokens; None before any arrival."""
        return _nearest_rank(sorted(self._input_lengths), quantile) if self._input_lengths else None

    def arrival_rate(self) -> float | None:
        """Requests per second over the recent arrivals; None with fewer than two."""
        if len(self._arrivals) < 2 or self._arrivals[-1] <= self._arrivals[0]:
            return None
        return (len(self._arrivals) - 1) / (self._arrivals[-1] - self._arrivals[0])

    def observe_batch(self, batch: BatchShape, step_time_s: float) -> None:
        """Keep one iteration's shape and time (s) for :meth:`refit`."""
        self.observe_sample(batch.num_tokens, batch.num_context_tokens, step_time_s)

    def observe_sample(self, num_tokens: int, context_tokens: int, step_time_s: float) -> None:
        """:meth:`observe_batch` of a shape given by its batch and context tokens."""
        self._samples.append((num_tokens, context_tokens, step_time_s))

    @property
    def num_samples(self) -> int:
        return len(self._samples)

    def refit(self, min_samples: int = 32, max_samples: int = 512, starts: int = 3) -> FitReport | None:
        """Refit the max-affine step-time model on the most recent ``max_samples`` iterations
        (SLOs-Serve §1.3 form, :func:`seallm.cost.fit_max_affine` with ``starts`` starting
        points; about 15 ms here, so it can run inside the engine loop); returns the held-out
        fit report, or None (model unchanged) with fewer than ``min_samples`` samples or no
        spread in batch tokens."""
        recent = list(self._samples)[-max_samples:]
        if len(recent) < min_samples or len({n for n, _, _ in recent}) < 3:
            return None
        data = [(BatchShape(n, c), t) for n, c, t in recent]
        self.cost_model, self.fit_report = fit_max_affine(data, starts=starts)
        return self.fit_report

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

    def observe_overhead(self, iteration_s: float | None = None, ingest_s: float | None = None) -> None:
        """Refresh the engine's overheads (s): an iteration's loop time beyond its forward
        pass, or one request's delay from the front end to the engine's queue."""
        a = self.smoothing
        if iteration_s is not None:
            x = self.iteration_overhead_s
            self.iteration_overhead_s = iteration_s if x is None else x + a * (iteration_s - x)
        if ingest_s is not None:
            x = self.ingest_delay_s
            self.ingest_delay_s = ingest_s if x is None else x + a * (ingest_s - x)

    def observe_output_length(self, n: int) -> None:
        """Record a finished request's output length (tokens)."""
        self._lengths.append(n)
        self._sorted = None

    def output_length(self, quantile: float) -> float:
        """The ``quantile`` (0..1) of recent output lengths, tokens (nearest rank)."""
        if self._sorted is None:
            self._sorted = sorted(self._lengths)
        return _nearest_rank(self._sorted, quantile)

    def estimate(self, prompt_tokens: int, quantile: float) -> float:
        """Estimated execution time of a new request (s): prefill of its actual prompt plus an
        output-length statistic times the iteration time (SeaLLM's Ê_r)."""
        return prompt_tokens * self.prefill_time_per_token_s + self.output_length(quantile) * self.iteration_time_s
