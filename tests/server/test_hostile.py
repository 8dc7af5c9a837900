"""Hostile clients (issue 8): every hostile request gets a 4xx in the OpenAI error format, and
costs nobody else anything.

Each case asserts:
  - the expected status (400 for an invalid value, 404 for an unknown model, 413 for a too
    large body), never a 5xx, with a body ``{"error": {"message", "type", "param", "code"}}``;
  - the keep-alive connection of the hostile client still serves its next request;
  - bystander streams (one per model, 200 tokens each, EOS ignored) that were in flight while
    the hostile request was handled finish intact: ``finish_reason == "length"`` and exactly
    200 tokens;
  - the engine process is the same (same PID, still running) and ``/health`` answers 200.

Two servers: one with default limits for most cases (module scoped), one with small limits,
an API key and request chat templates allowed.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import threading
import time

import httpx
import psutil
import pytest

from tests.server.conftest import start_server, stop_server, wait_for_no_pages

MODELS = ("llama", "qwen2")
BYSTANDER_TOKENS = 200
GOOD = {"model": "llama", "prompt": "hi", "max_tokens": 2}
CHAT = {"model": "llama", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 2}
LOOP_TEMPLATE = ("{% for i in range(100000) %}{% for j in range(100000) %}{% for k in range(100000) %}"
                 "{% endfor %}{% endfor %}{% endfor %}{{ messages[0]['content'] }}")


# ---- the engine process -----------------------------------------------------------------------
def engine_process(server_pid: int) -> psutil.Process:
    """The engine-core process: the server's oldest ``multiprocessing`` spawn child (the
    engine starts before any other helper process of the front end)."""
    kids = [p for p in psutil.Process(server_pid).children()
            if any("spawn_main" in part for part in p.cmdline())]
    assert kids, "no engine process found"
    return min(kids, key=lambda p: p.create_time())


def assert_same_engine(srv: "Server") -> None:
    assert srv.engine.is_running(), f"the engine process {srv.engine.pid} is gone"
    now = engine_process(srv.proc.pid)
    assert now.pid == srv.engine.pid, f"the engine process changed: {srv.engine.pid} -> {now.pid}"
    r = httpx.get(srv.base + "/health", timeout=10)
    assert r.status_code == 200, (r.status_code, r.text)


# ---- bystanders --------------------------------------------------------------------------------
class _Stream:
    def __init__(self, model: str) -> None:
        self.model = model
        self.tokens = 0  # completions stream one chunk per token
        self.usage: dict | None = None
        self.finish_reason: str | None = None
        self.error: str | None = None
        self.max_gap = 0.0
        self.cases: list[str] = []  # the hostile cases this stream was in flight for
        self.done = threading.Event()

    def intact(self) -> bool:
        return (self.error is None and self.finish_reason == "length" and self.tokens == BYSTANDER_TOKENS
                and self.usage is not None and self.usage["completion_tokens"] == BYSTANDER_TOKENS)

    def __repr__(self) -> str:
            return (f"<bystander {self.model}: tokens={self.tokens} usage={self.usage} finish={self.finish_reason} "
                f"error={self.error}>")


class Bystander(threading.Thread):
    """Streams 200-token completions on one model, one after another, until stopped."""

    def __init__(self, base: str, model: str, headers: dict | None = None) -> None:
        super().__init__(daemon=True, name=f"bystander-{model}")
        self.base, self.model, self.headers = base, model, headers or {}
        self.current: _Stream | None = None
        self.history: list[_Stream] = []
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        self.join(60)

    def run(self) -> None:
        body = {"model": self.model, "prompt": "a bystander's long story", "max_tokens": BYSTANDER_TOKENS,
                "ignore_eos": True, "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
        with httpx.Client(timeout=120, headers=self.headers) as c:
            while not self._halt.is_set():
                s = _Stream(self.model)
                self.current = s
                self.history.append(s)
                try:
                    with c.stream("POST", self.base + "/v1/completions", json=body) as r:
                        if r.status_code != 200:
                            s.error = f"HTTP {r.status_code}: {r.read()[:300]!r}"
                            continue
                        last = time.monotonic()
                        for line in r.iter_lines():
                            if not line.startswith("data: ") or line == "data: [DONE]":
                                continue
                            now = time.monotonic()
                            s.max_gap, last = max(s.max_gap, now - last), now
                            d = json.loads(line[6:])
                            if "error" in d:
                                s.error = f"error event: {d['error']}"
                                continue
                            if d.get("usage"):
                                s.usage = d["usage"]
                            for ch in d.get("choices", []):
                                s.tokens += 1
                                if ch.get("finish_reason"):
                                    s.finish_reason = ch["finish_reason"]
                except Exception as e:  # noqa: BLE001 - recorded, asserted by the cases
                    s.error = f"{type(e).__name__}: {e}"
                finally:
                    s.done.set()
                if s.error:
                    time.sleep(0.2)  # do not spin on a dead server


class Server:
    def __init__(self, proc, base: str, log: str, headers: dict | None = None,
                 bystander_models: tuple[str, ...] = MODELS) -> None:
        self.proc, self.base, self.log, self.headers = proc, base, log, headers or {}
        self.engine = engine_process(proc.pid)
        self.bystanders = {m: Bystander(base, m, self.headers) for m in bystander_models}
        for b in self.bystanders.values():
            b.start()

    def log_tail(self, n: int = 3000) -> str:
        with open(self.log, errors="replace") as f:
            return f.read()[-n:]

    def in_flight(self, timeout: float = 30.0) -> list[_Stream]:
        """The bystander streams now generating (at least one token, well before their end)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            cur = [b.current for b in self.bystanders.values()]
            if all(s is not None and not s.done.is_set() and 1 <= s.tokens <= BYSTANDER_TOKENS * 3 // 4
                   for s in cur):
                return cur
            time.sleep(0.005)
        raise AssertionError(f"bystanders not streaming: {[b.current for b in self.bystanders.values()]}\n"
                             f"{self.log_tail()}")

    @contextlib.contextmanager
    def guarded(self, case: str | None = None):
        """Around a hostile request: the bystander streams in flight during it go on (checked
        here) and finish intact (checked here for those already finished, at the end of the
        module for the others: ``test_*_bystanders_intact``), and the engine process is the
        same afterwards."""
        case = case or os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0].split("::")[-1]
        streams = self.in_flight()
        yield
        streams += [b.current for b in self.bystanders.values() if b.current not in streams]
        marks = {id(s): s.tokens for s in streams}
        for s in streams:
            s.cases.append(case)
        # Survived: the stream is finished, or has produced more tokens since the request.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(
                s.done.is_set() or (s.tokens >= marks[id(s)] + 3 and s.error is None) for s in streams):
            time.sleep(0.005)
        stuck = [s for s in streams if not (s.done.is_set() or s.tokens >= marks[id(s)] + 3)]
        assert not stuck, f"bystander streams stalled after the hostile request: {stuck}"
        broken = [s for s in streams if s.error is not None or (s.done.is_set() and not s.intact())]
        assert not broken, f"bystander streams broken by the hostile request: {broken}"
        assert_same_engine(self)

    def assert_bystanders_intact(self) -> None:
        """Stop the bystanders; every stream they ran finished intact."""
        for b in self.bystanders.values():
            b._halt.set()
        for b in self.bystanders.values():
            b.join(120)
        streams = [s for b in self.bystanders.values() for s in b.history]
        broken = [(s, s.cases) for s in streams if s.done.is_set() and not s.intact()]
        assert not broken, f"bystander streams broken (with the cases they overlapped): {broken}"
        assert len(streams) >= 2

    def close(self) -> int:
        """Stop the bystanders and the server; its exit code. Whatever of it still runs after
        (the server, its engine) is killed."""
        for b in self.bystanders.values():
            b._halt.set()
        procs = [psutil.Process(self.proc.pid)]
        with contextlib.suppress(psutil.Error):
            procs += procs[0].children(recursive=True)
        try:
            return stop_server(self.proc)
        finally:
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    p.kill()
            for b in self.bystanders.values():
                b.join(10)


