"""Loading the shipped traces: row counts and statistics quoted in the traces README."""

from __future__ import annotations

import math
from importlib import resources

import numpy as np
import pytest

from seallm.bench.metrics import percentile
from seallm.bench.traces import (
    TraceError,
    load_azure_trace,
    load_length_distribution,
    parse_azure_timestamp,
)


def _stats(a: np.ndarray) -> tuple[float, int, int, int, int]:
    v = a.tolist()
    return round(float(np.mean(a)), 1), percentile(v, 50), percentile(v, 90), percentile(v, 99), max(v)


def test_shipped_files_keep_their_quirks():
    data = resources.files("seallm.bench").joinpath("data")
    raw = data.joinpath("AzureLLMInferenceTrace_conv.csv").read_bytes()
    assert raw.startswith(b"TIMESTAMP,ContextTokens,GeneratedTokens\r\n")
    assert not raw.endswith(b"\n")  # no trailing newline: the last row must still be read
    readme = data.joinpath("README.md").read_text(encoding="utf-8")
    assert "CC-BY 4.0" in readme and "Splitwise" in readme and "Apache" in readme


def test_conv_trace_statistics():
    t = load_azure_trace("conv")
    assert len(t) == 19366
    assert str(t.start) == "2023-11-16 18:15:46.680590"
    assert t.arrival_s[0] == 0.0
    # last row 19:14:08.4025270 (no newline after it); 7 fractional digits kept exactly
    assert t.arrival_s[-1] == pytest.approx(58 * 60 + 21.721937, abs=1e-9)
    assert np.all(np.diff(t.arrival_s) >= 0)
    assert _stats(t.input_lens) == (1154.7, 1020, 2735, 4142, 14050)
    assert _stats(t.output_lens) == (211.1, 129, 424, 601, 1000)
    assert t.mean_rate == pytest.approx(5.53, abs=0.005)
    assert t.interarrival_cv == pytest.approx(1.09, abs=0.005)
    assert t.span_s / 60 == pytest.approx(58.4, abs=0.05)


def test_code_trace_statistics_and_chat_alias():
    t = load_azure_trace("code")
    assert len(t) == 8819
    assert _stats(t.input_lens) == (2047.8, 1469, 5194, 7436, 7437)
    assert _stats(t.output_lens) == (27.9, 13, 55, 252, 1899)
    assert t.mean_rate == pytest.approx(2.57, abs=0.005)
    assert t.interarrival_cv == pytest.approx(13.15, abs=0.005)
    assert float(np.max(np.diff(t.arrival_s))) == pytest.approx(217, abs=1)  # the idle gap
    chat = load_azure_trace("chat")
    assert len(chat) == 19366 and np.array_equal(chat.input_lens, load_azure_trace("conv").input_lens)


@pytest.mark.parametrize(
    "name,rows,prefill,decode",
    [
        ("sharegpt", 30731, (2340.0, 1730, 5696, 7434, 8141), (438.7, 415, 834, 998, 1024)),
        ("arxiv", 28257, (2588.1, 2730, 3702, 3934, 4054), (291.4, 167, 372, 3273, 4056)),
        ("bwb", 33768, (1067.2, 1037, 1453, 1800, 3504), (1612.8, 1601, 2149, 2533, 2858)),
    ],
)
def test_length_distributions(name, rows, prefill, decode):
    d = load_length_distribution(name)
    assert len(d) == rows
    assert _stats(d.input_lens) == prefill
    assert _stats(d.output_lens) == decode


def test_timestamp_parsing_is_exact():
    a = parse_azure_timestamp("2023-11-16 18:15:46.6805900")
    b = parse_azure_timestamp("2023-11-16 18:15:47.0000001")
    assert b - a == 3194101  # 100 ns ticks
    assert parse_azure_timestamp("2023-11-17 00:00:00") - parse_azure_timestamp("2023-11-16 23:59:59.5") == 5_000_000
    # fewer fractional digits are padded, not misread
    assert parse_azure_timestamp("2023-11-16 00:00:00.5") - parse_azure_timestamp("2023-11-16 00:00:00") == 5_000_000
    with pytest.raises(TraceError):
        parse_azure_timestamp("yesterday")
    with pytest.raises(TraceError):
        parse_azure_timestamp("2023-11-16 18:15:xx.1")


def test_custom_csv_with_crlf_and_no_final_newline(tmp_path):
    p = tmp_path / "mine.csv"
    p.write_bytes(b"TIMESTAMP,ContextTokens,GeneratedTokens\r\n"
                  b"2023-11-16 10:00:00.0000000,10,3\r\n"
                  b"2023-11-16 10:00:01.2500000,20,4\r\n"
                  b"2023-11-16 10:00:03.0000001,30,5")
    t = load_azure_trace(str(p))
    assert len(t) == 3
    assert t.arrival_s.tolist() == pytest.approx([0.0, 1.25, 3.0000001], abs=1e-12)
    assert t.input_lens.tolist() == [10, 20, 30] and t.output_lens.tolist() == [3, 4, 5]
    assert not math.isnan(t.mean_rate)


def test_bad_inputs_raise(tmp_path):
    with pytest.raises(TraceError, match="unknown trace"):
        load_azure_trace("nope")
    with pytest.raises(TraceError):
        load_length_distribution("nope")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(TraceError, match="expected columns"):
        load_azure_trace(str(bad))
    unsorted = tmp_path / "unsorted.csv"
    unsorted.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                        "2023-11-16 10:00:01.0,1,1\n2023-11-16 10:00:00.0,1,1\n")
    with pytest.raises(TraceError, match="sorted"):
        load_azure_trace(str(unsorted))
