"""Incremental decoder for server-sent events (the OpenAI streaming wire format).

Feed raw bytes as they arrive; get back the ``data`` payload of every complete event.
Lines end in ``\\n``, ``\\r\\n`` or ``\\r``; an event ends at a blank line; several ``data:``
lines of one event are joined with ``\\n``; comments (``:...``) and other fields are ignored.
"""

from __future__ import annotations

import codecs

__all__ = ["SSEDecoder"]


class SSEDecoder:
    """Stateful SSE decoder: ``feed(bytes) -> list[str]``, then ``flush()`` at end of stream."""

    def __init__(self) -> None:
        self._buf = ""
        self._data: list[str] = []
        self._pending_cr = False
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, chunk: bytes) -> list[str]:
        """Decode ``chunk`` and return the data of the events it completes (UTF-8)."""
        text = self._utf8.decode(bytes(chunk)) if isinstance(chunk, (bytes, bytearray)) else chunk
        if not text:
            return []
        if self._pending_cr and text.startswith("\n"):
            text = text[1:]  # the \n of a \r\n split across chunks
        self._pending_cr = text.endswith("\r")
        self._buf += text
        events: list[str] = []
        lines = self._buf.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        self._buf = lines.pop()  # the unfinished last line
        for line in lines:
            self._line(line, events)
        return events

    def flush(self) -> list[str]:
        """Finish the stream: return the data of a last event not followed by a blank line."""
        events: list[str] = []
        self._buf += self._utf8.decode(b"", final=True)
        if self._buf:
            self._line(self._buf, events)
            self._buf = ""
        if self._data:
            events.append("\n".join(self._data))
            self._data = []
        return events

    def _line(self, line: str, events: list[str]) -> None:
        if line == "":
            if self._data:
                events.append("\n".join(self._data))
                self._data = []
            return
        if line.startswith(":"):
            return
        name, sep, value = line.partition(":")
        if name != "data":
            return
        if sep and value.startswith(" "):
            value = value[1:]
        self._data.append(value)
