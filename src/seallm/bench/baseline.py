"""The "served alone" latency of a request, used by SLO attainment.

Per model, ``alone_latency(input_len, output_len) = ttft_base_s + ttft_per_token_s *
input_len + (output_len - 1) * tpot_s`` (seconds). The coefficients are given by the user
(measured elsewhere) or fitted from calibration requests sent one at a time (see
:mod:`seallm.bench.calibrate`): TTFT by least squares on ``a + b * input_len``, TPOT as
the mean per-request TPOT.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from seallm.bench.records import RequestRecord

__all__ = ["AloneLatency", "AloneOverride", "fit_alone_latency", "resolve_overrides"]


@dataclass(frozen=True)
class AloneLatency:
    """Latency model of one model served alone.

    ``ttft_base_s`` (s) + ``ttft_per_token_s`` (s/input token) give TTFT; ``tpot_s`` is the
    time per output token after the first (s). ``samples``: calibration requests behind the
    fit (0 if given by the user).
    """

    ttft_base_s: float
    ttft_per_token_s: float
    tpot_s: float
    samples: int = 0

    def __post_init__(self) -> None:
        for name in ("ttft_base_s", "ttft_per_token_s", "tpot_s"):
            v = getattr(self, name)
            if not (v >= 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be a finite value >= 0, got {v}")

    def ttft(self, input_len: int) -> float:
        """TTFT alone for ``input_len`` prompt tokens (s)."""
        return self.ttft_base_s + self.ttft_per_token_s * input_len

    def latency(self, input_len: int, output_len: int) -> float:
        """E2E latency alone (s) for ``input_len`` prompt and ``output_len`` output tokens."""
        return self.ttft(input_len) + max(output_len - 1, 0) * self.tpot_s


@dataclass(frozen=True)
class AloneOverride:
    """User-given coefficients for one model (None = measure by calibration).

    Units as in :class:`AloneLatency`. ``ttft_base_s`` defaults to 0 when the other two
    are given and it is not.
    """

    ttft_base_s: float | None = None
    ttft_per_token_s: float | None = None
    tpot_s: float | None = None

    @property
    def complete(self) -> bool:
        """True when no calibration is needed (per-token TTFT and TPOT are given)."""
        return self.ttft_per_token_s is not None and self.tpot_s is not None

    def apply(self, fitted: AloneLatency | None) -> AloneLatency | None:
        """Given values over ``fitted``; None if neither gives a complete model."""
        if fitted is None:
            if not self.complete:
                return None
            return AloneLatency(self.ttft_base_s or 0.0, self.ttft_per_token_s, self.tpot_s)
        return AloneLatency(
            fitted.ttft_base_s if self.ttft_base_s is None else self.ttft_base_s,
            fitted.ttft_per_token_s if self.ttft_per_token_s is None else self.ttft_per_token_s,
            fitted.tpot_s if self.tpot_s is None else self.tpot_s,
            fitted.samples,
        )


def resolve_overrides(models: Iterable[str], overrides: Mapping[str, AloneOverride]) -> dict[str, AloneOverride]:
    """Per-model overrides; key ``"*"`` applies to every model, a model's own key wins field by field."""
    default = overrides.get("*", AloneOverride())
    out = {}
    for m in models:
        own = overrides.get(m, AloneOverride())
        out[m] = AloneOverride(
            own.ttft_base_s if own.ttft_base_s is not None else default.ttft_base_s,
            own.ttft_per_token_s if own.ttft_per_token_s is not None else default.ttft_per_token_s,
            own.tpot_s if own.tpot_s is not None else default.tpot_s,
        )
    return out


def fit_alone_latency(records: Iterable[RequestRecord]) -> AloneLatency | None:
    """Fit :class:`AloneLatency` from successful calibration records; None if none succeeded.

    TTFT = a + b * tokens_in by least squares, clipped to a, b >= 0 (if the slope comes out
    negative, b = 0 and a = mean TTFT; if the intercept does, a = 0 and b is refitted through
    the origin). TPOT = mean of the per-request TPOTs (0 if no request had 2+ tokens).
    """
    ok = [r for r in records if r.ok]
    if not ok:
        return None
    xs = [float(r.tokens_in) for r in ok]
    ys = [float(r.ttft_s) for r in ok]
    n = len(ok)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx > 0 else 0.0
    a = my - b * mx
    if b < 0:
        a, b = my, 0.0
    elif a < 0:
        sx2 = sum(x * x for x in xs)
        a, b = 0.0, (sum(x * y for x, y in zip(xs, ys)) / sx2 if sx2 > 0 else 0.0)
    tpots = [r.tpot_s for r in ok if r.tpot_s is not None]
    tpot = sum(tpots) / len(tpots) if tpots else 0.0
    return AloneLatency(max(a, 0.0), max(b, 0.0), max(tpot, 0.0), samples=n)
