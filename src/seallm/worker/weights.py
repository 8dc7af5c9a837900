"""Model weights loaded and unloaded at run time: a host-memory weight cache and a loader
thread, so a replica keeps serving its resident models while another one loads.

A cold load reads the checkpoint's safetensors files (``source="disk"``). The weights of an
unloaded model stay in the host cache (pinned memory on CUDA), least recently unloaded out
first beyond ``capacity_bytes``, so a reload is a memory copy (``source="host_cache"``): on
CUDA a copy from pinned host memory to the device; on CPU, where host and device memory are
one, the cached tensors themselves are handed back (no copy at all).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from seallm.engine.messages import ModelEvent
from seallm.models.config import ModelConfig
from seallm.models.llama import LlamaForCausalLM

logger = logging.getLogger("seallm.worker")


def model_tensors(model: LlamaForCausalLM) -> list[torch.Tensor]:
    """Every weight tensor of ``model``, each once (a tied LM head is the embedding)."""
    out, seen = [], set()
    for t in [model.embed, model.lm_head, model.norm] + [v for w in model.layers for v in vars(w).values()]:
        if isinstance(t, torch.Tensor) and id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out


def model_bytes(model: LlamaForCausalLM) -> int:
    """Bytes of ``model``'s weights."""
    return sum(t.numel() * t.element_size() for t in model_tensors(model))


def copy_model(model: LlamaForCausalLM, dev: torch.device, pin: bool = False) -> LlamaForCausalLM:
    """A copy of ``model`` with every weight on ``dev`` (``pin``: in pinned host memory);
    RoPE tables are rebuilt there on first use."""
    def move(t: torch.Tensor | None) -> torch.Tensor | None:
        if t is None:
            return None
        if t.is_mkldnn:  # a weight packed for the CPU (LlamaForCausalLM.packed_for_cpu)
            if dev.type == "cpu" and not pin:
                return t.clone()
            t = t.to_dense()
        if pin:
            return t.to("cpu").pin_memory()
        return t.to(dev, non_blocking=True, copy=True)

    layers = [type(w)(**{k: move(v) for k, v in vars(w).items()}) for w in model.layers]
    embed = move(model.embed)
    lm_head = embed if model.config.tie_word_embeddings else move(model.lm_head)
    out = LlamaForCausalLM(model.config, embed, layers, move(model.norm), lm_head)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return out


class HostWeightCache:
    """Weights of unloaded models in host memory, LRU beyond ``capacity_bytes`` (0: none).

    Thread-safe (the loader thread takes, the engine thread puts).
    """

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = int(capacity_bytes)
        self._lock = threading.Lock()
        self._models: OrderedDict[str, tuple[LlamaForCausalLM, int]] = OrderedDict()

    def __contains__(self, name: str) -> bool:
        with self._lock:
            return name in self._models

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return sum(b for _, b in self._models.values())

    def put(self, name: str, model: LlamaForCausalLM) -> None:
        """Keep ``model`` (host tensors) as the most recent entry; older ones leave beyond the capacity."""
        nbytes = model_bytes(model)
        with self._lock:
            self._models.pop(name, None)
            if nbytes > self.capacity_bytes:
                return
            self._models[name] = (model, nbytes)
            while sum(b for _, b in self._models.values()) > self.capacity_bytes:
                old, _ = self._models.popitem(last=False)
                logger.info("host weight cache: dropped %s (capacity %d bytes)", old, self.capacity_bytes)

    def get(self, name: str, remove: bool) -> LlamaForCausalLM | None:
        """The cached model (taken out with ``remove``), or None."""
        with self._lock:
            entry = self._models.pop(name, None) if remove else self._models.get(name)
            if entry is not None and not remove:
                self._models.move_to_end(name)
            return entry[0] if entry is not None else None


class WeightLoader:
    """Loads models onto ``device`` on a background thread, one at a time.

    Args:
        configs: every model the replica may hold (name -> config with its checkpoint path).
        device: the replica's torch device.
        host_cache_bytes: capacity of the host weight cache (bytes).
    """

    def __init__(self, configs: dict[str, ModelConfig], device: torch.device, host_cache_bytes: int) -> None:
        self.configs = dict(configs)
        self.device = device
        self.cache = HostWeightCache(host_cache_bytes)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="seallm-load")
        self._pending: dict[str, Future] = {}

    def start(self, name: str) -> None:
        """Begin loading ``name`` (no-op while it is loading).

        Raises:
            ValueError: an unknown model.
        """
        if name not in self.configs:
            raise ValueError(f"unknown model {name!r}")
        if name not in self._pending:
            self._pending[name] = self._pool.submit(self._load, name)

    def load_now(self, name: str) -> LlamaForCausalLM:
        """Load ``name`` in this thread and return it (the models resident at start); the
        same path as a background load (host cache, else the checkpoint).

        Raises:
            ValueError: an unknown model. seallm.models.CheckpointError: a bad checkpoint.
        """
        if name not in self.configs:
            raise ValueError(f"unknown model {name!r}")
        return self._load(name)[0]

    def _load(self, name: str) -> tuple[LlamaForCausalLM, str, float]:
        from seallm.models.loader import load_model

        t0 = time.perf_counter()
        on_cpu = self.device.type == "cpu"
        cached = self.cache.get(name, remove=on_cpu)
        if cached is not None:
            model = cached if on_cpu else copy_model(cached, self.device)
            return model, "host_cache", time.perf_counter() - t0
        host = load_model(self.configs[name])
        if on_cpu:
            model = host.packed_for_cpu()
        else:
            self.cache.put(name, copy_model(host, self.device, pin=True))
            model = copy_model(host, self.device)
        return model, "disk", time.perf_counter() - t0

    def poll(self) -> list[tuple[str, LlamaForCausalLM | None, ModelEvent]]:
        """Loads finished since the last call: ``(name, model or None, event)``."""
        out = []
        for name, fut in list(self._pending.items()):
            if not fut.done():
                continue
            del self._pending[name]
            try:
                model, source, seconds = fut.result()
            except Exception as e:  # noqa: BLE001 - a bad checkpoint fails its model's requests only
                logger.exception("loading model %s failed", name)
                out.append((name, None, ModelEvent(name, "load_failed", error=f"{type(e).__name__}: {e}")))
                continue
            out.append((name, model, ModelEvent(name, "loaded", source, seconds, model_bytes(model))))
        return out

    def release(self, name: str, model: LlamaForCausalLM) -> None:
        """``name`` leaves the device: keep its weights in the host cache."""
        if self.device.type == "cpu":
            self.cache.put(name, model)
        elif name not in self.cache:
            self.cache.put(name, copy_model(model, torch.device("cpu"), pin=True))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
