"""Load the request traces and length distributions shipped in ``seallm/bench/data``.

Azure LLM inference trace 2023 (CC-BY 4.0, Splitwise ISCA'24): ``conv`` (alias ``chat``) and
``code``. Length distributions (etalon, Apache-2.0): ``sharegpt``, ``arxiv``, ``bwb``. See
``data/README.md`` for attribution. Nothing here touches the network.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

__all__ = [
    "AZURE_TRACES",
    "LENGTH_DISTRIBUTIONS",
    "AzureTrace",
    "LengthDistribution",
    "TraceError",
    "load_azure_trace",
    "load_length_distribution",
    "parse_azure_timestamp",
]

#: Trace name -> file in ``seallm/bench/data``. ``chat`` is an alias of ``conv``.
AZURE_TRACES = {
    "conv": "AzureLLMInferenceTrace_conv.csv",
    "chat": "AzureLLMInferenceTrace_conv.csv",
    "code": "AzureLLMInferenceTrace_code.csv",
}

#: Length distribution name -> file in ``seallm/bench/data``.
LENGTH_DISTRIBUTIONS = {
    "sharegpt": "sharegpt_8k_filtered_stats_llama2_tokenizer.csv",
    "arxiv": "arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv",
    "bwb": "bwb_stats_llama2_tokenizer_filtered_v2.csv",
}

_TICKS_PER_S = 10**7  # the Azure timestamps have 7 fractional digits (100 ns)


class TraceError(ValueError):
    """A trace or length file is unknown, missing, or malformed."""


@dataclass(frozen=True, eq=False)
class AzureTrace:
    """One Azure-format trace: arrival times and token lengths, sorted by arrival.

    ``arrival_s`` is seconds since the trace's first row (float64, exact to 100 ns);
    ``input_lens`` / ``output_lens`` are tokens (int64). ``start`` is the first row's
    timestamp (naive, as written in the file).
    """

    name: str
    start: _dt.datetime
    start_ticks: int  # first row, in 100 ns ticks since 0001-01-01 (to align several traces)
    arrival_s: np.ndarray
    input_lens: np.ndarray
    output_lens: np.ndarray

    def __len__(self) -> int:
        return int(self.arrival_s.shape[0])

    @property
    def span_s(self) -> float:
        """Seconds from the first to the last arrival."""
        return float(self.arrival_s[-1] - self.arrival_s[0]) if len(self) else 0.0

    @property
    def mean_rate(self) -> float:
        """Requests per second, ``(n - 1) / span`` (the traces README's definition)."""
        span = self.span_s
        return (len(self) - 1) / span if span > 0 else float("nan")

    @property
    def interarrival_cv(self) -> float:
        """Coefficient of variation (population std / mean) of inter-arrival times."""
        gaps = np.diff(self.arrival_s)
        m = float(gaps.mean()) if gaps.size else 0.0
        return float(gaps.std() / m) if m > 0 else float("nan")


@dataclass(frozen=True, eq=False)
class LengthDistribution:
    """Empirical joint (input, output) token lengths; row i is one request."""

    name: str
    input_lens: np.ndarray
    output_lens: np.ndarray

    def __len__(self) -> int:
        return int(self.input_lens.shape[0])

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n`` (input, output) pairs uniformly with replacement (tokens)."""
        idx = rng.integers(0, len(self), size=n)
        return self.input_lens[idx], self.output_lens[idx]


def parse_azure_timestamp(text: str) -> int:
    """Parse ``YYYY-MM-DD HH:MM:SS[.fffffff]`` into 100 ns ticks since 0001-01-01.

    Integer arithmetic keeps the 7 fractional digits exact. Raises :class:`TraceError`
    on a malformed value.
    """
    try:
        day, clock = text.strip().split(" ")
        hms, _, frac = clock.partition(".")
        h, m, s = (int(x) for x in hms.split(":"))
        ordinal = _dt.date.fromisoformat(day).toordinal()
        if frac and not frac.isdigit():
            raise ValueError(frac)
        frac_ticks = int((frac + "0000000")[:7]) if frac else 0
    except ValueError as e:  # includes wrong field counts
        raise TraceError(f"bad Azure timestamp {text!r}") from e
    return ((ordinal * 86400 + h * 3600 + m * 60 + s) * _TICKS_PER_S) + frac_ticks


def _open_text(name_or_path: str, table: dict[str, str]) -> tuple[str, io.TextIOBase]:
    """Open a shipped file by short name, or any file by path; ``newline=''`` for csv."""
    key = name_or_path.lower()
    if key in table:
        res = resources.files("seallm.bench").joinpath("data", table[key])
        return key, res.open("r", encoding="utf-8", newline="")
    if os.path.isfile(name_or_path):
        stem = os.path.splitext(os.path.basename(name_or_path))[0]
        return stem, open(name_or_path, encoding="utf-8", newline="")
    known = ", ".join(sorted(table))
    raise TraceError(f"unknown trace {name_or_path!r}: use one of {known} or a path to a CSV file")


@lru_cache(maxsize=8)
def load_azure_trace(name_or_path: str) -> AzureTrace:
    """Load ``conv``/``chat``/``code`` (or a CSV file with the same columns).

    Handles the files' CRLF line ends, missing final newline and 7 fractional digits.
    Raises :class:`TraceError` for an unknown name, a missing column, a bad value, an
    empty file or rows not sorted by time. Results are cached (arrays are shared: do
    not modify them).
    """
    name, f = _open_text(name_or_path, AZURE_TRACES)
    ticks: list[int] = []
    ins: list[int] = []
    outs: list[int] = []
    with f:
        reader = csv.DictReader(f)
        need = {"TIMESTAMP", "ContextTokens", "GeneratedTokens"}
        if reader.fieldnames is None or not need <= set(reader.fieldnames):
            raise TraceError(f"{name_or_path}: expected columns {sorted(need)}, got {reader.fieldnames}")
        for lineno, row in enumerate(reader, start=2):
            try:
                ticks.append(parse_azure_timestamp(row["TIMESTAMP"]))
                ins.append(int(row["ContextTokens"]))
                outs.append(int(row["GeneratedTokens"]))
            except (TypeError, ValueError) as e:
                raise TraceError(f"{name_or_path}:{lineno}: {e}") from e
    if not ticks:
        raise TraceError(f"{name_or_path}: no rows")
    t = np.asarray(ticks, dtype=np.int64)
    if np.any(np.diff(t) < 0):
        raise TraceError(f"{name_or_path}: rows are not sorted by TIMESTAMP")
    t0 = int(t[0])
    start = _dt.datetime.fromordinal(t0 // (86400 * _TICKS_PER_S)) + _dt.timedelta(
        microseconds=(t0 % (86400 * _TICKS_PER_S)) // 10
    )
    arrays = (
        (t - t0).astype(np.float64) / _TICKS_PER_S,
        np.asarray(ins, dtype=np.int64),
        np.asarray(outs, dtype=np.int64),
    )
    for a in arrays:
        a.setflags(write=False)
    return AzureTrace(name, start, t0, *arrays)


@lru_cache(maxsize=8)
def load_length_distribution(name_or_path: str) -> LengthDistribution:
    """Load ``sharegpt``/``arxiv``/``bwb`` (or a CSV with ``num_prefill_tokens`` and
    ``num_decode_tokens`` columns). Raises :class:`TraceError` on an unknown name,
    missing columns, bad values or an empty file. Results are cached (read-only arrays).
    """
    name, f = _open_text(name_or_path, LENGTH_DISTRIBUTIONS)
    ins: list[int] = []
    outs: list[int] = []
    with f:
        reader = csv.DictReader(f)
        need = {"num_prefill_tokens", "num_decode_tokens"}
        if reader.fieldnames is None or not need <= set(reader.fieldnames):
            raise TraceError(f"{name_or_path}: expected columns {sorted(need)}, got {reader.fieldnames}")
        for lineno, row in enumerate(reader, start=2):
            try:
                ins.append(int(row["num_prefill_tokens"]))
                outs.append(int(row["num_decode_tokens"]))
            except (TypeError, ValueError) as e:
                raise TraceError(f"{name_or_path}:{lineno}: {e}") from e
    if not ins:
        raise TraceError(f"{name_or_path}: no rows")
    a_in = np.asarray(ins, dtype=np.int64)
    a_out = np.asarray(outs, dtype=np.int64)
    a_in.setflags(write=False)
    a_out.setflags(write=False)
    return LengthDistribution(name, a_in, a_out)
