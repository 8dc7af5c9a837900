"""Workloads: the list of requests a benchmark sends, as :class:`BenchRequest`.

Two generators, both deterministic:

- :func:`azure_workload` replays the Azure LLM inference traces 2023, one trace per service
  (model), in a time window, with rate scaling and length scaling/capping;
- :func:`synthetic_workload` draws Poisson or Gamma arrivals for N models whose rates follow
  a power law, with lengths sampled from the ShareGPT / arXiv / BWB distributions.

Times are seconds relative to the start of the replay; lengths are tokens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Union

import numpy as np

from seallm.core import SLO
from seallm.bench.traces import load_azure_trace, load_length_distribution

__all__ = [
    "AzureWorkload",
    "BenchRequest",
    "LengthConfig",
    "SyntheticWorkload",
    "Workload",
    "WorkloadError",
    "arrival_times",
    "azure_workload",
    "build_workload",
    "power_law_rates",
    "split_services",
    "synthetic_workload",
]

_TICKS_PER_S = 10**7


class WorkloadError(ValueError):
    """A workload specification is invalid (bad rate, scale, window, names...)."""


@dataclass(frozen=True)
class BenchRequest:
    """One request of a workload.

    ``arrival_s``: scheduled send time, seconds after the replay starts.
    ``input_len``: prompt tokens (exact). ``output_len``: tokens to generate (``max_tokens``).
    ``slo``: per-stage latency targets sent with it (None: the deployment's default).
    ``after``: index (in the workload) of the request this one follows, as the next round of
    a tool-calling chain: it arrives ``tool_delay_s`` after that request finishes, and
    ``arrival_s`` is ignored (None: an independent request). Simulator only.
    """

    model: str
    arrival_s: float
    input_len: int
    output_len: int
    slo: SLO | None = None
    after: int | None = None
    tool_delay_s: float = 0.0


@dataclass(frozen=True)
class LengthConfig:
    """How trace/dataset lengths are adapted to the machine under test.

    Each length is multiplied by ``scale``, rounded to the nearest integer, capped at
    ``max_input_len`` / ``max_output_len`` (tokens; None = no cap) and raised to at least 1.
    """

    scale: float = 1.0
    max_input_len: int | None = None
    max_output_len: int | None = None

    def __post_init__(self) -> None:
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise WorkloadError(f"length scale must be > 0, got {self.scale}")
        for name in ("max_input_len", "max_output_len"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise WorkloadError(f"{name} must be >= 1, got {v}")

    def _apply(self, lens: np.ndarray, cap: int | None) -> np.ndarray:
        out = np.rint(np.asarray(lens, dtype=np.float64) * self.scale)
        if cap is not None:
            out = np.minimum(out, cap)
        return np.maximum(out, 1).astype(np.int64)

    def inputs(self, lens: np.ndarray) -> np.ndarray:
        """Adapted input lengths (tokens)."""
        return self._apply(lens, self.max_input_len)

    def outputs(self, lens: np.ndarray) -> np.ndarray:
        """Adapted output lengths (tokens)."""
        return self._apply(lens, self.max_output_len)


@dataclass(frozen=True)
class AzureWorkload:
    """Replay of Azure LLM inference traces 2023.

    ``traces``: ``(trace, model)`` pairs; trace is ``chat``/``conv``, ``code`` or a CSV path
    with the same columns. All traces share one clock (their real timestamps), whose origin
    is the earliest first arrival among them, so a chat+code mix keeps its real overlap.
    ``window_start_s`` / ``duration_s``: the window replayed, seconds of trace time after that
    origin (None = to the end). ``rate_scale``: arrival-rate multiplier (0.5 halves the rate by
    stretching inter-arrival times x2; the replay lasts ``duration_s / rate_scale`` s).
    ``num_requests``: keep only the first N requests of the window (None = all).
    """

    traces: tuple[tuple[str, str], ...]
    window_start_s: float = 0.0
    duration_s: float | None = None
    rate_scale: float = 1.0
    num_requests: int | None = None
    lengths: LengthConfig = field(default_factory=LengthConfig)

    def __post_init__(self) -> None:
        if not self.traces:
            raise WorkloadError("at least one (trace, model) pair is needed")
        if self.window_start_s < 0:
            raise WorkloadError(f"window start must be >= 0 s, got {self.window_start_s}")
        if self.duration_s is not None and not self.duration_s > 0:
            raise WorkloadError(f"duration must be > 0 s, got {self.duration_s}")
        if not (self.rate_scale > 0 and math.isfinite(self.rate_scale)):
            raise WorkloadError(f"rate scale must be > 0, got {self.rate_scale}")
        if self.num_requests is not None and self.num_requests < 1:
            raise WorkloadError(f"num_requests must be >= 1, got {self.num_requests}")


@dataclass(frozen=True)
class SyntheticWorkload:
    """Synthetic multi-model workload.

    ``models`` are ranked by popularity: model i gets rate ``total_rate * (i+1)^-alpha / Z``
    (req/s; ``alpha = 0`` gives equal rates), times ``rate_scale``. Arrivals per model are
    ``poisson`` or ``gamma`` (inter-arrival coefficient of variation ``cv``; cv=1 is Poisson).
    The workload ends at ``duration_s`` seconds and/or after ``num_requests`` requests (at
    least one must be given). ``length_dists``: ``(model or "*", dist)`` pairs choosing
    ``sharegpt``/``arxiv``/``bwb`` (or a CSV path) per model; the default is ShareGPT.
    """

    models: tuple[str, ...]
    total_rate: float
    duration_s: float | None = None
    num_requests: int | None = None
    alpha: float = 0.0
    arrival: str = "poisson"
    cv: float = 1.0
    length_dists: tuple[tuple[str, str], ...] = (("*", "sharegpt"),)
    rate_scale: float = 1.0
    lengths: LengthConfig = field(default_factory=LengthConfig)

    def __post_init__(self) -> None:
        if not self.models:
            raise WorkloadError("at least one model is needed")
        if len(set(self.models)) != len(self.models):
            raise WorkloadError(f"models must be distinct, got {list(self.models)}")
        if not (self.total_rate > 0 and math.isfinite(self.total_rate)):
            raise WorkloadError(f"total rate must be > 0 req/s, got {self.total_rate}")
        if not (self.rate_scale > 0 and math.isfinite(self.rate_scale)):
            raise WorkloadError(f"rate scale must be > 0, got {self.rate_scale}")
        if self.duration_s is None and self.num_requests is None:
            raise WorkloadError("give duration_s and/or num_requests")
        if self.duration_s is not None and not self.duration_s > 0:
            raise WorkloadError(f"duration must be > 0 s, got {self.duration_s}")
        if self.num_requests is not None and self.num_requests < 1:
            raise WorkloadError(f"num_requests must be >= 1, got {self.num_requests}")
        if self.arrival not in ("poisson", "gamma"):
            raise WorkloadError(f"arrival must be 'poisson' or 'gamma', got {self.arrival!r}")
        if not (self.cv > 0 and math.isfinite(self.cv)):
            raise WorkloadError(f"cv must be > 0, got {self.cv}")
        if not math.isfinite(self.alpha):
            raise WorkloadError(f"alpha must be finite, got {self.alpha}")

    def length_dist_for(self, model: str) -> str:
        """The length distribution name (or path) used for ``model``."""
        table = dict(self.length_dists)
        return table.get(model, table.get("*", "sharegpt"))


Workload = Union[AzureWorkload, SyntheticWorkload, Sequence[BenchRequest]]


def _sorted(reqs: list[BenchRequest]) -> list[BenchRequest]:
    return sorted(reqs, key=lambda r: r.arrival_s)  # stable: ties keep generation order


def azure_workload(spec: AzureWorkload) -> list[BenchRequest]:
    """Requests of an Azure trace replay, sorted by arrival (see :class:`AzureWorkload`).

    Raises :class:`~seallm.bench.traces.TraceError` for an unknown trace and
    :class:`WorkloadError` when the window holds no request.
    """
    traces = [(load_azure_trace(name), model) for name, model in spec.traces]
    origin = min(t.start_ticks for t, _ in traces)
    lo = spec.window_start_s
    hi = math.inf if spec.duration_s is None else lo + spec.duration_s
    reqs: list[BenchRequest] = []
    for trace, model in traces:
        rel = trace.arrival_s + (trace.start_ticks - origin) / _TICKS_PER_S
        keep = (rel >= lo) & (rel < hi)
        arrivals = (rel[keep] - lo) / spec.rate_scale
        ins = spec.lengths.inputs(trace.input_lens[keep])
        outs = spec.lengths.outputs(trace.output_lens[keep])
        reqs.extend(BenchRequest(model, float(a), int(i), int(o)) for a, i, o in zip(arrivals, ins, outs))
    if not reqs:
        raise WorkloadError(f"no request in the window [{lo}, {hi}) s of traces {[n for n, _ in spec.traces]}")
    reqs = _sorted(reqs)
    return reqs[: spec.num_requests] if spec.num_requests else reqs


def power_law_rates(n: int, total_rate: float, alpha: float) -> np.ndarray:
    """Per-model rates (req/s) ``r_i = total_rate * (i+1)^-alpha / sum_j (j+1)^-alpha``.

    Raises :class:`WorkloadError` if ``n < 1`` or ``total_rate <= 0``.
    """
    if n < 1:
        raise WorkloadError(f"need at least one model, got {n}")
    if not total_rate > 0:
        raise WorkloadError(f"total rate must be > 0 req/s, got {total_rate}")
    w = np.arange(1, n + 1, dtype=np.float64) ** (-float(alpha))
    return total_rate * w / w.sum()


def arrival_times(
    rate: float,
    rng: np.random.Generator,
    *,
    kind: str = "poisson",
    cv: float = 1.0,
    duration_s: float | None = None,
    max_count: int | None = None,
) -> np.ndarray:
    """Arrival times (s, increasing, first one after 0) of a renewal process.

    ``poisson``: exponential gaps with mean ``1/rate``. ``gamma``: Gamma gaps with mean
    ``1/rate`` and coefficient of variation ``cv`` (shape ``1/cv^2``). Stops before
    ``duration_s`` and/or after ``max_count`` arrivals (at least one must be given).
    Raises :class:`WorkloadError` on a bad argument.
    """
    if not rate > 0:
        raise WorkloadError(f"rate must be > 0 req/s, got {rate}")
    if duration_s is None and max_count is None:
        raise WorkloadError("give duration_s and/or max_count")
    if kind not in ("poisson", "gamma"):
        raise WorkloadError(f"unknown arrival process {kind!r}")
    if not cv > 0:
        raise WorkloadError(f"cv must be > 0, got {cv}")

    def gaps(k: int) -> np.ndarray:
        if kind == "poisson":
            return rng.exponential(1.0 / rate, size=k)
        shape = 1.0 / (cv * cv)
        return rng.gamma(shape, 1.0 / (rate * shape), size=k)

    if duration_s is None:
        return np.cumsum(gaps(int(max_count)))
    chunk = int(rate * duration_s * 1.1) + 16
    parts: list[np.ndarray] = []
    t = 0.0
    count = 0
    while t < duration_s and (max_count is None or count < max_count):
        times = t + np.cumsum(gaps(chunk))
        parts.append(times)
        t = float(times[-1])
        count += chunk
    out = np.concatenate(parts)
    out = out[out < duration_s]
    return out[:max_count] if max_count is not None else out


def synthetic_workload(spec: SyntheticWorkload, seed: int = 0) -> list[BenchRequest]:
    """Requests of a synthetic workload, sorted by arrival (see :class:`SyntheticWorkload`).

    Deterministic for a given ``seed``: model i draws arrivals and lengths from its own
    streams (``SeedSequence(seed)`` children ``2i`` and ``2i+1``), so adding a model does not
    change the others. Raises :class:`WorkloadError` / :class:`~seallm.bench.traces.TraceError`.
    """
    rates = power_law_rates(len(spec.models), spec.total_rate * spec.rate_scale, spec.alpha)
    streams = np.random.SeedSequence(seed).spawn(2 * len(spec.models))
    reqs: list[BenchRequest] = []
    for i, (model, rate) in enumerate(zip(spec.models, rates)):
        arr_rng = np.random.default_rng(streams[2 * i])
        len_rng = np.random.default_rng(streams[2 * i + 1])
        times = arrival_times(
            float(rate), arr_rng, kind=spec.arrival, cv=spec.cv,
            duration_s=spec.duration_s, max_count=spec.num_requests,
        )
        dist = load_length_distribution(spec.length_dist_for(model))
        ins, outs = dist.sample(len(times), len_rng)
        ins, outs = spec.lengths.inputs(ins), spec.lengths.outputs(outs)
        reqs.extend(BenchRequest(model, float(a), int(x), int(y)) for a, x, y in zip(times, ins, outs))
    reqs = _sorted(reqs)
    if spec.num_requests is not None:
        reqs = reqs[: spec.num_requests]
    if not reqs:
        raise WorkloadError("the synthetic workload is empty (duration too short for the rate?)")
    return reqs


def split_services(requests: Sequence[BenchRequest], services: Sequence[str], alpha: float = 0.9, seed: int = 0,
                   drift_period_s: float | None = None) -> list[BenchRequest]:
    """Split one stream of requests (e.g. an Azure trace) into per-model services: each
    request goes to ``services[i]`` with probability ``(rank_i + 1)^-alpha / Z``, where the
    ranks are the list order (``services[0]`` most popular) and, with ``drift_period_s``,
    rotate by one every period (popularity that moves between models over time: in period
    ``e`` service ``i`` has rank ``(i + e) mod N``). Arrival times and lengths are kept;
    deterministic for a ``seed``.

    Raises:
        WorkloadError: no service, duplicate names, a non-finite ``alpha`` or a non-positive
            period.
    """
    if not services:
        raise WorkloadError("at least one service is needed")
    if len(set(services)) != len(services):
        raise WorkloadError(f"services must be distinct, got {list(services)}")
    if not math.isfinite(alpha):
        raise WorkloadError(f"alpha must be finite, got {alpha}")
    if drift_period_s is not None and not drift_period_s > 0:
        raise WorkloadError(f"drift period must be > 0 s, got {drift_period_s}")
    n = len(services)
    p = power_law_rates(n, 1.0, alpha)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5E41]))
    ranks = rng.choice(n, size=len(requests), p=p)
    out = []
    for r, rank in zip(requests, ranks):
        shift = int(r.arrival_s // drift_period_s) if drift_period_s else 0
        out.append(BenchRequest(services[(int(rank) - shift) % n], r.arrival_s, r.input_len, r.output_len, r.slo))
    return out


def build_workload(workload: Workload, seed: int = 0) -> list[BenchRequest]:
    """Materialize any workload spec (or an explicit request sequence) into sorted requests.

    Raises :class:`WorkloadError` for an empty or invalid workload.
    """
    if isinstance(workload, AzureWorkload):
        return azure_workload(workload)
    if isinstance(workload, SyntheticWorkload):
        return synthetic_workload(workload, seed)
    reqs = list(workload)
    if not reqs or not all(isinstance(r, BenchRequest) for r in reqs):
        raise WorkloadError("a workload must be AzureWorkload, SyntheticWorkload or a non-empty list of BenchRequest")
    for r in reqs:
        if r.input_len < 1 or r.output_len < 1 or r.arrival_s < 0:
            raise WorkloadError(f"invalid request {r}")
    return _sorted(reqs)
