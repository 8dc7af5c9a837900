"""Incremental detokenization and stop strings (runs beside the engine, never inside it)."""

from __future__ import annotations

from typing import Any, Sequence


class IncrementalDetokenizer:
    """Turns a growing list of output token ids into text, emitting only complete characters.

    With a fast (Rust) tokenizer it uses ``tokenizers``' ``DecodeStream``: one native call
    per token. Otherwise it uses the prefix/read offset method: decode a short window before
    the new tokens and emit what they add, holding back text that ends in an incomplete
    UTF-8 sequence (U+FFFD). Stop strings are searched in the emitted text.

    Args:
        tokenizer: a ``transformers`` tokenizer (``decode``, ``convert_ids_to_tokens``).
        prompt_token_ids: the prompt (gives context to the first output tokens).
        stop: stop strings; the output ends at the first match.
        include_stop_str_in_output: keep the matched stop string in the text.
        skip_special_tokens: drop special tokens from the text.
    """

    _WINDOW = 6

    def __init__(
        self,
        tokenizer: Any,
        prompt_token_ids: Sequence[int],
        stop: Sequence[str] = (),
        include_stop_str_in_output: bool = False,
        skip_special_tokens: bool = True,
    ) -> None:
        self.tokenizer = tokenizer
        self.stop = tuple(stop)
        self.include_stop = include_stop_str_in_output
        self.skip_special = skip_special_tokens
        self._ids: list[int] = list(prompt_token_ids[-self._WINDOW :])
        self._prefix = 0
        self._read = len(self._ids)
        self.text = ""
        self.stopped_by: str | None = None
        self._max_stop = max((len(s) for s in self.stop), default=0)
        self._emitted = 0
        self._rust = getattr(tokenizer, "_tokenizer", None)
        self._stream = None
        if self._rust is not None:
            try:
                from tokenizers.decoders import DecodeStream

                self._stream = DecodeStream(list(self._ids), skip_special_tokens=skip_special_tokens)
            except (ImportError, TypeError):
                self._stream = None

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special,
                                     clean_up_tokenization_spaces=False)

    def add(self, token_ids: Sequence[int]) -> str:
        """Append new output tokens; returns the text that may be shown now (may be empty).

        With stop strings, the last ``len(longest stop) - 1`` characters are held back until
        they cannot start a match, so streamed text never has to be taken back. After a
        match, :attr:`stopped_by` is set, :attr:`text` ends at the stop string (or after it
        with ``include_stop_str_in_output``) and later calls return ``""``.
        """
        if self.stopped_by is not None:
            return ""
        if self._stream is not None:
            step, rust = self._stream.step, self._rust
            delta = "".join(p for p in (step(rust, t) for t in token_ids) if p)
            if delta:
                self._append(delta)
            return self._emit(final=self.stopped_by is not None)
        self._ids.extend(token_ids)
        prefix_text = self._decode(self._ids[self._prefix : self._read])
        full = self._decode(self._ids[self._prefix :])
        if len(full) > len(prefix_text) and not full.endswith("\ufffd"):
            delta = full[len(prefix_text) :]
            self._prefix, self._read = self._read, len(self._ids)
            # Keep the working window short so each call costs O(window), not O(output).
            if self._prefix > 4 * self._WINDOW:
                cut = self._prefix - self._WINDOW
                self._ids = self._ids[cut:]
                self._prefix -= cut
                self._read -= cut
            self._append(delta)
        return self._emit(final=self.stopped_by is not None)

    def _append(self, delta: str) -> None:
        old_len = len(self.text)
        self.text += delta
        if self.stop:
            self._find_stop(max(0, old_len - self._max_stop + 1))

    def _find_stop(self, start: int) -> None:
        best: tuple[int, str] | None = None
        for s in self.stop:
            i = self.text.find(s, start)
            if i != -1 and (best is None or i < best[0]):
                best = (i, s)
        if best is not None:
            i, s = best
            self.stopped_by = s
            self.text = self.text[: i + (len(s) if self.include_stop else 0)]

    def _emit(self, final: bool) -> str:
        end = len(self.text)
        if not final and self._max_stop > 1:
            end = max(self._emitted, end - (self._max_stop - 1))
        out = self.text[self._emitted : end]
        self._emitted = end
        return out

    def flush(self) -> str:
        """At the end of the request: the held-back text, including a trailing incomplete
        character decoded as U+FFFD."""
        if self._stream is None and self.stopped_by is None and self._read < len(self._ids):
            prefix_text = self._decode(self._ids[self._prefix : self._read])
            full = self._decode(self._ids[self._prefix :])
            self._prefix = self._read = len(self._ids)
            self.text += full[len(prefix_text) :]
        return self._emit(final=True)
