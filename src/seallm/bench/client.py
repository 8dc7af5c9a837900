"""Open-loop load client for an OpenAI-compatible ``/v1/completions`` endpoint.

Requests are sent at their scheduled arrival times whatever the server's speed (open loop),
streamed as server-sent events, and recorded one :class:`~seallm.bench.records.RequestRecord`
each. A failed request is recorded with its error; it never stops the run. The whole replay
is bounded by ``ClientConfig.timeout_s``.

Request body: ``{"model", "prompt", "max_tokens": output_len, "stream": true,
"stream_options": {"include_usage": true}, "ignore_eos": true}``; ``ignore_eos`` is a vLLM
extension (also accepted by the seallm server) that makes the server generate exactly
``max_tokens`` tokens. A workload request with an ``slo`` also sends it (seallm's per-request
SLO extension), and the ``admission`` verdict of seallm's SLO planner in the final chunk is
recorded.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp

from seallm.bench.prompts import PromptSource
from seallm.bench.records import RequestRecord
from seallm.bench.sse import SSEDecoder
from seallm.bench.workload import BenchRequest

__all__ = ["ClientConfig", "replay", "replay_sync"]

#: Default slack after the last scheduled arrival before the replay is cut (s).
DEFAULT_TIMEOUT_SLACK_S = 600.0


@dataclass(frozen=True)
class ClientConfig:
    """Load-client settings.

    ``base_url``: server root, e.g. ``http://127.0.0.1:8000`` (``/v1/completions`` is added).
    ``api_key``: sent as ``Authorization: Bearer <key>`` when set.
    ``timeout_s``: bound on the whole replay, s (None = last arrival + 600 s); requests still
    running then are recorded as failed, requests not yet sent as not sent.
    ``request_timeout_s``: bound on one request, s (None = only the run bound).
    ``max_concurrency``: most requests in flight; later ones wait in the client, in order.
    ``progress``: show a tqdm progress bar on stderr. ``ignore_eos``: send ``ignore_eos: true``.
    ``extra_body``: more JSON fields for every request (e.g. ``{"temperature": 0}``).
    """

    base_url: str = "http://127.0.0.1:8000"
    api_key: str | None = None
    timeout_s: float | None = None
    request_timeout_s: float | None = None
    max_concurrency: int | None = None
    progress: bool = True
    ignore_eos: bool = True
    endpoint: str = "/v1/completions"
    extra_body: tuple[tuple[str, object], ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {self.base_url!r}")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise ValueError(f"timeout must be > 0 s, got {self.timeout_s}")
        if self.request_timeout_s is not None and not self.request_timeout_s > 0:
            raise ValueError(f"request timeout must be > 0 s, got {self.request_timeout_s}")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError(f"max concurrency must be >= 1, got {self.max_concurrency}")

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + "/" + self.endpoint.lstrip("/")


class _Probe:
    """Mutable state of one request while it is in flight (becomes a RequestRecord)."""

    __slots__ = ("index", "req", "sent", "first", "finish", "times", "chunks", "usage_in",
                 "usage_out", "finish_reason", "error", "done", "final_time", "admission")

    def __init__(self, index: int, req: BenchRequest) -> None:
        self.index, self.req = index, req
        self.sent: float | None = None
        self.first: float | None = None
        self.finish: float | None = None
        self.times: list[float] = []
        self.chunks = 0
        self.usage_in: int | None = None
        self.usage_out: int | None = None
        self.finish_reason: str | None = None
        self.error: str | None = None
        self.done = False
        self.final_time: float | None = None  # an empty final chunk that came before any token
        self.admission: str | None = None  # seallm's SLO planner verdict (final chunk)

    def on_event(self, data: str, now: float) -> None:
        if data.strip() == "[DONE]":
            self.done = True
            return
        try:
            obj = json.loads(data)
        except json.JSONDecodeError:
            self.error = f"bad SSE payload: {data[:200]!r}"
            return
        if not isinstance(obj, dict):
            self.error = f"bad SSE payload: {data[:200]!r}"
            return
        if obj.get("error"):
            err = obj["error"]
            msg = err.get("message", err) if isinstance(err, dict) else err
            self.error = f"server error: {str(msg)[:300]}"
            return
        if isinstance(obj.get("admission"), str):
            self.admission = obj["admission"]
        choices = obj.get("choices") or []
        if choices and isinstance(choices[0], dict):
            c = choices[0]
            text = c.get("text") or ""
            reason = c.get("finish_reason")
            # A token chunk carries text; a chunk with empty text is still a token unless it
            # is only the final finish_reason marker.
            if text or reason is None:
                if self.first is None:
                    self.first = now
                self.times.append(now)
                self.chunks += 1
            elif self.first is None:
                # An empty final chunk before any token: the only token of a model without a
                # tokenizer (no text); counted once usage confirms it (see record()).
                self.final_time = now
            if reason:
                self.finish_reason = str(reason)
        usage = obj.get("usage")
        if isinstance(usage, dict):
            if usage.get("prompt_tokens") is not None:
                self.usage_in = int(usage["prompt_tokens"])
            if usage.get("completion_tokens") is not None:
                self.usage_out = int(usage["completion_tokens"])

    def record(self, sent_len: int) -> RequestRecord:
        if self.first is None and self.final_time is not None and (self.usage_out or 0) >= 1:
            self.first = self.final_time
            self.times.append(self.final_time)
            self.chunks += 1
        error = self.error
        if error is None and self.sent is None:
            error = "not sent"
        if error is None and self.first is None:
            error = "no token received"
        return RequestRecord(
            index=self.index,
            model=self.req.model,
            input_len=self.req.input_len,
            output_len=self.req.output_len,
            scheduled_s=self.req.arrival_s,
            sent_s=self.sent,
            first_token_s=self.first,
            finish_s=self.finish,
            tokens_in=self.usage_in if self.usage_in is not None else sent_len,
            tokens_out=self.usage_out if self.usage_out is not None else self.chunks,
            token_times_s=tuple(self.times),
            finish_reason=self.finish_reason,
            error=error,
            admission=self.admission,
        )


def _body(req: BenchRequest, prompt: list[int] | str, cfg: ClientConfig) -> dict:
    body: dict = {
        "model": req.model,
        "prompt": prompt,
        "max_tokens": req.output_len,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if cfg.ignore_eos:
        body["ignore_eos"] = True
    if req.slo is not None:  # seallm's per-request SLO (only when the workload carries one)
        body["slo"] = {k: v for k, v in vars(req.slo).items() if v is not None and v != 0}
    body.update(dict(cfg.extra_body))
    return body


async def _send(session: aiohttp.ClientSession, cfg: ClientConfig, probe: _Probe, prompt, clock) -> None:
    headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
    probe.sent = clock()
    try:
        async with session.post(cfg.url, json=_body(probe.req, prompt, cfg), headers=headers) as resp:
            if resp.status != 200:
                text = (await resp.text(errors="replace"))[:300]
                probe.error = f"HTTP {resp.status}: {text}"
                probe.finish = clock()
                return
            dec = SSEDecoder()
            async for chunk in resp.content.iter_any():
                now = clock()
                for data in dec.feed(chunk):
                    probe.on_event(data, now)
                if probe.done or probe.error:
                    break
            if not probe.done and not probe.error:
                for data in dec.flush():
                    probe.on_event(data, clock())
            probe.finish = clock()
            if not probe.done and probe.error is None:
                probe.error = "stream ended before [DONE]"
    except asyncio.CancelledError:
        probe.error = "cancelled: run timeout"
        raise
    except asyncio.TimeoutError:
        probe.error = "request timeout"
    except (aiohttp.ClientError, OSError, ValueError) as e:
        probe.error = f"{type(e).__name__}: {e}"[:300]


async def replay(
    requests: Sequence[BenchRequest],
    prompts: PromptSource,
    cfg: ClientConfig,
    *,
    index_offset: int = 0,
    desc: str = "bench",
) -> list[RequestRecord]:
    """Send ``requests`` at their ``arrival_s`` (s after start) and record each one.

    ``prompts.prompt(index_offset + i, input_len)`` gives request i's prompt. Returns one
    record per request, in the order given. Never raises for a failed request; raises
    ``ValueError`` only for an empty request list.
    """
    if not requests:
        raise ValueError("no request to send")
    from tqdm import tqdm  # imported here: only the client needs it

    probes = [_Probe(i, r) for i, r in enumerate(requests)]
    last_arrival = max(r.arrival_s for r in requests)
    budget = cfg.timeout_s if cfg.timeout_s is not None else last_arrival + DEFAULT_TIMEOUT_SLACK_S
    sem = asyncio.Semaphore(cfg.max_concurrency) if cfg.max_concurrency else None
    bar = tqdm(total=len(probes), desc=desc, unit="req", disable=not cfg.progress, file=sys.stderr,
               dynamic_ncols=True)
    failed = 0
    tasks: list[asyncio.Task] = []
    t0 = time.perf_counter()

    def clock() -> float:
        return time.perf_counter() - t0

    async def one(p: _Probe, session: aiohttp.ClientSession) -> None:
        nonlocal failed
        try:
            prompt = prompts.prompt(index_offset + p.index, p.req.input_len)
            await _send(session, cfg, p, prompt, clock)
        finally:
            if sem is not None:
                sem.release()
            if p.error is not None:
                failed += 1
                bar.set_postfix(failed=failed, refresh=False)
            bar.update(1)

    timeout = aiohttp.ClientTimeout(total=cfg.request_timeout_s)
    connector = aiohttp.TCPConnector(limit=cfg.max_concurrency or 0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def dispatch() -> None:
            for p in probes:
                delay = p.req.arrival_s - clock()
                if delay > 0:
                    await asyncio.sleep(delay)
                if sem is not None:
                    await sem.acquire()
                tasks.append(asyncio.create_task(one(p, session)))
            await asyncio.gather(*tasks)

        try:
            await asyncio.wait_for(dispatch(), timeout=budget)
        except asyncio.TimeoutError:
            pass
        finally:
            for t in tasks:
                t.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
    for p in probes:
        if p.sent is None and p.error is None:
            p.error = "not sent: run timeout"
            bar.update(1)
    bar.close()
    return [p.record(p.req.input_len) for p in probes]


def replay_sync(requests: Sequence[BenchRequest], prompts: PromptSource, cfg: ClientConfig, **kw) -> list[RequestRecord]:
    """:func:`replay` in a fresh event loop (raises ``RuntimeError`` inside a running loop)."""
    return asyncio.run(replay(requests, prompts, cfg, **kw))
