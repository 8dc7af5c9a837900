"""Compact messages between the HTTP front end and an engine-core process (msgpack via msgspec).

Front end -> engine: :class:`AddRequest`, :class:`AbortRequests`, :class:`LoadModel`,
:class:`UnloadModel`, :class:`Shutdown`.
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
    admission_mode: str | None = None  # "reject": refuse (429) if an SLO planner cannot guarantee it


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
    resident: bool = True  # at start; later changes arrive as ModelEvents
    pinned: bool = False


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
    rejected, 429 for a full waiting queue or a request an SLO planner refused (admission
    control), 500 for a request whose processing failed in the engine (it fails alone), 503
    when the engine process died. Times are engine ``time.time()`` seconds, sent with the
    final delta, as is ``admission`` ("guaranteed" or "best_effort", when an SLO planner
    decided).
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
    admission: str | None = None


class ModelStats(msgspec.Struct, array_like=True):
    running: int
    waiting: int
    kv_pages_used: int
    swapped: int = 0  # waiting requests whose KV is in host memory
    preemptions: int = 0  # since start (recompute and swap)
    swap_outs: int = 0  # since start
    resident: bool = True
    weights_bytes: int = 0  # on the device while resident
    concurrent_iterations: int = 0  # since start: iterations run beside another model's (CPU lanes)


class ModelEvent(msgspec.Struct, array_like=True, omit_defaults=True):
    """A model's residency changed on the replica.

    ``kind``: "loaded" (``source`` "host_cache" or "disk", ``seconds`` the load time,
    ``weights_bytes`` on the device), "unloaded", or "load_failed" (``error`` says why).
    """

    model: str
    kind: str
    source: str = ""
    seconds: float = 0.0
    weights_bytes: int = 0
    error: str | None = None


class LoadModel(msgspec.Struct, tag="load", array_like=True):
    """Make a model resident (``POST /v1/models/{name}/load``); answered by a ``ControlReply``
    once it is."""

    op_id: str
    model: str


class UnloadModel(msgspec.Struct, tag="unload", array_like=True):
    """Take a model off the device once its current requests finished (``force``: at once,
    aborting them); answered by a ``ControlReply`` once it is off."""

    op_id: str
    model: str
    force: bool = False


class ControlReply(msgspec.Struct, array_like=True, omit_defaults=True):
    """The end of a load or unload: ``error`` (with the HTTP ``status``) when it failed."""

    op_id: str
    error: str | None = None
    status: int = 200


class EngineOutputs(msgspec.Struct, tag="outputs", array_like=True):
    """Deltas of one iteration plus load statistics (per model), residency changes and
    finished control operations."""

    deltas: list[Delta]
    stats: dict[str, ModelStats] | None = None
    kv_pages_free: int = 0
    step_time: float = 0.0
    events: list[ModelEvent] = []
    replies: list[ControlReply] = []


class EngineError(msgspec.Struct, tag="error", array_like=True):
    """The engine failed to start (bad checkpoint, bad config); the process then exits."""

    message: str


ToEngine = AddRequest | AbortRequests | LoadModel | UnloadModel | Shutdown
FromEngine = Ready | EngineOutputs | EngineError
