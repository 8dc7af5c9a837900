"""Incremental detokenization and stop strings (fast DecodeStream path and the offset fallback)."""

from __future__ import annotations

import pytest

from seallm.engine.detokenizer import IncrementalDetokenizer


@pytest.fixture(scope="module")
def tok(checkpoints):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(checkpoints["llama"])


TEXT = "Hello! How are you today? I am fine, thank you. What is the capital of France? Paris."


def _make(tok, fast, **kw):
    d = IncrementalDetokenizer(tok, tok("Q:")["input_ids"], **kw)
    if not fast:
        d._stream = None
    return d


@pytest.mark.parametrize("fast", [True, False])
def test_streamed_text_equals_decode(tok, fast):
    ids = tok(TEXT)["input_ids"]
    d = _make(tok, fast)
    pieces = [d.add([t]) for t in ids]
    pieces.append(d.flush())
    assert "".join(pieces) == d.text == tok.decode(ids)


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("stop", ["you", "France?", "o", "Paris."])
def test_stop_string_never_streams_past_the_match(tok, fast, stop):
    ids = tok(TEXT)["input_ids"]
    d = _make(tok, fast, stop=[stop, "zzz-never"])
    shown = ""
    for t in ids:
        shown += d.add([t])
        if d.stopped_by:
            break
    shown += d.flush()
    assert d.stopped_by == stop
    assert shown == d.text == TEXT[: TEXT.index(stop)]


@pytest.mark.parametrize("fast", [True, False])
def test_include_stop_string(tok, fast):
    ids = tok(TEXT)["input_ids"]
    d = _make(tok, fast, stop=["today"], include_stop_str_in_output=True)
    for t in ids:
        d.add([t])
    assert d.text == TEXT[: TEXT.index("today") + len("today")]


def test_multibyte_characters_are_not_split(tok):
    text = "caf\u00e9 \u4e2d\u6587 \U0001F600 ok"
    ids = tok(text)["input_ids"]
    for fast in (True, False):
        d = _make(tok, fast)
        pieces = [d.add([t]) for t in ids] + [d.flush()]
        assert all("\ufffd" not in p for p in pieces)
        assert "".join(pieces) == text
