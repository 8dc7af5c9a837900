"""Profiled cost model: a max of affine pieces in batch tokens and context tokens.

Reference: SLOs-Serve (arXiv 2504.08784), ``batch_timer.py`` / ``performance_model.py``
(``shared/reference/slo-scheduling.md`` §1.3): T = max_g (k1_g N_tok + k2_g C + b_g), fitted
by least squares with L-BFGS-B. Here the second feature is the context tokens read by
attention (no speculative decoding).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from seallm.cost.batch import BatchShape


@dataclass(frozen=True)
class MaxAffineCostModel:
    """T(batch) = max over pieces of (per_token x N + per_context_token x C + base), seconds.

    Attributes:
        pieces: ``(per_token_s, per_context_token_s, base_s)`` triples.
    """

    pieces: tuple[tuple[float, float, float], ...]

    def step_time(self, batch: BatchShape) -> float:
        return max(a * batch.num_tokens + c * batch.num_context_tokens + b for a, c, b in self.pieces)

    def max_tokens_within(self, seconds: float, context_tokens: int = 0) -> int:
        """Largest token budget whose step fits in ``seconds`` (the inverse SLOs-Serve uses)."""
        return max(0, int(min((seconds - b - c * context_tokens) / max(a, 1e-12) for a, c, b in self.pieces)))

    def to_json(self) -> str:
        return json.dumps({"kind": "max_affine", "pieces": [list(p) for p in self.pieces]})

    @classmethod
    def from_json(cls, text: str) -> "MaxAffineCostModel":
        """Raises ``ValueError`` if ``text`` is not a saved max-affine model."""
        d = json.loads(text)
        if d.get("kind") != "max_affine":
            raise ValueError("not a max-affine cost model")
        return cls(tuple(tuple(float(x) for x in p) for p in d["pieces"]))


@dataclass(frozen=True)
class FitReport:
    """Fit quality on held-out samples: R² and relative errors (|pred - true| / true)."""

    r2: float
    median_rel_error: float
    p90_rel_error: float
    num_train: int
    num_test: int


def _predict(params: np.ndarray, x: np.ndarray, pieces: int) -> np.ndarray:
    p = params.reshape(pieces, 3)
    return (x @ p.T).max(axis=1)


def fit_max_affine(samples: list[tuple[BatchShape, float]], pieces: int = 2, test_fraction: float = 0.25,
                   seed: int = 0, starts: int = 8) -> tuple[MaxAffineCostModel, FitReport]:
    """Fit a max of ``pieces`` affine functions to measured ``(batch, seconds)`` samples,
    from ``starts`` random initial points (the objective is not convex).

    Samples are split at random into train and held-out test sets; the report is on the test
    set (on the train set when there are fewer than 8 samples).

    Raises:
        ValueError: fewer than 3 samples.
    """
    from scipy.optimize import minimize

    if len(samples) < 3:
        raise ValueError("need at least 3 samples to fit a cost model")
    x = np.array([[b.num_tokens, b.num_context_tokens, 1.0] for b, _ in samples])
    y = np.array([t for _, t in samples])
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(samples))
    n_test = int(len(samples) * test_fraction) if len(samples) >= 8 else 0
    test, train = idx[:n_test], idx[n_test:]
    xs = x.max(axis=0)
    xs[xs == 0] = 1.0
    xn = x[train] / xs
    ys = max(y[train].max(), 1e-12)
    best = None
    for trial in range(max(1, starts)):
        init = np.abs(rng.normal(0.5, 0.3, size=3 * pieces))
        res = minimize(lambda p: np.mean((_predict(p, xn, pieces) - y[train] / ys) ** 2), init, method="L-BFGS-B",
                       bounds=[(0.0, None)] * (3 * pieces))
        if best is None or res.fun < best.fun:
            best = res
    p = best.x.reshape(pieces, 3) * ys / xs
    model = MaxAffineCostModel(tuple((float(a), float(c), float(b)) for a, c, b in p))
    ev = test if n_test else train
    pred = np.array([model.step_time(samples[i][0]) for i in ev])
    true = y[ev]
    ss_res = float(((pred - true) ** 2).sum())
    ss_tot = float(((true - true.mean()) ** 2).sum()) or 1e-30
    rel = np.abs(pred - true) / np.maximum(true, 1e-12)
    return model, FitReport(1 - ss_res / ss_tot, float(np.median(rel)), float(np.quantile(rel, 0.9)),
                            len(train), len(ev) if n_test else 0)