@pytest.fixture(scope="module")
def srv(checkpoints, tmp_path_factory):
    log = str(tmp_path_factory.mktemp("hostile") / "server.log")
    # fcfs: both models take turns every iteration, so a bystander stream never waits behind the
    # other bystander's next (fresher) stream, as it may under seallm until aging lifts it.
    proc, base = start_server({m: checkpoints[m] for m in MODELS}, "--scheduling-policy", "fcfs", log_path=log)
    try:
        s = Server(proc, base, log)
    except BaseException:
        proc.kill()
        raise
    yield s
    assert s.close() == 0, s.log_tail()


def assert_error(r: httpx.Response, status: int | tuple[int, ...]) -> None:
    statuses = (status,) if isinstance(status, int) else status
    assert r.status_code < 500, f"5xx: {r.status_code} {r.text[:500]}"
    assert r.status_code in statuses, f"expected {statuses}, got {r.status_code} {r.text[:500]}"
    if r.status_code >= 400:
        assert r.headers.get("content-type", "").startswith("application/json"), r.headers
        err = r.json()["error"]
        assert set(err) >= {"message", "type", "param", "code"}, err
        assert isinstance(err["message"], str) and err["message"], err


def post(c: httpx.Client, path: str, body, **kw) -> httpx.Response:
    if isinstance(body, (bytes, str)):
        return c.post(path, content=body, headers={"content-type": "application/json"}, **kw)
    return c.post(path, json=body, **kw)


