"""SSE decoding, exact-length prompts and the served-alone latency model."""

from __future__ import annotations

import pytest

from seallm.bench.baseline import AloneLatency, AloneOverride, fit_alone_latency, resolve_overrides
from seallm.bench.calibrate import CalibrationConfig, calibration_requests
from seallm.bench.prompts import PromptConfig, PromptError, TextPrompts, TokenIdPrompts
from seallm.bench.records import RequestRecord
from seallm.bench.sse import SSEDecoder
from seallm.bench.workload import BenchRequest

# --- SSE ---------------------------------------------------------------------------------


def test_sse_decoder_handles_split_chunks_crlf_and_comments():
    d = SSEDecoder()
    assert d.feed(b'data: {"a"') == []
    assert d.feed(b': 1}\n') == []
    assert d.feed(b"\n") == ['{"a": 1}']
    assert d.feed(b": keep-alive comment\n\nevent: x\ndata: two\r") == []
    assert d.feed(b"\n\r\ndata: [DONE]\r\n\r\n") == ["two", "[DONE]"]
    assert d.feed(b"data:line1\ndata: line2\n\n") == ["line1\nline2"]
    assert d.feed(b"data: a\r") == []  # a CRLF split across chunks is one line end, not two
    assert d.feed(b"\ndata: b\r\n\r\n") == ["a\nb"]
    assert d.feed(b"data: tail") == []
    assert d.flush() == ["tail"]


def test_sse_decoder_keeps_utf8_split_across_chunks():
    d = SSEDecoder()
    raw = "data: héllo\n\n".encode()
    i = raw.index("é".encode()) + 1  # split inside the 2-byte character
    assert d.feed(raw[:i]) == []
    assert d.feed(raw[i:]) == ["héllo"]


# --- prompts -------------------------------------------------------------------------------


def test_token_id_prompts_are_exact_in_range_and_deterministic():
    p = TokenIdPrompts(10, 500, seed=3)
    for n in (1, 7, 513, 4000):
        ids = p.prompt(5, n)
        assert len(ids) == n and all(10 <= t < 500 for t in ids) and all(isinstance(t, int) for t in ids)
    assert p.prompt(5, 100) == TokenIdPrompts(10, 500, seed=3).prompt(5, 100)
    assert p.prompt(5, 100) != p.prompt(6, 100)
    assert p.prompt(5, 100) != TokenIdPrompts(10, 500, seed=4).prompt(5, 100)
    assert set(TokenIdPrompts(20, 22).prompt(0, 200)) == {20, 21}
    with pytest.raises(PromptError):
        PromptConfig(token_id_low=10, token_id_high=10)
    with pytest.raises(PromptError):
        p.prompt(0, 0)


