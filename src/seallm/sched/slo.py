"""Per-stage SLOs: named classes, the token-deadline rule and checkpointed conformance.

Reference: SLOs-Serve (arXiv 2504.08784), ``shared/reference/slo-scheduling.md`` §1.2. A
request's first token is due at its TTFT deadline ``arrival + TTFT``; token ``n`` (1-based)
is due :func:`token_offset_s` after the *anchor* ``t0 = max(TTFT deadline, actual first
token time)``, so TTFT slack carries forward and a late first token does not doom the rest.
Conformance is checked at checkpoints only: every ``check_every`` tokens and the last one,
with a relative tolerance (the reference evaluates every 20th token with 5 %; this module
uses 10 tokens and 5 % everywhere, planning and scoring alike).
"""

from __future__ import annotations

from collections.abc import Sequence

from seallm.core import SLO
from seallm.cost import BatchShape, CostModel

#: Named SLO classes with the reference's values (§1.2 ``EASY_SLOS``; class names after the
#: applications of §2.1). ``tool_calling`` is an intermediate round of an agent's chain (tight
#: TPOT inside the loop); ``tool_calling_final`` its last round. A reasoning request names its
#: thinking length with ``thinking_tokens`` in a per-request ``slo`` override.
SLO_CLASSES: dict[str, SLO] = {
    "chatbot": SLO(ttft_slowdown=5.0, tpot=0.100),
    "coding": SLO(ttft_slowdown=5.0, tpot=0.050),
    "summarization": SLO(ttft_slowdown=3.0, tpot=0.100),
    "reasoning": SLO(ttft_slowdown=3.0, tpot=0.100, tpot_thinking=0.050),
    "tool_calling": SLO(ttft_slowdown=3.0, tpot=0.050),
    "tool_calling_final": SLO(ttft_slowdown=3.0, tpot=0.100),
}

CHECK_EVERY = 10  # tokens between conformance checkpoints
TOLERANCE = 0.05  # relative slack at a checkpoint


def token_offset_s(slo: SLO, n: int) -> float:
    """Seconds after the anchor ``t0`` by which output token ``n`` (1-based) is due: the sum
    of the per-token targets of tokens 2..n (``tpot_thinking`` for tokens within the first
    ``thinking_tokens``, ``tpot`` after; 0 without a TPOT target)."""
    if n <= 1 or slo.tpot is None:
        return 0.0
    g = slo.thinking_tokens if slo.tpot_thinking is not None else 0
    think = max(0, min(g, n) - 1)
    return think * slo.tpot_thinking + (n - 1 - think) * slo.tpot if think else (n - 1) * slo.tpot


def tpot_at(slo: SLO, n: int) -> float | None:
    """The per-token target (s) of output token ``n`` (1-based; None without a TPOT)."""
    if slo.tpot is None:
        return None
    if slo.tpot_thinking is not None and n <= slo.thinking_tokens:
        return slo.tpot_thinking
    return slo.tpot


def ttft_target_s(slo: SLO, zero_load_prefill_s: float) -> float | None:
    """The TTFT target in seconds: ``ttft``, or ``ttft_slowdown`` x the predicted zero-load
    prefill time of the prompt (s); None without either."""
    if slo.ttft is not None:
        return slo.ttft
    if slo.ttft_slowdown is not None:
        return slo.ttft_slowdown * zero_load_prefill_s
    return None


def meets_slo(slo: SLO, arrival_s: float, token_times_s: Sequence[float], ttft_s: float | None,
              check_every: int = CHECK_EVERY, tolerance: float = TOLERANCE) -> bool:
    """Whether a finished request met its SLO: first token within ``(1 + tolerance) x TTFT``
    and, at every ``check_every``-th token and the last, ``t_n - t0 <= (1 + tolerance) x
    token_offset_s(n)``; the end-to-end target too when set. ``ttft_s`` is the resolved TTFT
    target (:func:`ttft_target_s`); times in seconds on one clock. A request without tokens
    misses."""
    if not token_times_s:
        return False
    first = token_times_s[0]
    if ttft_s is not None and first - arrival_s > (1 + tolerance) * ttft_s:
        return False
    if slo.e2e is not None and token_times_s[-1] - arrival_s > (1 + tolerance) * slo.e2e:
        return False
    if slo.tpot is None:
        return True
    t0 = max(arrival_s + ttft_s, first) if ttft_s is not None else first
    n_tokens = len(token_times_s)
    checkpoints = list(range(check_every, n_tokens + 1, check_every))
    if not checkpoints or checkpoints[-1] != n_tokens:
        checkpoints.append(n_tokens)
    return all(token_times_s[n - 1] - t0 <= (1 + tolerance) * token_offset_s(slo, n) + 1e-9 for n in checkpoints)


def zero_load_prefill_s(cost_model: CostModel, prompt_tokens: int) -> float:
    """Predicted seconds to prefill ``prompt_tokens`` alone, in one batch on an idle device
    (SLOs-Serve's ``T(input_len, 0)``): what a TTFT slowdown multiplies."""
    p = prompt_tokens
    return cost_model.step_time(BatchShape(p, p, 1, 1, p * (p + 1) // 2))