def raw(obj: dict, **fields: str) -> bytes:
    """``obj`` as JSON with some fields set to raw JSON text (NaN, Infinity, 1e400, big ints)."""
    text = json.dumps(obj)[:-1]
    for k, v in fields.items():
        text += f', "{k}": {v}'
    return (text + "}").encode()


# ---- the cases of the issue --------------------------------------------------------------------
def _chat(**kw) -> dict:
    return dict(CHAT, **kw)


def _ctk(**kw) -> dict:
    return _chat(chat_template_kwargs=kw)


def _chat_raw(**fields: str) -> bytes:
    return raw(CHAT, **fields)


# (id, path, body, expected status(es)); the hostile request goes to "llama" unless its body
# says otherwise, the bystanders stream on both models.
CASES = [
    # (1) chat_template_kwargs that change what apply_chat_template returns, or set its own
    #     parameters; a request-supplied template is refused by default.
    ("ctk return_dict", "/v1/chat/completions", _ctk(return_dict=True), 400),
    ("ctk return_tensors pt", "/v1/chat/completions", _ctk(return_tensors="pt"), 400),
    ("ctk return_tensors np", "/v1/chat/completions", _ctk(return_tensors="np"), 400),
    ("ctk tokenize false", "/v1/chat/completions", _ctk(tokenize=False), 400),
    ("ctk tokenize true", "/v1/chat/completions", _ctk(tokenize=True), 400),
    ("ctk padding", "/v1/chat/completions", _ctk(padding="max_length", max_length=2000), 400),
    ("ctk truncation", "/v1/chat/completions", _ctk(truncation=True, max_length=1), 400),
    ("ctk return_assistant_tokens_mask", "/v1/chat/completions", _ctk(return_assistant_tokens_mask=True), 400),
    ("ctk tokenizer_kwargs", "/v1/chat/completions", _ctk(tokenizer_kwargs={"add_special_tokens": "x"}), 400),
    ("ctk conversation", "/v1/chat/completions", _ctk(conversation=[]), 400),
    ("ctk messages", "/v1/chat/completions", _ctk(messages="x"), 400),
    ("ctk tools", "/v1/chat/completions", _ctk(tools="not a list"), 400),
    ("ctk add_generation_prompt", "/v1/chat/completions", _ctk(add_generation_prompt="yes"), 400),
    ("ctk continue_final_message not bool", "/v1/chat/completions", _ctk(continue_final_message="yes"), 400),
    ("ctk continue_final_message after user", "/v1/chat/completions", _ctk(continue_final_message=True),
     (200, 400)),
    ("ctk documents not a list", "/v1/chat/completions", _ctk(documents=5), (200, 400)),
    ("ctk unknown variable", "/v1/chat/completions", _ctk(enable_thinking=True, foo={"a": [1]}), 200),
    ("ctk chat_template refused", "/v1/chat/completions", _ctk(chat_template=LOOP_TEMPLATE), 400),
    ("ctk chat_template not a string", "/v1/chat/completions", _ctk(chat_template=["x"]), 400),
    ("chat_template_kwargs not an object", "/v1/chat/completions", _chat(chat_template_kwargs=[1, 2]), 400),
    ("message extra fields break the template", "/v1/chat/completions",
     _chat(messages=[{"role": "user", "content": "x", "tool_calls": "nonsense", "name": {"a": 1}}]), (200, 400)),
    ("message role not a string", "/v1/chat/completions", _chat(messages=[{"role": 5, "content": "x"}]), 400),
    ("message content part not text", "/v1/chat/completions",
     _chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]), 400),
    ("10000 messages", "/v1/chat/completions",
     _chat(messages=[{"role": "user", "content": "x"}] * 10000), 400),
    # (2) non-finite sampling floats (JSON NaN / Infinity and an overflowing literal).
    *[(f"{field} {lit}", "/v1/completions", raw(GOOD, **{field: lit}), 400)
      for field in ("temperature", "top_p", "min_p") for lit in ("NaN", "Infinity", "-Infinity", "1e400")],
    ("chat temperature NaN", "/v1/chat/completions", _chat_raw(temperature="NaN"), 400),
    ("chat top_p Infinity", "/v1/chat/completions", _chat_raw(top_p="Infinity"), 400),
    ("presence_penalty NaN", "/v1/completions", raw(GOOD, presence_penalty="NaN"), 400),
    ("slo ttft NaN", "/v1/completions", raw(GOOD, slo='{"ttft": NaN}'), 400),
    ("logit_bias NaN", "/v1/completions", raw(GOOD, logit_bias='{"5": NaN}'), 400),
    ("stream temperature NaN", "/v1/completions", raw(dict(GOOD, stream=True), temperature="NaN"), 400),
    # (3) integers outside the engine's native ranges.
    ("seed 2**64+5", "/v1/completions", dict(GOOD, seed=2**64 + 5), 400),
    ("seed -2**64", "/v1/completions", dict(GOOD, seed=-2**64), 400),
    ("seed -1", "/v1/completions", dict(GOOD, seed=-1), (200, 400)),
    ("seed 2**64-1 n=4", "/v1/completions", dict(GOOD, seed=2**64 - 1, n=4), 400),
    ("seed int64 max n=4", "/v1/completions", dict(GOOD, seed=2**63 - 1, n=4), (200, 400)),
    ("seed int64 min", "/v1/completions", dict(GOOD, seed=-2**63), (200, 400)),
    ("seed 10**400", "/v1/completions", raw(GOOD, seed="1" + "0" * 400), 400),
    ("priority 10**30", "/v1/completions", dict(GOOD, priority=10**30), 400),
    ("priority -10**30", "/v1/completions", dict(GOOD, priority=-10**30), 400),
    ("priority int64 min", "/v1/completions", dict(GOOD, priority=-2**63), (200, 400)),
    ("top_k 2**63", "/v1/completions", dict(GOOD, top_k=2**63), 400),
    ("top_k 2**31", "/v1/completions", dict(GOOD, top_k=2**31), 400),
    ("top_k -2", "/v1/completions", dict(GOOD, top_k=-2), 400),
    ("top_k int32 max", "/v1/completions", dict(GOOD, top_k=2**31 - 1), (200, 400)),
    ("max_tokens 10**30", "/v1/completions", dict(GOOD, max_tokens=10**30), 400),
    ("max_tokens 2**63", "/v1/completions", dict(GOOD, max_tokens=2**63), 400),
    ("chat max_completion_tokens 10**30", "/v1/chat/completions", _chat(max_completion_tokens=10**30), 400),
    ("logprobs 10**30", "/v1/completions", dict(GOOD, logprobs=10**30), 400),
    ("logprobs -1", "/v1/completions", dict(GOOD, logprobs=-1), 400),
    ("chat top_logprobs 10**30", "/v1/chat/completions", _chat(logprobs=True, top_logprobs=10**30), 400),
    ("n 10**30", "/v1/completions", dict(GOOD, n=10**30), 400),
    ("n 0", "/v1/completions", dict(GOOD, n=0), 400),
    ("best_of 10**30", "/v1/completions", dict(GOOD, best_of=10**30), 400),
    ("stop_token_ids 2**40", "/v1/completions", dict(GOOD, stop_token_ids=[2**40]), 400),
    ("stop_token_ids -1", "/v1/completions", dict(GOOD, stop_token_ids=[-1]), 400),
    ("prompt token 2**70", "/v1/completions", dict(GOOD, prompt=[5, 2**70]), 400),
    ("prompt token -1", "/v1/completions", dict(GOOD, prompt=[5, -1]), 400),
    ("prompt token int64 min", "/v1/completions", dict(GOOD, prompt=[-2**63]), 400),
    ("slo e2e 1e308*10", "/v1/completions", raw(GOOD, slo='{"e2e": 1e309}'), 400),
    # (5) admission: too many sequences in one request, too large bodies.
    ("1000 prompts x n=16", "/v1/completions", dict(GOOD, prompt=["x"] * 1000, n=16), 400),
    ("300 prompts", "/v1/completions", dict(GOOD, prompt=["x"] * 300), 400),
    ("300 token prompts", "/v1/completions", dict(GOOD, prompt=[[5, 6]] * 300), 400),
    ("chat n=16 x 17", "/v1/chat/completions", _chat(n=17), 400),
    ("10 MB body", "/v1/completions", dict(GOOD, prompt="x" * (10 << 20)), 413),
    ("1 MB prompt", "/v1/completions", dict(GOOD, prompt="hello " * (1 << 17)), 400),
    ("many stop strings", "/v1/completions", dict(GOOD, stop=["x"] * 1000), 400),
    ("long stop string", "/v1/completions", dict(GOOD, stop=["y" * 100_000]), (200, 400)),
    # Malformed bodies.
    ("deeply nested JSON", "/v1/completions", b'{"model": "llama", "prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
     400),
    ("not UTF-8", "/v1/completions", b'{"model": "llama", "prompt": "\xff\xfe\xfa"}', 400),
    ("lone surrogate in prompt", "/v1/completions", b'{"model": "llama", "prompt": "a\\ud800b", "max_tokens": 2}',
     (200, 400)),
    ("lone surrogate in chat", "/v1/chat/completions",
     b'{"model": "llama", "messages": [{"role": "user", "content": "\\udfff"}], "max_tokens": 2}', (200, 400)),
    ("NUL in prompt", "/v1/completions", dict(GOOD, prompt="a\x00b"), 200),
    ("duplicate keys", "/v1/completions", b'{"model": "llama", "model": "nope", "prompt": "x", "max_tokens": 2}',
     (200, 404)),
    ("empty body", "/v1/completions", b"", 400),
    ("JSON null", "/v1/completions", b"null", 400),
    ("JSON string", "/v1/completions", b'"hello"', 400),
    ("model not a string", "/v1/completions", dict(GOOD, model=["llama"]), 400),
    ("unknown model", "/v1/completions", dict(GOOD, model="../../etc/passwd"), 404),
    ("model with NUL", "/v1/completions", dict(GOOD, model="llama\x00"), 404),
]


