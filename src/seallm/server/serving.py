"""OpenAI completions and chat completions on top of the engine process.

The front end tokenizes, validates, detokenizes incrementally, applies stop strings and
streams; the engine only sees token ids.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse, StreamingResponse

from seallm.core import SLO, SamplingParams
from seallm.engine.detokenizer import IncrementalDetokenizer
from seallm.engine.messages import AddRequest, Delta, ModelInfo
from seallm.engine.requests import check_prompt
from seallm.server.engine_client import EngineDeadError
from seallm.server.replicas import ReplicaSet
from seallm.server.errors import APIError, error_body
from seallm.server.metrics import ServerMetrics
from seallm.server.protocol import ChatCompletionRequest, CompletionRequest
from seallm.server.templates import TemplateSandbox, check_template_kwargs

# Prompts longer than this (characters) are tokenized on the tokenizer thread, not inline.
_INLINE_TOKENIZE_CHARS = 4096
RETRY_AFTER_S = 1  # Retry-After of a 429 (waiting queue full) or a 503 (engine restarting)


@dataclass
class ServedModel:
    info: ModelInfo
    tokenizer: Any | None


@dataclass
class _Seq:
    """One generated sequence (a prompt x one of ``n``)."""

    index: int
    request_id: str
    model: str
    prompt_ids: list[int]
    params: SamplingParams
    detok: IncrementalDetokenizer | None
    arrival: float
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[tuple[float, list[tuple[int, float]]]] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    first_token_time: float | None = None
    error: str | None = None
    error_status: int = 400
    admission: str | None = None  # an SLO planner's verdict, from the final delta


class OpenAIServing:
    """Request handling for ``/v1/completions`` and ``/v1/chat/completions``."""

    def __init__(self, replicas: ReplicaSet, models: dict[str, ServedModel], metrics: ServerMetrics,
                 max_tokens_limit: int | None = None, slo_classes: dict[str, SLO] | None = None,
                 max_sequences_per_request: int = 256, template_sandbox: TemplateSandbox | None = None) -> None:
        self.replicas = replicas
        self.models = models
        self.metrics = metrics
        self.max_tokens_limit = max_tokens_limit
        self.slo_classes = slo_classes or {}
        self.max_sequences_per_request = max_sequences_per_request
        self.template_sandbox = template_sandbox  # None: request-supplied chat templates are refused
        # One thread for tokenizers (a fast tokenizer must not be used from several threads at
        # once): long prompts and chat templates never block the event loop.
        self._tokenizer_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="seallm-tokenize")

    async def _off_loop(self, fn):
        """``fn()`` on the tokenizer thread."""
        return await asyncio.get_running_loop().run_in_executor(self._tokenizer_thread, fn)

    def close(self) -> None:
        self._tokenizer_thread.shutdown(wait=False, cancel_futures=True)
        if self.template_sandbox is not None:
            self.template_sandbox.close()

    def _slo(self, req: Any) -> SLO | None:
        """The request's SLO: its ``slo_class`` (built-in or the deployment's) with the
        fields of ``slo`` overriding it, or ``slo`` alone; None without either.

        Raises:
            APIError: 400 for an unknown class or an invalid combination of targets.
        """
        base = None
        if req.slo_class is not None:
            base = self.slo_classes.get(req.slo_class)
            if base is None:
                raise APIError(f"unknown slo_class {req.slo_class!r}; classes: {sorted(self.slo_classes)}",
                               400, "slo_class")
        if req.slo is None:
            return base
        given = {k: getattr(req.slo, k) for k in req.slo.model_fields_set if getattr(req.slo, k) is not None}
        fields = dict(vars(base)) if base is not None else {}
        if "ttft" in given:  # one TTFT form replaces the other
            fields.pop("ttft_slowdown", None)
        if "ttft_slowdown" in given:
            fields.pop("ttft", None)
        fields.update(given)
        try:
            return SLO(**fields)
        except ValueError as e:
            raise APIError(str(e), 400, "slo") from None

    # ---- validation ---------------------------------------------------------------------
    def _model(self, name: str) -> ServedModel:
        m = self.models.get(name)
        if m is None:
            raise APIError(f"The model `{name}` does not exist. Served models: {', '.join(self.models)}.",
                           404, "model", "model_not_found")
        return m

    @staticmethod
    def _reject_unsupported(req: Any) -> None:
        if req.presence_penalty or req.frequency_penalty:
            raise APIError("presence_penalty and frequency_penalty are not supported (use 0)", 400, "presence_penalty")
        if getattr(req, "logit_bias", None):
            raise APIError("logit_bias is not supported", 400, "logit_bias")
        if isinstance(req, CompletionRequest):
            if req.echo:
                raise APIError("echo is not supported", 400, "echo")
            if req.suffix:
                raise APIError("suffix is not supported", 400, "suffix")
            if req.best_of is not None and req.best_of != req.n:
                raise APIError("best_of other than n is not supported", 400, "best_of")
        else:
            if req.tools:
                raise APIError("tools are not supported", 400, "tools")
            rf = req.response_format
            if rf and rf.get("type") not in (None, "text"):
                raise APIError("only response_format {'type': 'text'} is supported", 400, "response_format")

    def _params(self, req: Any, m: ServedModel, prompt_len: int, max_tokens: int | None, logprobs: int | None,
                seed_offset: int) -> SamplingParams:
        limit = m.info.max_model_len - prompt_len  # >= 1: check_prompt refused longer prompts
        if max_tokens is None:
            max_tokens = limit if isinstance(req, ChatCompletionRequest) else 16
            if self.max_tokens_limit is not None:
                max_tokens = min(max_tokens, self.max_tokens_limit)
            max_tokens = min(max_tokens, limit)
        if max_tokens < 1:
            raise APIError(f"max_tokens must be at least 1, got {max_tokens}", 400, "max_tokens")
        if self.max_tokens_limit is not None and max_tokens > self.max_tokens_limit:
            raise APIError(f"max_tokens={max_tokens} exceeds this server's limit of {self.max_tokens_limit}",
                           400, "max_tokens")
        if max_tokens > limit:
            raise APIError(f"This model's maximum context length is {m.info.max_model_len} tokens. However, you "
                           f"requested {prompt_len + max_tokens} tokens ({prompt_len} in the prompt, {max_tokens} "
                           f"for the completion). Please reduce the prompt or max_tokens.", 400, "max_tokens")
        if prompt_len + max_tokens > m.info.kv_capacity_tokens:
            raise APIError(f"the request needs up to {prompt_len + max_tokens} tokens of KV cache but the whole pool "
                           f"holds {m.info.kv_capacity_tokens} tokens of this model", 400, "max_tokens")
        if req.stop_token_ids and any(not 0 <= t < m.info.vocab_size for t in req.stop_token_ids):
            raise APIError("stop_token_ids must be token ids of the model's vocabulary", 400, "stop_token_ids")
        try:
            return SamplingParams(
                max_tokens=max_tokens, temperature=1.0 if req.temperature is None else req.temperature,
                top_p=1.0 if req.top_p is None else req.top_p, top_k=req.top_k or 0,
                min_p=req.min_p or 0.0, seed=None if req.seed is None else req.seed + seed_offset,
                stop=req.stop or (), stop_token_ids=req.stop_token_ids or (), ignore_eos=req.ignore_eos,
                logprobs=logprobs, include_stop_str_in_output=req.include_stop_str_in_output,
                skip_special_tokens=req.skip_special_tokens)
        except ValueError as e:
            raise APIError(str(e), 400) from None

    async def _completion_prompts(self, req: CompletionRequest, m: ServedModel) -> list[list[int]]:
        p = req.prompt
        if isinstance(p, str):
            texts, ids_list = [p], None
        elif p and all(isinstance(x, str) for x in p):
            texts, ids_list = list(p), None
        elif p and all(isinstance(x, int) for x in p):
            texts, ids_list = None, [list(p)]
        elif p and all(isinstance(x, list) for x in p):
            texts, ids_list = None, [list(x) for x in p]
        else:
            raise APIError("prompt must not be empty", 400, "prompt")
        self._check_num_sequences(len(texts if texts is not None else ids_list), req.n)
        if texts is not None:
            if m.tokenizer is None:
                raise APIError(f"model {m.info.name!r} has no tokenizer; send token ids", 400, "prompt")
            try:
                if sum(len(t) for t in texts) > _INLINE_TOKENIZE_CHARS:
                    ids_list = await self._off_loop(lambda: [m.tokenizer(t)["input_ids"] for t in texts])
                else:
                    ids_list = [m.tokenizer(t)["input_ids"] for t in texts]
            except Exception as e:  # e.g. a lone surrogate: not encodable text
                raise APIError(f"the prompt cannot be tokenized: {type(e).__name__}", 400, "prompt") from None
        return [self._checked(m, ids, "prompt") for ids in ids_list]

    def _checked(self, m: ServedModel, ids: Any, param: str) -> list[int]:
        """Token ids checked against the model's vocabulary and context (400 otherwise)."""
        if not isinstance(ids, (list, tuple)):
            raise APIError(f"the {param} did not produce token ids", 400, param)
        try:
            return check_prompt(m.info.name, ids, m.info)
        except ValueError as e:
            raise APIError(str(e), 400, param) from None

    def _check_num_sequences(self, num_prompts: int, n: int) -> None:
        if num_prompts * n > self.max_sequences_per_request:
            raise APIError(f"{num_prompts} prompts x n={n} = {num_prompts * n} sequences exceed this server's limit "
                           f"of {self.max_sequences_per_request} per request (max_sequences_per_request)", 400,
                           "prompt")

    async def _chat_prompt(self, req: ChatCompletionRequest, m: ServedModel) -> list[int]:
        tok = m.tokenizer
        variables, template = check_template_kwargs(req.chat_template_kwargs, self.template_sandbox is not None)
        if tok is None or (template is None and not getattr(tok, "chat_template", None)):
            raise APIError(f"model {m.info.name!r} has no chat template; use /v1/completions", 400, "messages")
        msgs = []
        for msg in req.messages:
            d = msg.model_dump(exclude_none=True)
            if isinstance(msg.content, list):
                d["content"] = "".join(part.text for part in msg.content)
            msgs.append(d)
        if template is not None:
            text = await self.template_sandbox.render(m.info.name, msgs, template, req.add_generation_prompt,
                                                      variables)
            ids = await self._off_loop(lambda: tok(text, add_special_tokens=False)["input_ids"])
        else:
            def render():
                return tok.apply_chat_template(msgs, add_generation_prompt=req.add_generation_prompt, tokenize=True,
                                               **variables)
            try:
                ids = await self._off_loop(render)
            except Exception as e:  # jinja errors: the messages do not fit the template
                raise APIError(f"cannot apply the chat template: {type(e).__name__}: {e}", 400, "messages") from None
            if isinstance(ids, dict) or hasattr(ids, "keys"):  # transformers versions differ on the default
                ids = ids["input_ids"]
        if not ids:
            raise APIError("the chat prompt is empty", 400, "messages")
        return self._checked(m, ids, "messages")

    # ---- requests ---------------------------------------------------------------------------
    async def completions(self, req: CompletionRequest, http: HTTPRequest):
        m = self._model(req.model)
        self._reject_unsupported(req)
        prompts = await self._completion_prompts(req, m)
        seqs = self._make_seqs(req, m, prompts, req.max_tokens, req.logprobs)
        return await self._run(req, http, seqs, chat=False)

    async def chat(self, req: ChatCompletionRequest, http: HTTPRequest):
        m = self._model(req.model)
        self._reject_unsupported(req)
        self._check_num_sequences(1, req.n)
        ids = await self._chat_prompt(req, m)
        max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        lp = (req.top_logprobs or 0) if req.logprobs else None
        seqs = self._make_seqs(req, m, [ids], max_tokens, lp)
        return await self._run(req, http, seqs, chat=True)

    def _make_seqs(self, req: Any, m: ServedModel, prompts: list[list[int]], max_tokens: int | None,
                   logprobs: int | None) -> list[_Seq]:
        now = time.time()
        base = uuid.uuid4().hex
        seqs = []
        for i, ids in enumerate(prompts):
            for j in range(req.n):
                p = self._params(req, m, len(ids), max_tokens, logprobs, j)
                detok = None
                if m.tokenizer is not None:
                    detok = IncrementalDetokenizer(m.tokenizer, ids, p.stop, p.include_stop_str_in_output,
                                                   p.skip_special_tokens)
                seqs.append(_Seq(len(seqs), f"{base}-{i}-{j}", m.info.name, ids, p, detok, now))
        return seqs

    async def _run(self, req: Any, http: HTTPRequest, seqs: list[_Seq], chat: bool):
        slo = self._slo(req)
        try:  # every sequence of one HTTP request goes to the same replica (one queue)
            engines = self.replicas.try_order(seqs[0].model)
        except EngineDeadError as e:  # restarting (Retry-After), or given up (none)
            headers = None if e.retry_after is None else {"Retry-After": str(max(1, math.ceil(e.retry_after)))}
            raise APIError(str(e), 503, headers=headers) from None
        for k, engine in enumerate(engines):
            # Try-then-forward (routing "slo"): every try but the last asks the replica to
            # refuse what its SLO planner cannot guarantee; a refusal (429) moves on.
            last = k == len(engines) - 1
            queue: asyncio.Queue = asyncio.Queue()
            try:
                try:
                    for s in seqs:
                        await engine.add(AddRequest(s.request_id, s.model, s.prompt_ids, s.params, s.arrival,
                                                    req.priority, slo, None if last else "reject"),
                                         queue, s.index)
                except EngineDeadError as e:
                    if not last:
                        raise _Forward() from None
                    headers = None if e.retry_after is None else {
                        "Retry-After": str(max(1, math.ceil(e.retry_after)))}
                    raise APIError(str(e), 503, headers=headers) from None
                await self._admitted(seqs, queue, count_refusal=last)
                break
            except BaseException as e:  # refused, engine gone, or the client left while waiting
                self._abort_unfinished(seqs)
                if not (isinstance(e, _Forward) or isinstance(e, APIError) and e.status == 429 and not last):
                    raise
            # forward: the next replica starts the sequences afresh
            self.metrics.forwarded.labels(seqs[0].model).inc()
            for s in seqs:
                s.error, s.error_status, s.finish_reason = None, 400, None
        rid = ("chatcmpl-" if chat else "cmpl-") + seqs[0].request_id.split("-")[0]
        created = int(time.time())
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            gen = self._stream(rid, created, req.model, seqs, queue, chat, include_usage)
            return StreamingResponse(gen, media_type="text/event-stream")
        collect = asyncio.ensure_future(self._collect(seqs, queue))
        gone = asyncio.ensure_future(_wait_disconnect(http))
        try:
            done, _ = await asyncio.wait({collect, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not collect.done():
                collect.cancel()
            self._abort_unfinished(seqs)
        if collect not in done:
            return JSONResponse(error_body("client disconnected", 400), status_code=400)
        collect.result()
        failed = next((s for s in seqs if s.error), None)
        if failed is not None:
            headers = {"Retry-After": str(RETRY_AFTER_S)} if failed.error_status in (429, 503) else None
            return JSONResponse(error_body(failed.error, failed.error_status), status_code=failed.error_status,
                                headers=headers)
        return JSONResponse(self._final_body(rid, created, req.model, seqs, chat))

    async def _admitted(self, seqs: list[_Seq], queue: asyncio.Queue, count_refusal: bool = True) -> None:
        """Wait for the engine's verdict on every sequence (its first delta: an empty
        acknowledgement, or an error), before any response is started.

        Raises:
            APIError: the first refusal: 429 with ``Retry-After`` when the model's waiting
                queue is full, 400 for a request the engine rejected, 503 if it died.
        """
        pending = set(range(len(seqs)))
        early: list[tuple[int, Delta]] = []  # outputs of sequences already admitted
        failed: _Seq | None = None
        while pending:
            index, d = await queue.get()
            if index not in pending:
                early.append((index, d))
                continue
            pending.discard(index)
            if d.error:
                s = seqs[index]
                s.error, s.error_status, s.finish_reason = d.error, d.error_status, "abort"
                failed = failed or s
        if failed is None:
            if early:  # put them back ahead of what arrived since, in order
                rest = [queue.get_nowait() for _ in range(queue.qsize())]
                for item in early + rest:
                    queue.put_nowait(item)
            return
        headers = None
        if failed.error_status in (429, 503):
            headers = {"Retry-After": str(RETRY_AFTER_S)}
            if failed.error_status == 429 and count_refusal:
                self.metrics.refused.labels(failed.model).inc()
        raise APIError(failed.error, failed.error_status, "model" if failed.error_status == 429 else None,
                       headers=headers)

    def _abort_unfinished(self, seqs: list[_Seq]) -> None:
        ids = [s.request_id for s in seqs if s.finish_reason is None]
        if ids:
            self.replicas.abort(ids)

    async def _next(self, seqs: list[_Seq], queue: asyncio.Queue) -> tuple[_Seq, str]:
        """Apply the next delta; returns the sequence and the text that may be shown now."""
        index, d = await queue.get()
        s = seqs[index]
        return s, await self._apply(s, d)

    async def _apply(self, s: _Seq, d: Delta) -> str:
        now = time.time()
        if d.error:
            s.error, s.error_status = d.error, d.error_status
            s.finish_reason = "abort"
            return ""
        if d.token_ids and s.first_token_time is None:
            s.first_token_time = now
        s.token_ids.extend(d.token_ids)
        if d.logprobs:
            s.logprobs.extend(d.logprobs)
        text = s.detok.add(d.token_ids) if s.detok is not None and d.token_ids else ""
        if s.detok is not None and s.detok.stopped_by is not None and d.finish_reason is None:
            s.finish_reason, s.stop_reason = "stop", s.detok.stopped_by
            self.replicas.abort([s.request_id], reason="stop")
        elif d.finish_reason is not None:
            s.finish_reason, s.stop_reason = d.finish_reason, d.stop_reason
            if d.admission is not None:
                s.admission = d.admission
                self.metrics.admissions.labels(s.model, d.admission).inc()
            if s.detok is not None:
                text += s.detok.flush()
        if s.finish_reason is not None:
            if s.detok is not None:
                s.text = s.detok.text
            self.metrics.observe_finished(s.model, s.arrival, s.first_token_time, now, len(s.prompt_ids),
                                          len(s.token_ids), s.finish_reason, d.first_scheduled_time)
        return text

    async def _collect(self, seqs: list[_Seq], queue: asyncio.Queue) -> None:
        while any(s.finish_reason is None for s in seqs):
            s, _ = await self._next(seqs, queue)
            if s.error:  # the response is an error: the other sequences stop now
                self._abort_unfinished(seqs)
                return

    # ---- response bodies ----------------------------------------------------------------------
    def _usage(self, seqs: list[_Seq]) -> dict[str, int]:
        prompts: dict[int, int] = {}
        for s in seqs:  # a prompt counts once whatever n is
            prompts[id(s.prompt_ids)] = len(s.prompt_ids)
        p = sum(prompts.values())
        c = sum(len(s.token_ids) for s in seqs)
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

    def _tok_text(self, model: str, tid: int) -> str:
        tok = self.models[model].tokenizer
        return tok.decode([tid]) if tok is not None else f"token_id:{tid}"

    def _completion_logprobs(self, s: _Seq, lps: list, start_offset: int) -> dict:
        tokens, token_lps, tops, offsets = [], [], [], []
        off = start_offset
        for tid, (lp, top) in zip(s.token_ids[len(s.token_ids) - len(lps):], lps):
            t = self._tok_text(s.model, tid)
            tokens.append(t)
            token_lps.append(lp)
            tops.append({self._tok_text(s.model, a): b for a, b in top} if s.params.logprobs else None)
            offsets.append(off)
            off += len(t)
        return {"tokens": tokens, "token_logprobs": token_lps, "top_logprobs": tops, "text_offset": offsets}

    def _chat_logprobs(self, s: _Seq, lps: list) -> dict:
        content = []
        for tid, (lp, top) in zip(s.token_ids[len(s.token_ids) - len(lps):], lps):
            t = self._tok_text(s.model, tid)
            content.append({"token": t, "logprob": lp, "bytes": list(t.encode()),
                            "top_logprobs": [{"token": (x := self._tok_text(s.model, a)), "logprob": b,
                                              "bytes": list(x.encode())} for a, b in top]})
        return {"content": content}

    def _final_body(self, rid: str, created: int, model: str, seqs: list[_Seq], chat: bool) -> dict:
        choices = []
        for s in seqs:
            want_lp = s.params.logprobs is not None
            if chat:
                choices.append({"index": s.index, "message": {"role": "assistant", "content": s.text},
                                "logprobs": self._chat_logprobs(s, s.logprobs) if want_lp else None,
                                "finish_reason": s.finish_reason, "stop_reason": s.stop_reason})
            else:
                choices.append({"index": s.index, "text": s.text,
                                "logprobs": self._completion_logprobs(s, s.logprobs, 0) if want_lp else None,
                                "finish_reason": s.finish_reason, "stop_reason": s.stop_reason})
        body = {"id": rid, "object": "chat.completion" if chat else "text_completion", "created": created,
                "model": model, "choices": choices, "usage": self._usage(seqs)}
        admission = _admission(seqs)
        if admission is not None:
            body["admission"] = admission
        return body

    async def _stream(self, rid: str, created: int, model: str, seqs: list[_Seq], queue: asyncio.Queue,
                      chat: bool, include_usage: bool) -> AsyncIterator[str]:
        obj = "chat.completion.chunk" if chat else "text_completion"

        def chunk(choices: list[dict], usage: dict | None = None, admission: str | None = None) -> str:
            body = {"id": rid, "object": obj, "created": created, "model": model, "choices": choices}
            if usage is not None:
                body["usage"] = usage
            if admission is not None:
                body["admission"] = admission
            return f"data: {_sse_safe(json.dumps(body, ensure_ascii=False))}\n\n"

        try:
            if chat:
                yield chunk([{"index": s.index, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                              "finish_reason": None} for s in seqs])
            text_off = {s.index: 0 for s in seqs}
            while any(s.finish_reason is None for s in seqs):
                index, d = await queue.get()
                s = seqs[index]
                n_before = len(s.logprobs)
                text = await self._apply(s, d)
                if s.error:
                    yield f"data: {json.dumps(error_body(s.error, s.error_status))}\n\n"
                    continue
                done = s.finish_reason is not None
                # Completions stream one chunk per new token even when its text is still empty
                # (an incomplete UTF-8 sequence, a possible stop string), as vLLM does, so clients
                # time every token; chat skips empty deltas.
                if not text and not done and (chat or not d.token_ids):
                    continue
                lps = s.logprobs[n_before:] if s.params.logprobs is not None else None
                if chat:
                    c = {"index": s.index, "delta": {"content": text} if text else {},
                         "logprobs": self._chat_logprobs(s, lps) if lps else None,
                         "finish_reason": s.finish_reason if done else None}
                else:
                    c = {"index": s.index, "text": text,
                         "logprobs": self._completion_logprobs(s, lps, text_off[s.index]) if lps else None,
                         "finish_reason": s.finish_reason if done else None}
                text_off[s.index] += len(text)
                if done:
                    c["stop_reason"] = s.stop_reason
                last = done and all(x.finish_reason is not None for x in seqs)
                yield chunk([c], admission=_admission(seqs) if last else None)
            if include_usage:
                yield chunk([], self._usage(seqs))
            yield "data: [DONE]\n\n"
        finally:  # client gone (cancelled) or finished: free whatever is still running
            self._abort_unfinished(seqs)


def _admission(seqs: list[_Seq]) -> str | None:
    """The response's ``admission``: "best_effort" if an SLO planner served any of its
    sequences best effort, "guaranteed" if it guaranteed them all, None without a planner."""
    verdicts = {s.admission for s in seqs}
    if "best_effort" in verdicts:
        return "best_effort"
    return "guaranteed" if verdicts == {"guaranteed"} else None


class _Forward(Exception):
    """A try of try-then-forward routing failed before the replica answered (its engine is
    down): the next replica is tried."""


_LINE_BREAKS = ("\x85", "\\u0085"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")


def _sse_safe(data: str) -> str:
    """JSON text with the line breaks that ``str.splitlines`` knows beyond CR/LF escaped
    (NEL, LINE and PARAGRAPH SEPARATOR; json.dumps already escapes control characters), so a
    client that splits the event stream with ``splitlines`` (httpx's ``aiter_lines``) never
    cuts an event in two. The JSON value is unchanged."""
    for raw, esc in _LINE_BREAKS:
        if raw in data:
            data = data.replace(raw, esc)
    return data


async def _wait_disconnect(http: HTTPRequest) -> None:
    while True:
        msg = await http.receive()
        if msg["type"] == "http.disconnect":
            return
