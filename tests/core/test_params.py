"""Sampling parameters and SLOs refuse non-finite and out-of-range values (torch-free)."""

from __future__ import annotations

import math

import pytest

from seallm.core import SLO, SamplingParams


@pytest.mark.parametrize("field", ["temperature", "top_p", "min_p"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_refused(field, value):
    with pytest.raises(ValueError, match=field):
        SamplingParams(**{field: value})


@pytest.mark.parametrize("seed", [-(1 << 63) - 1, 1 << 64])
def test_seed_outside_the_generator_range_refused(seed):
    with pytest.raises(ValueError, match="seed"):
        SamplingParams(seed=seed)


def test_seed_range_edges_accepted():
    assert SamplingParams(seed=(1 << 64) - 1).seed == (1 << 64) - 1
    assert SamplingParams(seed=-(1 << 63)).seed == -(1 << 63)


@pytest.mark.parametrize("top_k", [-2, 1 << 31, 1 << 63])
def test_top_k_range(top_k):
    with pytest.raises(ValueError, match="top_k"):
        SamplingParams(top_k=top_k)


@pytest.mark.parametrize("value", [math.nan, math.inf, 0.0, -1.0])
def test_slo_must_be_a_positive_finite_time(value):
    with pytest.raises(ValueError, match="slo.ttft"):
        SLO(ttft=value)
