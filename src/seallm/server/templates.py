"""Chat templates: the model's own, rendered off the event loop, and request-supplied ones,
rendered in a separate process under a time limit.

A chat template is Jinja code. The checkpoint's template is trusted; it renders on the front
end's tokenizer thread so a long conversation never blocks the event loop. A template sent
by a client (``chat_template_kwargs: {chat_template: ...}``) is refused unless the
deployment sets ``allow_request_chat_template: true``; then it renders to text in a child
process that is killed when it exceeds ``chat_template_timeout_s`` (Jinja's sandbox bounds
``range`` but not nested loops), and only the text comes back to be tokenized.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
from typing import Any

from seallm.server.errors import APIError

# apply_chat_template's own parameters: a request may not set them through
# chat_template_kwargs (they change what the call returns or how it tokenizes). Other keys
# are template variables (e.g. ``enable_thinking``) and pass through.
RESERVED_KWARGS = frozenset({
    "conversation", "tools", "chat_template", "add_generation_prompt", "tokenize", "padding",
    "truncation", "max_length", "return_tensors", "return_dict", "return_assistant_tokens_mask",
    "tokenizer_kwargs", "messages"})
ALLOWED_APPLY_KWARGS = frozenset({"documents", "continue_final_message"})


def check_template_kwargs(kwargs: dict[str, Any] | None, allow_template: bool) -> tuple[dict[str, Any], str | None]:
    """Split ``chat_template_kwargs`` into template variables and a request template.

    Returns ``(variables, template or None)``.

    Raises:
        APIError: 400 for a reserved key, a template when they are not allowed, or a
            ``continue_final_message`` that is not a boolean.
    """
    kwargs = dict(kwargs or {})
    template = kwargs.pop("chat_template", None)
    if template is not None:
        if not allow_template:
            raise APIError("chat_template_kwargs.chat_template is disabled on this server "
                           "(deployment option allow_request_chat_template)", 400, "chat_template_kwargs")
        if not isinstance(template, str) or not template:
            raise APIError("chat_template_kwargs.chat_template must be a non-empty string", 400,
                           "chat_template_kwargs")
    bad = sorted(k for k in kwargs if k in RESERVED_KWARGS)
    if bad:
        raise APIError(f"chat_template_kwargs may not set {', '.join(bad)}", 400, "chat_template_kwargs")
    if "continue_final_message" in kwargs and not isinstance(kwargs["continue_final_message"], bool):
        raise APIError("chat_template_kwargs.continue_final_message must be a boolean", 400, "chat_template_kwargs")
    return kwargs, template


# ---- request-supplied templates: a child process with a time limit -------------------------------

def max_prompt_chars(max_model_len: int) -> int:
    """Longest text a request template may render for a model of ``max_model_len`` tokens:
    32 characters per token of context (no common tokenizer averages more), at least 64 Ki."""
    return max(1 << 16, 32 * max_model_len)


_child_tokenizers: dict[str, Any] = {}


def _child_main(conn, paths: dict[str, str], max_chars: dict[str, int]) -> None:  # runs in the child process
    from seallm.offline import load_tokenizer

    for name, path in paths.items():
        _child_tokenizers[name] = load_tokenizer(path)
    conn.send(("ready", ""))
    while True:
        try:
            model, messages, template, add_generation_prompt, kwargs = conn.recv()
        except EOFError:
            return
        try:
            tok = _child_tokenizers[model]
            text = tok.apply_chat_template(messages, chat_template=template, add_generation_prompt=add_generation_prompt,
                                           tokenize=False, **kwargs)
            if not isinstance(text, str):
                raise TypeError(f"the template returned {type(text).__name__}, not text")
            if len(text) > max_chars[model]:
                raise ValueError(f"the rendered prompt has {len(text)} characters, over the limit of "
                                 f"{max_chars[model]} for this model")
            conn.send(("ok", text))
        except Exception as e:  # noqa: BLE001 - reported to the client as 400
            conn.send(("error", f"{type(e).__name__}: {e}"))


class TemplateSandbox:
    """Renders request-supplied chat templates in one child process, one at a time.

    Args:
        paths: model name -> checkpoint folder (the child loads tokenizers from there).
        timeout_s: time limit of one rendering (s); the child is killed and restarted after.
        max_chars: model name -> longest rendered text accepted (characters); a longer one is a
            400, so tokenizing it cannot hold the tokenizer thread for long. Default
            :func:`max_prompt_chars` of a 2048-token context.
    """

    def __init__(self, paths: dict[str, str], timeout_s: float, max_chars: dict[str, int] | None = None) -> None:
        self.paths = dict(paths)
        self.timeout_s = timeout_s
        self.max_chars = {m: (max_chars or {}).get(m, max_prompt_chars(2048)) for m in self.paths}
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._conn = None
        self._lock = asyncio.Lock()
        self._start_lock = threading.Lock()

    def _ensure_started(self) -> None:
        with self._start_lock:
            if self._proc is not None and self._proc.is_alive():
                return
            ctx = multiprocessing.get_context("spawn")
            parent, child = ctx.Pipe()
            self._proc = ctx.Process(target=_child_main, args=(child, self.paths, self.max_chars),
                                     name="seallm-templates",
                                     daemon=True)
            self._proc.start()
            child.close()
            if not parent.poll(180) or parent.recv()[0] != "ready":
                self._proc.kill()
                raise RuntimeError("the chat-template process did not start")
            self._conn = parent

    def start(self) -> None:
        """Start the child now (it loads the tokenizers; takes a few seconds)."""
        self._ensure_started()

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(5)
        self._proc = None
        self._conn = None

    def _call(self, job: tuple, deadline_s: float) -> tuple[str, str]:
        self._ensure_started()  # (re)start first: the time limit covers the rendering only
        self._conn.send(job)
        if not self._conn.poll(deadline_s):
            self._kill()
            return "timeout", ""
        try:
            return self._conn.recv()
        except EOFError:
            self._kill()
            return "error", "the template process exited"

    async def render(self, model: str, messages: list[dict], template: str, add_generation_prompt: bool,
                     kwargs: dict[str, Any]) -> str:
        """The conversation rendered by ``template``, as text.

        Raises:
            APIError: 400 when the template fails, returns no text or exceeds the time limit.
        """
        async with self._lock:  # one rendering at a time; others wait their turn
            kind, text = await asyncio.to_thread(self._call, (model, messages, template, add_generation_prompt,
                                                              kwargs), self.timeout_s)
        if kind == "timeout":
            raise APIError(f"the request's chat template did not finish within {self.timeout_s:g} s", 400,
                           "chat_template_kwargs")
        if kind != "ok":
            raise APIError(f"cannot apply the chat template: {text}", 400, "chat_template_kwargs")
        return text

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._kill()
