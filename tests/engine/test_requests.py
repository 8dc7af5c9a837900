"""The one request constructor checks prompts against the model (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from seallm.core import SamplingParams
from seallm.engine.requests import new_request


@dataclass
class Limits:
    vocab_size: int = 100
    max_model_len: int = 16
    eos_token_ids: tuple = (2,)


@pytest.mark.parametrize("prompt, match", [
    ([], "empty"), ([1, 100], "outside the vocabulary"), ([-1], "outside the vocabulary"),
    ([1] * 16, "maximum context length"), ([1, "x"], "integers"), ([True], "integers"), ([1.5], "integers"),
    ([1 << 70], "outside the vocabulary")])
def test_bad_prompts_refused(prompt, match):
    with pytest.raises(ValueError, match=match):
        new_request("r", "m", Limits(), prompt, SamplingParams(), 0.0)


def test_request_takes_the_model_limits():
    r = new_request("r", "m", Limits(), [5, 6], SamplingParams(max_tokens=3), 1.5, priority=2)
    assert r.eos_token_ids == frozenset({2}) and r.max_model_len == 16 and r.priority == 2
    assert r.prompt_token_ids == [5, 6] and r.arrival_time == 1.5
