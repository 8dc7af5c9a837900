"""What one iteration runs (``StepPlan``) and what it produced (``StepResult``).

A plan covers one model: resident models take turns per iteration (DESIGN.md, decision 3).
Plans hold only plain data so that they can cross a process boundary.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from seallm.core.sampling_params import SamplingParams


@dataclass(frozen=True)
class SeqChunk:
    """One sequence's part of a ragged batch.

    Attributes:
        request_id: the request.
        token_ids: input tokens of this chunk (1 for a decode step, up to the token budget
            for a prefill chunk).
        start_pos: absolute position of ``token_ids[0]``; the first ``start_pos`` tokens are
            already in the KV cache.
        block_table: KV pages of the request in order, covering ``start_pos + len(token_ids)``
            tokens.
        sample: whether this chunk reaches the end of the known tokens, so the logits of its
            last position are sampled.
        params: sampling parameters (needed only when ``sample``).
        num_output_tokens: output tokens so far (seeds per-request generators consistently).
    """

    request_id: str
    token_ids: tuple[int, ...]
    start_pos: int
    block_table: tuple[int, ...]
    sample: bool
    params: SamplingParams
    num_output_tokens: int = 0

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def context_len(self) -> int:
        """Tokens attended to by the last query of the chunk (``start_pos + num_tokens``)."""
        return self.start_pos + len(self.token_ids)

    @property
    def is_decode(self) -> bool:
        return len(self.token_ids) == 1 and self.start_pos > 0


@dataclass(frozen=True)
class PageCopy:
    """KV pages to copy between the device pool and the host swap space (swap preemption).

    Attributes:
        to_host: True for a swap-out (device -> host), False for a swap-in (host -> device).
        pages: ``(source page, destination page)`` pairs; whole pages of ``page_size_bytes``.
    """

    to_host: bool
    pages: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class StepPlan:
    """One iteration of one model.

    Attributes:
        model: which resident model runs.
        seqs: chunks of the ragged batch (prefill chunks and decode tokens together).
        finished_ids: requests that finished or were aborted since the last plan (the
            executor drops their per-request state, e.g. seeded generators).
        swaps: page copies to perform, in this order, before the forward pass (pages a
            swap-out frees may be written by this very iteration).
    """

    model: str
    seqs: tuple[SeqChunk, ...]
    finished_ids: tuple[str, ...] = ()
    swaps: tuple[PageCopy, ...] = ()

    @property
    def num_tokens(self) -> int:
        """Tokens in the batch (the per-iteration token budget bounds this)."""
        return sum(len(s.token_ids) for s in self.seqs)

    @property
    def num_context_tokens(self) -> int:
        """KV tokens read by the batch's attention (sum of context lengths)."""
        return sum(s.context_len for s in self.seqs)


@dataclass(frozen=True)
class SampleOutput:
    """The token sampled for one sequence.

    Attributes:
        token_id: the sampled token.
        logprob: its log-probability under the model's raw distribution (None unless asked).
        top_logprobs: the most likely ``(token_id, logprob)`` pairs, best first.
    """

    token_id: int
    logprob: float | None = None
    top_logprobs: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class StepResult:
    """Output of one iteration.

    Attributes:
        model: the model that ran.
        samples: request id -> sampled token, for every chunk with ``sample=True``.
        step_time: seconds the iteration's forward pass took (measured or, in the simulator,
            predicted); what profiles and cost models learn from.
        swap_time: seconds spent on the plan's page copies (swap preemption), apart.
    """

    model: str
    samples: dict[str, SampleOutput] = field(default_factory=dict)
    step_time: float = 0.0
    swap_time: float = 0.0