@pytest.mark.parametrize("name,path,body,status", CASES, ids=[c[0] for c in CASES])
def test_hostile_request(srv, name, path, body, status):
    with srv.guarded():
        with httpx.Client(base_url=srv.base, timeout=60, limits=httpx.Limits(max_connections=1)) as c:
            r = post(c, path, body)
            assert_error(r, status)
            if r.status_code in (400, 404):
                assert r.headers.get("connection", "").lower() != "close", "a 4xx closed the keep-alive connection"
            # The same client (same connection when kept alive) is served next.
            ok = post(c, "/v1/completions", GOOD)
            assert ok.status_code == 200, ok.text


def test_nan_at_the_other_model(srv):
    """A NaN request at qwen2 while both bystanders stream (the other direction of the class-2 case)."""
    with srv.guarded(), httpx.Client(base_url=srv.base, timeout=60) as c:
        for field in ("temperature", "top_p", "min_p"):
            assert_error(post(c, "/v1/completions", raw(dict(GOOD, model="qwen2"), **{field: "NaN"})), 400)


def test_chunked_10mb_body_is_413(srv):
    """A chunked body (no Content-Length) is counted as it arrives and refused past the limit."""
    def chunks():
        yield b'{"model": "llama", "prompt": "'
        for _ in range(160):
            yield b"x" * 65536
        yield b'"}'

    with srv.guarded(), httpx.Client(base_url=srv.base, timeout=60) as c:
        try:
            r = c.post("/v1/completions", content=chunks(), headers={"content-type": "application/json"})
        except httpx.HTTPError:
            return  # the server may close the connection after its 413, before the body is sent
        assert_error(r, 413)


