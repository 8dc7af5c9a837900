"""A small fake OpenAI-compatible streaming server on 127.0.0.1 (free port), for client tests.

``POST /v1/completions`` streams ``max_tokens`` chunks then (if asked) a usage chunk and
``[DONE]``. Behaviour by model name:

- ``broken``: HTTP 500;
- ``dropper``: two token chunks, then the connection is closed without ``[DONE]``;
- ``nousage``: no usage chunk even if asked, and ``finish_reason`` comes in an extra chunk with
  empty text;
- ``slow``: waits 30 s before the first token;
- anything else: TTFT = ``ttft_base + ttft_per_token * len(prompt)``, then one chunk every
  ``tpot`` seconds.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading

import pytest
from aiohttp import web


class FakeOpenAIServer:
    def __init__(self, ttft_base: float = 0.005, ttft_per_token: float = 0.0001, tpot: float = 0.003,
                 api_key: str | None = None) -> None:
        self.ttft_base, self.ttft_per_token, self.tpot = ttft_base, ttft_per_token, tpot
        self.api_key = api_key
        self.bodies: list[dict] = []
        self.inflight = 0
        self.max_inflight = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"error": {"message": "bad key"}}, status=401)
        body = await request.json()
        with self._lock:
            self.bodies.append(body)
        model = body["model"]
        if model == "broken":
            return web.json_response({"error": {"message": "model is broken"}}, status=500)
        prompt = body["prompt"]
        n_prompt = len(prompt) if isinstance(prompt, list) else len(prompt.split()) + 1
        n_out = int(body["max_tokens"])
        usage = bool((body.get("stream_options") or {}).get("include_usage")) and model != "nousage"
        with self._lock:
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            await asyncio.sleep(30.0 if model == "slow" else self.ttft_base + self.ttft_per_token * n_prompt)
            for i in range(n_out):
                if i:
                    await asyncio.sleep(self.tpot)
                last = i == n_out - 1 and model != "nousage"
                chunk = {"id": "cmpl-1", "object": "text_completion", "model": model,
                         "choices": [{"index": 0, "text": f" t{i}", "finish_reason": "length" if last else None}]}
                await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
                if model == "dropper" and i == 1:
                    request.transport.close()
                    return resp
            if model == "nousage":  # finish_reason in a separate chunk with no text: not a token
                end = {"id": "cmpl-1", "object": "text_completion", "model": model,
                       "choices": [{"index": 0, "text": "", "finish_reason": "length"}]}
                await resp.write(f"data: {json.dumps(end)}\n\n".encode())
            if usage:
                u = {"id": "cmpl-1", "object": "text_completion", "model": model, "choices": [],
                     "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_out,
                               "total_tokens": n_prompt + n_out}}
                await resp.write(f"data: {json.dumps(u)}\n\n".encode())
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            return resp
        finally:
            with self._lock:
                self.inflight -= 1

    def start(self) -> FakeOpenAIServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        self.port = sock.getsockname()[1]
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def setup() -> None:
            app = web.Application()
            app.router.add_post("/v1/completions", self._completions)
            self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
            await self._runner.setup()
            await web.SockSite(self._runner, sock).start()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(setup())
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._runner.cleanup())
            self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert ready.wait(10), "fake server did not start"
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


@pytest.fixture
def fake_server():
    srv = FakeOpenAIServer().start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def make_fake_server():
    servers = []

    def make(**kw) -> FakeOpenAIServer:
        s = FakeOpenAIServer(**kw).start()
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()
