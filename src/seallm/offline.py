"""Offline inference: ``LLM(models=...).generate(prompts, SamplingParams(...), model=...)``."""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

from seallm.core import FinishReason, Request, SamplingParams
from seallm.deploy import DeploymentConfig, ModelEntry, build_engine
from seallm.engine.detokenizer import IncrementalDetokenizer
from seallm.engine.requests import new_request
from seallm.engine.output import RequestMetrics, RequestOutput
from seallm.models.config import ModelConfig

logger = logging.getLogger("seallm")

__all__ = ["LLM", "RequestOutput", "RequestMetrics"]


def load_tokenizer(path: str) -> Any | None:
    """``transformers.AutoTokenizer`` of a checkpoint folder, or None if it has no tokenizer files."""
    names = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
    if not any(os.path.exists(os.path.join(path, n)) for n in names):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


class LLM:
    """Several models resident on one device, sharing one unified paged KV cache.

    Args:
        models: name -> Hugging Face checkpoint folder.
        device: "cpu" or a CUDA device ("cuda", "cuda:0").
        kv_cache_memory: bytes of the KV pool ("2GiB", 1 << 30). None on CUDA sizes the pool
            from free memory after loading the weights (``gpu_memory_utilization`` of it).
        dtype: "auto" (each checkpoint's own) or float32 / bfloat16 / float16 for all.
        scheduling_policy: "seallm" (doubling budget, the default), "fcfs" (vLLM-like),
            "slos-serve" (SLO planner with soft admission) or "sarathi".
        policy_options: knobs of the policy (``seallm``: fields of ``SeaLLMConfig``).
        max_num_batched_tokens: per-iteration token budget (chunked prefill).
        max_num_seqs: most sequences per iteration.
        preemption_mode: "swap" (KV copied to host memory and back, the default) or "recompute".
        swap_space: host memory for swapped KV ("4GiB"), used with "swap".
        page_size_bytes: bytes per KV page; default: the smallest power of two giving every
            model >= 16 tokens per page.
        gpu_memory_utilization: fraction of free device memory for the pool (CUDA only).
        max_resident_models, weights_memory, host_weight_cache, residency_policy,
        residency_preempt_after, pinned:
            models loaded and unloaded at run time, as in the deployment file: at most
            ``max_resident_models`` (or ``weights_memory`` bytes of weights) on the device; a
            prompt for another model loads it (from the host cache of ``host_weight_cache``
            bytes, else from disk), evicting an idle unpinned one.
        concurrent_models: CPU: most models whose decode iterations run at the same time,
            each on its share of the threads ("auto": every model, up to the thread count;
            1: one iteration at a time).

    Raises:
        seallm.models.CheckpointError: unsupported architecture or malformed checkpoint.
        ValueError: bad sizes, an unknown policy, or a pool too small for one page.
    """

    def __init__(
        self,
        models: dict[str, str],
        device: str = "cpu",
        kv_cache_memory: int | str | None = "1GiB",
        dtype: str = "auto",
        scheduling_policy: str = "seallm",
        max_num_batched_tokens: int = 2048,
        max_num_seqs: int = 128,
        page_size_bytes: int | None = None,
        gpu_memory_utilization: float = 0.9,
        policy_options: dict | None = None,
        preemption_mode: str = "swap",
        swap_space: int | str = "4GiB",
        max_resident_models: int | None = None,
        weights_memory: int | str | None = None,
        host_weight_cache: int | str = "8GiB",
        residency_policy: str = "seallm",
        pinned: Sequence[str] = (),
        residency_preempt_after: float | None = 1.0,
        concurrent_models: int | str = "auto",
    ) -> None:
        if not models:
            raise ValueError("LLM needs at least one model: models={'name': '/path/to/checkpoint'}")
        unknown = set(pinned) - set(models)
        if unknown:
            raise ValueError(f"pinned models {sorted(unknown)} are not in models")
        cfg = DeploymentConfig(
            models=tuple(ModelEntry(n, p, dtype, n in set(pinned)) for n, p in models.items()), device=device,
            kv_cache_memory=kv_cache_memory, page_size_bytes=page_size_bytes, scheduling_policy=scheduling_policy,
            max_num_batched_tokens=max_num_batched_tokens, max_num_seqs=max_num_seqs,
            gpu_memory_utilization=gpu_memory_utilization, policy_options=dict(policy_options or {}),
            preemption_mode=preemption_mode, swap_space=swap_space, max_resident_models=max_resident_models,
            weights_memory=weights_memory, host_weight_cache=host_weight_cache, residency_policy=residency_policy,
            residency_preempt_after=residency_preempt_after, concurrent_models=concurrent_models)
        stack = build_engine(cfg)
        self.configs: dict[str, ModelConfig] = stack.model_configs
        self.kv = stack.kv
        self.scheduler = stack.scheduler
        self.core = stack.core
        self.tokenizers = {n: load_tokenizer(p) for n, p in models.items()}
        self._ids = itertools.count()

    @property
    def model_names(self) -> list[str]:
        """Every model of the deployment (resident or not)."""
        return list(self.configs)

    @property
    def resident_models(self) -> list[str]:
        """The models whose weights are on the device now."""
        return [m for m in self.configs if self.core.is_resident(m)]

    def load_model(self, name: str) -> None:
        """Make ``name`` resident now (evicting an idle unpinned model if needed).

        Raises:
            ValueError: an unknown model; RuntimeError: its load failed.
        """
        self.core.load_model(name)
        self._settle(lambda: self.core.is_resident(name), name)

    def unload_model(self, name: str) -> None:
        """Take ``name`` off the device (its weights stay in the host cache).

        Raises:
            ValueError: an unknown or pinned model.
        """
        self.core.unload_model(name, force=True)
        self._settle(lambda: not self.core.is_resident(name), name)

    def _settle(self, done, name: str) -> None:
        while not done():
            self.core.step()
            failed = [e for e in self.core.events if e.kind == "load_failed" and e.model == name]
            self.core.events.clear()
            if failed:
                raise RuntimeError(f"model {name!r} could not be loaded: {failed[0].error}")
            if self.core.idle:
                time.sleep(0.001)

    def generate(
        self,
        prompts: str | Sequence[str] | Sequence[Sequence[int]],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        model: str | Sequence[str] | None = None,
    ) -> list[RequestOutput]:
        """Run every prompt to completion with continuous batching; outputs in prompt order.

        Args:
            prompts: a string, a list of strings, or a list of token-id lists.
            sampling_params: one for all prompts or one per prompt (default: SamplingParams()).
            model: one model name for all prompts, or one per prompt; may be omitted when a
                single model is resident.

        Raises:
            ValueError: unknown model, list lengths that disagree, an empty prompt, a text
                prompt for a model without a tokenizer, or a prompt longer than the context.
        """
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]  # type: ignore[list-item]
        n = len(prompts)
        params = _per_prompt(sampling_params if sampling_params is not None else SamplingParams(), n, "sampling_params")
        names = _per_prompt(model if model is not None else self._only_model(), n, "model")
        reqs: list[Request] = []
        for prompt, p, name in zip(prompts, params, names):
            reqs.append(self._make_request(prompt, p, name))
        dets: dict[str, IncrementalDetokenizer] = {}
        try:
            for r in reqs:
                tok = self.tokenizers[r.model]
                if tok is not None:
                    dets[r.request_id] = IncrementalDetokenizer(
                        tok, r.prompt_token_ids, r.params.stop, r.params.include_stop_str_in_output,
                        r.params.skip_special_tokens)
                self.core.add_request(r)
            pending = {r.request_id for r in reqs}
            while pending:
                updated = self.core.step()
                self.core.events.clear()
                if self.core.idle and not updated:
                    time.sleep(0.001)  # only a model load is under way
                for r in updated:
                    d = dets.get(r.request_id)
                    if d is not None:
                        d.add(r.output_token_ids[-1:])
                        if d.stopped_by is not None and not r.is_finished:
                            self.core.abort_request(r.request_id, FinishReason.STOP)
                            r.stop_reason = d.stopped_by
                    if r.is_finished:
                        pending.discard(r.request_id)
                if not self.core.has_unfinished():
                    pending.clear()
        finally:
            for r in reqs:  # an exception (Ctrl-C) must not leave pages allocated
                if not r.is_finished:
                    self.core.abort_request(r.request_id)
        outs = []
        for prompt, r in zip(prompts, reqs):
            d = dets.get(r.request_id)
            if d is not None:
                d.flush()
            outs.append(RequestOutput(
                request_id=r.request_id, model=r.model, prompt=prompt if isinstance(prompt, str) else None,
                prompt_token_ids=r.prompt_token_ids, token_ids=list(r.output_token_ids),
                text=d.text if d is not None else "", finish_reason=str(r.finish_reason),
                stop_reason=r.stop_reason,
                logprobs=list(r.output_logprobs) if r.params.logprobs is not None else None,
                metrics=RequestMetrics.of(r)))
        return outs

    def _only_model(self) -> str:
        if len(self.configs) != 1:
            raise ValueError(f"several models are served ({', '.join(self.configs)}); pass model=")
        return next(iter(self.configs))

    def _make_request(self, prompt: Any, params: SamplingParams, name: str) -> Request:
        if name not in self.configs:
            raise ValueError(f"unknown model {name!r}; models: {', '.join(self.configs)}")
        cfg = self.configs[name]
        if isinstance(prompt, str):
            tok = self.tokenizers[name]
            if tok is None:
                raise ValueError(f"model {name!r} has no tokenizer files; pass token ids instead of text")
            prompt = tok(prompt)["input_ids"]
        return new_request(f"offline-{next(self._ids)}", name, cfg, prompt, params, self.core.clock.now())


def _per_prompt(value: Any, n: int, what: str) -> list[Any]:
    if isinstance(value, (str, SamplingParams)):
        return [value] * n
    value = list(value)
    if len(value) != n:
        raise ValueError(f"{what} has {len(value)} entries for {n} prompts")
    return value