def test_lying_content_length(srv):
    """A Content-Length larger than the limit is refused before the body is read."""
    import socket
    from urllib.parse import urlsplit

    u = urlsplit(srv.base)
    body = json.dumps(GOOD).encode()
    with srv.guarded(), socket.create_connection((u.hostname, u.port), timeout=30) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(1 << 40).encode() + b"\r\n\r\n" + body)
        head = sock.recv(65536).split(b"\r\n", 1)[0]
        assert head.startswith(b"HTTP/1.1 413"), head


def test_concurrent_hostile_burst(srv):
    """50 hostile requests of every class at once, on both models, while the bystanders stream."""
    bodies = []
    for i in range(50):
        model = MODELS[i % 2]
        bodies.append([raw(dict(GOOD, model=model), temperature="NaN"),
                       dict(GOOD, model=model, seed=2**64 + i),
                       dict(CHAT, model=model, chat_template_kwargs={"return_dict": True}),
                       dict(GOOD, model=model, top_k=2**63),
                       dict(GOOD, model=model, prompt=["x"] * 300, n=16)][i % 5])
    with srv.guarded():
        with httpx.Client(base_url=srv.base, timeout=60, limits=httpx.Limits(max_connections=50)) as c:
            with concurrent.futures.ThreadPoolExecutor(16) as ex:
                rs = list(ex.map(lambda b: post(c, "/v1/chat/completions" if isinstance(b, dict) and "messages" in b
                                               else "/v1/completions", b), bodies))
        for r in rs:
            assert_error(r, 400)