class WordTokenizer:
    """Whitespace tokenizer with a BOS token and a few multi-token words."""

    all_special_ids = [0]

    def __init__(self) -> None:
        self.vocab = ["<s>"] + [f"w{chr(97 + i // 26)}{chr(97 + i % 26)}" for i in range(300)] + ["longword"]
        self.vocab_size = len(self.vocab)

    def __len__(self) -> int:
        return self.vocab_size

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [0] if add_special_tokens else []
        words = text.split()
        for w in words:
            n = 3 if w == "longword" else 1  # a word the pool must avoid
            ids += [1] * n
        ids += [2] * (len(words) // 5)  # context-dependent extra tokens: counts are not additive
        return ids

    def decode(self, ids: list[int]) -> str:
        return " ".join(self.vocab[i] for i in ids)


def test_text_prompts_are_calibrated_to_the_token_count():
    tok = WordTokenizer()
    tp = TextPrompts(tok, seed=1)
    assert "longword" not in tp.words
    reachable = {1 + k + k // 5 for k in range(1, 400)}
    for n in list(range(2, 40)) + [257]:
        got = len(tok.encode(tp.prompt(0, n)))
        assert got == n if n in reachable else abs(got - n) == 1, (n, got)
    assert tp.prompt(4, 50) == TextPrompts(tok, seed=1).prompt(4, 50)
    assert tp.prompt(4, 50) != tp.prompt(5, 50)


# --- served-alone baseline -----------------------------------------------------------------


def _rec(n_in, ttft, n_out, tpot, model="A"):
    return RequestRecord(index=0, model=model, input_len=n_in, output_len=n_out, scheduled_s=0.0, sent_s=1.0,
                         first_token_s=1.0 + ttft, finish_s=1.0 + ttft + (n_out - 1) * tpot,
                         tokens_in=n_in, tokens_out=n_out)


def test_fit_recovers_a_linear_ttft_and_the_mean_tpot():
    recs = [_rec(n, 0.02 + 0.0005 * n, 16, t) for n, t in ((100, 0.01), (200, 0.012), (400, 0.011), (800, 0.011))]
    a = fit_alone_latency(recs)
    assert a.ttft_base_s == pytest.approx(0.02) and a.ttft_per_token_s == pytest.approx(0.0005)
    assert a.tpot_s == pytest.approx(0.011) and a.samples == 4
    assert a.latency(100, 11) == pytest.approx(0.02 + 0.05 + 10 * 0.011)
    assert a.latency(100, 1) == pytest.approx(0.07)


def test_fit_clips_negative_coefficients_and_ignores_failures():
    neg_slope = fit_alone_latency([_rec(100, 0.3, 4, 0.01), _rec(300, 0.1, 4, 0.01)])
    assert neg_slope.ttft_per_token_s == 0.0 and neg_slope.ttft_base_s == pytest.approx(0.2)
    neg_base = fit_alone_latency([_rec(100, 0.05, 4, 0.01), _rec(200, 0.2, 4, 0.01)])
    assert neg_base.ttft_base_s == 0.0 and neg_base.ttft_per_token_s > 0
    failed = RequestRecord(index=0, model="A", input_len=5, output_len=5, scheduled_s=0, error="HTTP 500")
    assert fit_alone_latency([failed]) is None
    one = fit_alone_latency([failed, _rec(100, 0.05, 1, 0.0)])
    assert one.samples == 1 and one.tpot_s == 0.0 and one.ttft_base_s == pytest.approx(0.05)


def test_overrides_fill_and_win_over_fitted_values():
    ov = resolve_overrides(["A", "B"], {"*": AloneOverride(tpot_s=0.02), "A": AloneOverride(ttft_per_token_s=1e-4)})
    assert ov["A"].complete and not ov["B"].complete
    assert ov["A"].apply(None) == AloneLatency(0.0, 1e-4, 0.02)
    assert ov["B"].apply(None) is None
    fitted = AloneLatency(0.01, 2e-4, 0.05, samples=4)
    assert ov["B"].apply(fitted) == AloneLatency(0.01, 2e-4, 0.02, samples=4)
    with pytest.raises(ValueError):
        AloneLatency(-1.0, 0.0, 0.0)


def test_calibration_requests_are_representative():
    wl = [BenchRequest("A", float(i), n, o) for i, (n, o) in enumerate(
        [(10, 5), (20, 100), (30, 7), (40, 8), (50, 9), (60, 10), (70, 11), (80, 12)])] + [BenchRequest("B", 0.0, 5, 1)]
    warm, meas = calibration_requests(wl, "A", CalibrationConfig(requests_per_model=4, output_len=16))
    assert [r.input_len for r in meas] == [10, 30, 50, 70]
    assert all(r.output_len == 16 and r.model == "A" and r.arrival_s == 0.0 for r in meas)
    assert [r.input_len for r in warm] == [40]
    _, meas_b = calibration_requests(wl, "B", CalibrationConfig(requests_per_model=2))
    assert [r.output_len for r in meas_b] == [2, 2]  # at least 2 tokens to measure TPOT
    with pytest.raises(ValueError):
        calibration_requests(wl, "C", CalibrationConfig())


# --- stream chunk accounting ---------------------------------------------------------------


def test_probe_counts_token_chunks_usage_and_errors():
    from seallm.bench.client import _Probe

    p = _Probe(0, BenchRequest("m", 0.0, 4, 3))
    p.sent = 0.0
    p.on_event('{"choices": [{"index": 0, "text": "a", "finish_reason": null}]}', 0.1)
    p.on_event('{"choices": [{"index": 0, "text": "", "finish_reason": null}]}', 0.2)  # e.g. half a UTF-8 char
    p.on_event('{"choices": [{"index": 0, "text": "c", "finish_reason": null}]}', 0.3)
    p.on_event('{"choices": [{"index": 0, "text": "", "finish_reason": "length"}]}', 0.4)  # marker only
    assert p.chunks == 3 and p.times == [0.1, 0.2, 0.3] and p.first == 0.1 and p.finish_reason == "length"
    p.on_event('{"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7}}', 0.5)
    p.on_event("[DONE]", 0.5)
    p.finish = 0.5
    r = p.record(4)
    assert r.ok and (r.tokens_in, r.tokens_out) == (5, 7) and r.ttft_s == 0.1
    q = _Probe(1, BenchRequest("m", 0.0, 4, 3))
    q.on_event('{"error": {"message": "out of memory"}}', 0.1)
    assert q.error == "server error: out of memory"
    z = _Probe(2, BenchRequest("m", 0.0, 4, 3))
    z.on_event("not json", 0.1)
    assert z.error.startswith("bad SSE payload")


def test_probe_counts_a_lone_textless_token_confirmed_by_usage():
    """max_tokens=1 on a model without a tokenizer: the only token arrives as an empty final
    chunk; usage says one token was generated, so it is a token, not a missing one."""
    from seallm.bench.client import _Probe

    p = _Probe(0, BenchRequest("m", 0.0, 4, 1))
    p.sent = 0.0
    p.on_event('{"choices": [{"index": 0, "text": "", "finish_reason": "length"}]}', 0.4)
    p.on_event('{"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 1}}', 0.4)
    p.finish = 0.4
    r = p.record(4)
    assert r.ok and r.ttft_s == 0.4 and r.tokens_out == 1
    q = _Probe(1, BenchRequest("m", 0.0, 4, 1))
    q.sent = 0.0
    q.on_event('{"choices": [{"index": 0, "text": "", "finish_reason": "length"}]}', 0.4)
    q.on_event('{"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 0}}', 0.4)
    q.finish = 0.4
    assert q.record(4).error == "no token received"
