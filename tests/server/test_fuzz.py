"""Schema-driven fuzzing (issue 8): schemathesis generates valid and invalid requests for every
operation of the live server's ``/openapi.json``; none may get a 5xx, and the server stays
healthy with the same engine process.

Bounded and deterministic for CI: a fixed number of examples per operation and mode, a
derandomized Hypothesis (same inputs every run, no example database), and a wall-clock budget
(``SEALLM_FUZZ_BUDGET_S``, 60 s by default) past which the remaining examples are skipped. The
server caps outputs at 8 tokens so generated requests stay cheap.
"""

from __future__ import annotations

import os
import time

import httpx
import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.generation import GenerationMode  # noqa: E402

from tests.server.conftest import kv_pages_used, start_server, stop_server  # noqa: E402
from tests.server.test_hostile import engine_process  # noqa: E402

BUDGET_S = float(os.environ.get("SEALLM_FUZZ_BUDGET_S", "60"))
EXAMPLES = {"GET": 10, "POST": 120}  # per operation and generation mode
MODELS = ("llama", "qwen2")


@pytest.fixture(scope="module")
def fuzz_server(checkpoints, tmp_path_factory):
    log = str(tmp_path_factory.mktemp("fuzz") / "server.log")
    proc, base = start_server({m: checkpoints[m] for m in MODELS}, "--max-tokens-limit", "8", log_path=log)
    try:
        engine = engine_process(proc.pid)
    except BaseException:
        proc.kill()
        raise
    yield proc, base, engine, log
    try:
        code = stop_server(proc)
    finally:
        if engine.is_running():
            engine.kill()
    assert code == 0, open(log).read()[-3000:]


def _operations(base: str):
    raw = httpx.get(base + "/openapi.json", timeout=60).json()
    schema = schemathesis.openapi.from_dict(raw)
    return [r.ok() for r in schema.get_all_operations()]


def test_fuzz_openapi_no_5xx(fuzz_server):
    proc, base, engine, log = fuzz_server
    start = time.monotonic()
    failures: list[str] = []
    calls = {"made": 0, "skipped": 0}
    ops = _operations(base)
    assert {o.label for o in ops} >= {"POST /v1/completions", "POST /v1/chat/completions", "GET /v1/models"}

    pairs = [(op, mode) for op in ops for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)]
    left = sum(EXAMPLES.get(op.method.upper(), 10) for op, _ in pairs)
    for op, mode in pairs:
        # Each operation and mode gets its share of the budget left (by examples), so a
        # slow machine fuzzes every operation a little rather than the first ones only.
        n = EXAMPLES.get(op.method.upper(), 10)
        now = time.monotonic()
        stop_at = now + max(0.0, start + BUDGET_S - now) * n / left
        left -= n
        # Point most generated requests at a served model, so they reach the engine.
        names = st.sampled_from([*MODELS, *MODELS, None])

        @settings(max_examples=n, derandomize=True, database=None,
                  deadline=None, phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck), print_blob=False)
        @given(case=op.as_strategy(generation_mode=mode), name=names)
        def run(case, name):
            if time.monotonic() > stop_at:
                calls["skipped"] += 1
                return
            if name is not None:
                if isinstance(case.body, dict) and "model" in case.body:
                    case.body["model"] = name
                if case.path_parameters and "model_id" in case.path_parameters:
                    case.path_parameters["model_id"] = name
            try:
                r = case.call(base_url=base, timeout=60)
            except Exception as e:  # noqa: BLE001 - a dropped connection is a failure too
                failures.append(f"{op.label} [{mode.value}] {type(e).__name__}: {e} body={case.body!r:.300}")
                return
            calls["made"] += 1
            if r.status_code >= 500:
                failures.append(f"{op.label} [{mode.value}] {r.status_code} {r.text[:300]} "
                                f"body={case.body!r:.300}")

        try:
            run()
        except Unsatisfiable:
            pass  # no invalid input exists for an operation without parameters
        r = httpx.get(base + "/health", timeout=30)
        assert r.status_code == 200, f"unhealthy after {op.label} [{mode.value}]: {r.status_code} {r.text}"
        assert engine.is_running(), f"the engine died during {op.label} [{mode.value}]"

    assert not failures, f"{len(failures)} server errors:\n" + "\n".join(failures[:20])
    assert calls["made"] >= 100, calls
    assert engine_process(proc.pid).pid == engine.pid, "the engine process changed"
    deadline = time.time() + 30
    while time.time() < deadline and any(kv_pages_used(base).values()):
        time.sleep(0.3)
    assert not any(kv_pages_used(base).values()), kv_pages_used(base)