def test_client_disconnects_during_tokenization(srv):
    """A client that sends a large prompt and leaves at once: nothing leaks."""
    with srv.guarded():
        for _ in range(3):
            with httpx.Client(base_url=srv.base, timeout=0.05) as c:
                with contextlib.suppress(httpx.HTTPError):
                    c.post("/v1/completions", json=dict(GOOD, prompt="story " * 100_000, max_tokens=50))


# ---- class 9: the API surface -----------------------------------------------------------------
def test_retrieve_model(srv, checkpoints):
    import openai

    c = openai.OpenAI(base_url=srv.base + "/v1", api_key="unused", max_retries=0, timeout=30)
    m = c.models.retrieve("llama")
    assert m.id == "llama"
    with pytest.raises(openai.NotFoundError):
        c.models.retrieve("gpt-17")
    r = httpx.get(srv.base + "/v1/models/gpt-17", timeout=60)
    assert_error(r, 404)


def test_models_do_not_expose_paths(srv, checkpoints):
    text = (httpx.get(srv.base + "/v1/models", timeout=60).text
            + httpx.get(srv.base + "/v1/models/llama", timeout=60).text)
    for m in MODELS:
        assert checkpoints[m] not in text
    assert "/" not in "".join(d["root"] or "" for d in httpx.get(srv.base + "/v1/models", timeout=60).json()["data"])


