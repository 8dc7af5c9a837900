"""The one request constructor: a ``Request`` from a model's config, validated.

Every path that queues work on a replica (the engine process, the offline ``LLM``) builds
its requests here, so the checks against the model (vocabulary, context length, EOS ids)
exist once.
"""

from __future__ import annotations

import operator
from typing import Protocol, Sequence

from seallm.core import SLO, Request, SamplingParams


class ModelLimits(Protocol):
    """What the constructor needs of a model's config (``seallm.models.config.ModelConfig``)."""

    vocab_size: int
    max_model_len: int
    eos_token_ids: Sequence[int]


def check_prompt(model: str, prompt_token_ids: Sequence[int], limits: ModelLimits) -> list[int]:
    """The prompt as a list of ints, checked against the model.

    Raises:
        ValueError: empty prompt, a token id outside ``[0, vocab_size)`` or not an int, or a
            prompt that leaves no room for one output token in ``max_model_len``.
    """
    try:
        if bool in map(type, prompt_token_ids):
            raise TypeError
        ids = list(map(operator.index, prompt_token_ids))
    except TypeError:
        raise ValueError("the prompt must be token ids (integers)") from None
    if not ids:
        raise ValueError("the prompt is empty")
    if min(ids) < 0 or max(ids) >= limits.vocab_size:
        bad = next(t for t in ids if not 0 <= t < limits.vocab_size)
        raise ValueError(f"token id {bad!r} is outside the vocabulary of {model!r} (size {limits.vocab_size})")
    if len(ids) >= limits.max_model_len:
        raise ValueError(f"This model's maximum context length is {limits.max_model_len} tokens; the prompt has "
                         f"{len(ids)} tokens, which leaves no room for output.")
    return ids


def new_request(request_id: str, model: str, limits: ModelLimits, prompt_token_ids: Sequence[int],
                params: SamplingParams, arrival_time: float, priority: int = 0, slo: SLO | None = None,
                admission_mode: str | None = None) -> Request:
    """A validated ``Request`` for ``model`` (see :func:`check_prompt` for the errors raised;
    ``params`` and ``slo`` validate themselves).

    ``admission_mode``: "best_effort", "reject" or None (the policy's default) for a request
    an SLO planner cannot guarantee.

    Raises:
        ValueError: also for an unknown ``admission_mode``.
    """
    ids = check_prompt(model, prompt_token_ids, limits)
    if admission_mode not in (None, "best_effort", "reject"):
        raise ValueError(f"admission_mode must be 'best_effort' or 'reject', got {admission_mode!r}")
    return Request(request_id, model, ids, params, arrival_time, priority=int(priority), slo=slo,
                   eos_token_ids=frozenset(limits.eos_token_ids), max_model_len=limits.max_model_len,
                   admission_mode=admission_mode)
