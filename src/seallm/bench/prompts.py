"""Prompts of an exact token length.

By default a prompt is a list of ``input_len`` token ids drawn uniformly from
``[token_id_low, token_id_high)`` (``/v1/completions`` accepts token-id prompts), so the
server sees exactly ``input_len`` prompt tokens whatever its tokenizer; the default range
``[10, 500)`` fits the 512-token vocabulary of the demo models. With a tokenizer
(``--tokenizer PATH``) prompts are text whose token count, as that tokenizer counts it with
special tokens (BOS) included, is calibrated to ``input_len``.

Prompts are deterministic given the seed and the request index, and differ between
requests (so a prefix cache does not hide prefill work).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

__all__ = [
    "PromptConfig",
    "PromptError",
    "PromptSource",
    "TextPrompts",
    "TokenIdPrompts",
    "load_tokenizer",
    "make_prompt_source",
]


class PromptError(ValueError):
    """Bad prompt settings, or a tokenizer that cannot be loaded or used."""


@dataclass(frozen=True)
class PromptConfig:
    """How prompts are built.

    ``token_id_low`` / ``token_id_high``: token-id range ``[low, high)`` for id prompts.
    ``tokenizer``: local tokenizer folder (Hugging Face format) for text prompts, or None.
    """

    token_id_low: int = 10
    token_id_high: int = 500
    tokenizer: str | None = None

    def __post_init__(self) -> None:
        if self.token_id_low < 0 or self.token_id_high <= self.token_id_low:
            raise PromptError(f"token id range must satisfy 0 <= low < high, got [{self.token_id_low}, {self.token_id_high})")


class PromptSource(Protocol):
    def prompt(self, index: int, input_len: int) -> list[int] | str:
        """The prompt of request ``index`` with ``input_len`` tokens."""


class TokenIdPrompts:
    """Token-id prompts: ``input_len`` ids uniform in ``[low, high)``, seeded per request."""

    def __init__(self, low: int = 10, high: int = 500, seed: int = 0) -> None:
        if low < 0 or high <= low:
            raise PromptError(f"token id range must satisfy 0 <= low < high, got [{low}, {high})")
        self.low, self.high, self.seed = low, high, seed

    def prompt(self, index: int, input_len: int) -> list[int]:
        """``input_len`` token ids (raises :class:`PromptError` if ``input_len < 1``)."""
        if input_len < 1:
            raise PromptError(f"input_len must be >= 1, got {input_len}")
        rng = np.random.default_rng([self.seed, index])
        return rng.integers(self.low, self.high, size=input_len).tolist()


class TextPrompts:
    """Text prompts calibrated to a token count with a tokenizer.

    ``tokenizer`` needs ``encode(text, add_special_tokens=bool) -> list[int]`` and
    ``decode(ids) -> str`` (any ``transformers`` tokenizer has them). The text is a random
    sequence of words that the tokenizer encodes as one token each after a space; the word
    count is then corrected until ``len(encode(text))`` equals the target. If that is
    impossible (e.g. ``input_len`` smaller than the number of special tokens) the closest
    prompt is returned and the server's usage reports the real count.
    """

    def __init__(self, tokenizer: Any, seed: int = 0, max_pool: int = 2000) -> None:
        self.tok = tokenizer
        self.seed = seed
        self.n_special = len(self._encode(""))
        self.words = self._word_pool(max_pool)
        if not self.words:
            raise PromptError("the tokenizer has no single-token alphabetic words to build prompts from")
        self._cache: dict[tuple[int, int], str] = {}

    def _encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=True))

    def _word_pool(self, max_pool: int) -> list[str]:
        size = getattr(self.tok, "vocab_size", None) or len(self.tok)
        special = set(getattr(self.tok, "all_special_ids", []) or [])
        rng = np.random.default_rng([self.seed, 0x5EA])
        words: list[str] = []
        seen: set[str] = set()
        for tid in rng.permutation(int(size))[: 20 * max_pool].tolist():
            if tid in special:
                continue
            w = self.tok.decode([tid]).strip()
            if not (w.isascii() and w.isalpha() and 2 <= len(w) <= 12) or w in seen:
                continue
            if len(self.tok.encode(" " + w, add_special_tokens=False)) != 1:
                continue
            seen.add(w)
            words.append(w)
            if len(words) >= max_pool:
                break
        return words

    def prompt(self, index: int, input_len: int) -> str:
        """A text of ``input_len`` tokens (with special tokens) when reachable."""
        key = (index, input_len)
        if key in self._cache:
            return self._cache[key]
        rng = np.random.default_rng([self.seed, index])
        # Enough candidate words for any correction below.
        pick = rng.integers(0, len(self.words), size=input_len + 64)
        cand = [self.words[i] for i in pick.tolist()]
        k = max(1, input_len - self.n_special)
        best_text, best_err = "", None
        for _ in range(32):
            text = " ".join(cand[:k])
            n = len(self._encode(text))
            err = abs(n - input_len)
            if best_err is None or err < best_err:
                best_text, best_err = text, err
            if n == input_len:
                break
            step = input_len - n
            new_k = min(len(cand), max(1, k + step))
            if new_k == k:
                break
            k = new_k
        self._cache[key] = best_text
        return best_text


def load_tokenizer(path: str) -> Any:
    """Load a local Hugging Face tokenizer (no download). Imports ``transformers`` lazily.

    Raises :class:`PromptError` if transformers is missing or the folder has no tokenizer.
    """
    try:
        from transformers import AutoTokenizer  # lazy: only for --tokenizer
    except ImportError as e:  # pragma: no cover - transformers is a project dependency
        raise PromptError("--tokenizer needs the 'transformers' package") from e
    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as e:  # transformers raises OSError/ValueError/...
        raise PromptError(f"cannot load a tokenizer from {path!r}: {e}") from e


def make_prompt_source(cfg: PromptConfig, seed: int = 0) -> PromptSource:
    """Token-id prompts, or text prompts when ``cfg.tokenizer`` is set."""
    if cfg.tokenizer:
        return TextPrompts(load_tokenizer(cfg.tokenizer), seed=seed)
    return TokenIdPrompts(cfg.token_id_low, cfg.token_id_high, seed=seed)