def test_health_is_json(srv):
    r = httpx.get(srv.base + "/health", timeout=60)
    assert r.status_code == 200
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    assert isinstance(r.json(), dict)


def test_openapi_documents_400_not_422(srv):
    schema = httpx.get(srv.base + "/openapi.json", timeout=60).json()
    for path in ("/v1/completions", "/v1/chat/completions"):
        responses = schema["paths"][path]["post"]["responses"]
        assert "400" in responses and "422" not in responses, (path, sorted(responses))
        for code in ("413", "429"):
            assert code in responses, (path, sorted(responses))
    assert "404" in schema["paths"]["/v1/models/{model_id}"]["get"]["responses"]


def test_bystanders_intact_and_no_pages_left(srv):
    """After all the cases: every bystander stream finished intact, the KV pool is empty, the
    engine is the one that started."""
    srv.assert_bystanders_intact()
    assert_no_pages(srv.base)
    assert_same_engine(srv)


def assert_no_pages(base: str) -> None:
    wait_for_no_pages(base)


# ---- a second server: small limits, an API key, request chat templates allowed ----------------
KEY = "s3cret-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def limited(checkpoints, tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile-limited")
    log = str(d / "server.log")
    cfg = d / "deploy.yaml"
    cfg.write_text(f"models:\n  - {{name: llama, path: {checkpoints['llama']}}}\n"
                   f"  - {{name: qwen2, path: {checkpoints['qwen2']}}}\n"
                   "max_waiting_requests: 4\nmax_sequences_per_request: 4\nmax_request_body: 64KiB\n"
                   "allow_request_chat_template: true\nchat_template_timeout_s: 1.0\nmax_num_seqs: 4\n")
    proc, base = start_server({}, "--config", str(cfg), "--api-key", KEY,
                              log_path=log)
    try:
        s = Server(proc, base, log, AUTH, bystander_models=("qwen2",))  # the hostile requests go to llama
    except BaseException:
        proc.kill()
        raise
    yield s
    assert s.close() == 0, s.log_tail()


@pytest.mark.parametrize("header,status", [
    (f"Bearer {KEY}", 200), (f"bearer {KEY}", 200), (f"BEARER {KEY}", 200), (f"Bearer  {KEY}", 200),
    (None, 401), ("Bearer", 401), (f"Basic {KEY}", 401), (f"Bearer {KEY}x", 401),
    (f"Bearer {KEY[:-1]}", 401), ("Bearer " + "k" * 10000, 401), (KEY, 401),
], ids=lambda x: repr(x)[:30])
def test_api_key(limited, header, status):
    headers = {} if header is None else {"Authorization": header}
    r = httpx.post(limited.base + "/v1/completions", json=GOOD, headers=headers, timeout=60)
    assert r.status_code == status, r.text
    if status == 401:
        assert_error(r, 401)
    assert httpx.get(limited.base + "/v1/models", headers=headers, timeout=60).status_code == status


def test_small_body_limit_is_413(limited):
    with limited.guarded():
        r = httpx.post(limited.base + "/v1/completions", json=dict(GOOD, prompt="x" * 70_000), headers=AUTH, timeout=60)
        assert_error(r, 413)
        r = httpx.post(limited.base + "/v1/completions", json=dict(GOOD, prompt="x" * 60_000), headers=AUTH, timeout=60)
        assert_error(r, 400)  # under the body limit, over the context


def test_sequences_cap_is_400(limited):
    with limited.guarded():
        r = httpx.post(limited.base + "/v1/completions", json=dict(GOOD, prompt=["x"] * 3, n=3), headers=AUTH,
                       timeout=60)
        assert_error(r, 400)
        assert "max_sequences_per_request" in r.json()["error"]["message"]
        # At the cap: served. (A request that could never be admitted cannot exist: a
        # deployment whose max_waiting_requests is below max_sequences_per_request is refused.)
        r = httpx.post(limited.base + "/v1/completions", json=dict(GOOD, prompt=["x"] * 2, n=2), headers=AUTH,
                       timeout=60)
        assert r.status_code == 200, r.text


