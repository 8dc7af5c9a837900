"""Clocks. Schedulers never read a clock: the engine passes ``now`` (seconds) in."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Source of the current time in seconds."""

    def now(self) -> float: ...


class WallClock:
    """Wall-clock time, ``time.time()`` in seconds since the epoch (comparable across processes)."""

    def now(self) -> float:
        return time.time()


class ManualClock:
    """A clock that only moves when told to (simulator, deterministic tests)."""

    def __init__(self, start: float = 0.0) -> None:
        self._t = float(start)

    def now(self) -> float:
        return self._t

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (>= 0); raises ``ValueError`` if negative."""
        if seconds < 0:
            raise ValueError(f"cannot move a clock backwards (seconds={seconds})")
        self._t += seconds
