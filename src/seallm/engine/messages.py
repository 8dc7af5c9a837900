"""Compact messages between the HTTP front end and an engine-core process (msgpack via msgspec).

Front end -> engine: :class:`AddRequest`, :class:`AbortRequests`, :class:`Shutdown`.
Engine -> front end: :class:`Ready` once, then :class:`EngineOutputs` per iteration.
"""

from __future__ import annotations

import msgspec

from seallm.core import SLO, SamplingParams


class AddRequest(msgspec.Struct, tag="add", array_like=True):
    """Queue a request; ``arrival_time`` is the front end's ``time.time()`` (s)."""

    request_id: str
    model: str
    prompt_token_ids: list[int]
    params: SamplingParams
    arrival_time: float
    priority: int = 0
    slo: SLO | None = None


class AbortRequests(msgspec.Struct, tag="abort", array_like=True):
    """End requests now and free their KV pages (client gone, or a stop string matched)."""

    request_ids: list[str]
    reason: str = "abort"


class Shutdown(msgspec.Struct, tag="shutdown", array_like=True):
    """Stop the engine loop and exit."""


class ModelInfo(msgspec.Struct, array_like=True):
    """What the front end must know of a served model."""

    name: str
    path: str
    architecture: str
    max_model_len: int
    vocab_size: int
    kv_capacity_tokens: int


class Ready(msgspec.Struct, tag="ready", array_like=True):
    """The engine loaded its models and accepts requests."""

    models: list[ModelInfo]
    scheduling_policy: str
    num_pages: int
    page_size_bytes: int


class Delta(msgspec.Struct, array_like=True, omit_defaults=True):
    """New output of one request since the last message.

    ``logprobs`` holds one ``(logprob, [(token_id, logprob), ...])`` per new token when asked.
    ``error`` is set when the request failed (then ``finish_reason`` is "abort"), with the
    HTTP status the front end answers in ``error_status``: 400 for a request the engine
    rejected, 429 for a full waiting queue (admission control), 500 for a request whose
    processing failed in the engine (it fails alone), 503 when the engine process died.
    Times are engine ``time.time()`` seconds, sent with the final delta.
    """

    request_id: str
    token_ids: list[int]
    logprobs: list[tuple[float, list[tuple[int, float]]]] | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    error: str | None = None
    first_scheduled_time: float | None = None
    num_preemptions: int = 0
    error_status: int = 400


class ModelStats(msgspec.Struct, array_like=True):
    running: int
    waiting: int
    kv_pages_used: int
    swapped: int = 0  # waiting requests whose KV is in host memory
    preemptions: int = 0  # since start (recompute and swap)
    swap_outs: int = 0  # since start


class EngineOutputs(msgspec.Struct, tag="outputs", array_like=True):
    """Deltas of one iteration plus load statistics (per model)."""

    deltas: list[Delta]
    stats: dict[str, ModelStats] | None = None
    kv_pages_free: int = 0
    step_time: float = 0.0


class EngineError(msgspec.Struct, tag="error", array_like=True):
    """The engine failed to start (bad checkpoint, bad config); the process then exits."""

    message: str


ToEngine = AddRequest | AbortRequests | Shutdown
FromEngine = Ready | EngineOutputs | EngineError