def test_a_queue_bound_below_the_sequences_cap_is_refused():
    from seallm.deploy import DeploymentConfig, ModelEntry

    with pytest.raises(ValueError, match="max_waiting_requests"):
        DeploymentConfig(models=(ModelEntry("a", "/x"),), max_waiting_requests=2, max_sequences_per_request=8)


def test_full_queue_is_429_with_retry_after(limited):
    """30 requests at once at llama, 4 may wait: some are refused with 429 + Retry-After, the
    rest complete; the bystander on qwen2 is untouched."""
    def one(i):
        with httpx.Client(base_url=limited.base, headers=AUTH, timeout=120) as c:
            return c.post("/v1/completions", json=dict(GOOD, prompt=f"request {i}", max_tokens=40, ignore_eos=True))

    refused_before = refused_total(limited.base)
    with limited.guarded():
        with concurrent.futures.ThreadPoolExecutor(30) as ex:
            rs = list(ex.map(one, range(30)))
    codes = sorted(r.status_code for r in rs)
    assert all(c in (200, 429) for c in codes), codes
    assert 429 in codes and 200 in codes, codes
    for r in rs:
        if r.status_code == 429:
            assert_error(r, 429)
            assert int(r.headers["retry-after"]) >= 1, r.headers
        else:
            assert r.json()["usage"]["completion_tokens"] == 40
    assert refused_total(limited.base) - refused_before == codes.count(429)


def refused_total(base: str) -> float:
    """``seallm:num_requests_refused_total`` summed over the models."""
    metrics = httpx.get(base + "/metrics", timeout=60).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("seallm:num_requests_refused_total{"))


def _template_chat(template: str, **kw) -> dict:
    return dict(CHAT, chat_template_kwargs={"chat_template": template}, **kw)


def test_request_template_allowed_renders(limited):
    with limited.guarded():
        r = httpx.post(limited.base + "/v1/chat/completions", headers=AUTH, timeout=60,
                       json=_template_chat("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"))
        assert r.status_code == 200, r.text


@pytest.mark.parametrize("template", [
    LOOP_TEMPLATE,
    "{{ raise_exception('no') }}",
    "{% for i in range(10**12) %}x{% endfor %}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ 'x' * 30000000 }}",
    "{% set x = [] %}{% for i in range(10000) %}{% set _ = x.append(i) %}{% endfor %}{{ x }}",
    "{{ messages",
], ids=["loop", "raise", "huge range", "sandbox escape", "30 MB output", "mutation", "syntax error"])
def test_hostile_request_template(limited, template):
    """Time-limited and sandboxed: a 400, quickly, and the event loop stays free meanwhile."""
    stalls = []

    def probe():
        with httpx.Client(base_url=limited.base, timeout=30) as c:
            while not done.is_set():
                t = time.monotonic()
                c.get("/health")
                stalls.append(time.monotonic() - t)
                time.sleep(0.05)

    done = threading.Event()
    with limited.guarded():
        th = threading.Thread(target=probe, daemon=True)
        th.start()
        t0 = time.monotonic()
        try:
            r = httpx.post(limited.base + "/v1/chat/completions", headers=AUTH, timeout=60,
                           json=_template_chat(template))
        finally:
            done.set()
            th.join(30)
        elapsed = time.monotonic() - t0
        assert_error(r, 400)
        assert elapsed < 10, f"the template took {elapsed:.1f} s to refuse"
        assert max(stalls, default=0.0) < 1.0, f"the event loop stalled {max(stalls):.2f} s"
    # The server still renders templates afterwards.
    r = httpx.post(limited.base + "/v1/chat/completions", headers=AUTH, timeout=60,
                   json=_template_chat("{{ messages[0]['content'] }}"))
    assert r.status_code == 200, r.text


def test_limited_bystanders_intact_and_no_pages_left(limited):
    limited.assert_bystanders_intact()
    assert_no_pages(limited.base)
    assert_same_engine(limited)
