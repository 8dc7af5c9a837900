"""``ModelExecutor``: runs a ``StepPlan`` with real forward passes over the shared KV pool."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import replace

import torch

from seallm.core import SeqChunk, StepPlan, StepResult
from seallm.models.attention import build_metadata, kv_view, layer_page_views
from seallm.models.llama import LlamaForCausalLM
from seallm.worker.malloc import tune_malloc
from seallm.engine.messages import ModelEvent
from seallm.worker.sampler import Sampler
from seallm.worker.weights import WeightLoader, model_bytes


class ModelExecutor:
    """Holds the resident models and the device's KV pool tensor.

    Args:
        models: name -> loaded model.
        num_pages: pages in the pool; page_size_bytes: bytes per page.
        tokens_per_page: name -> tokens of that model per page (from ``KVCacheManager``).
        device: torch device of the models and the pool.
        num_host_pages: pages of the host swap space (0: no swapping).
        loader: loads further models at run time (:class:`~seallm.worker.weights.WeightLoader`;
            None: the set of models is fixed). Makes this a ``ModelLoader``.
        concurrent_models: CPU only: most models whose iterations run at the same time
            (:meth:`execute_concurrent`), each on its share of the intra-op threads; 1: one
            iteration at a time on all of them. Capped by the thread count.

    The pool is one uint8 tensor of ``num_pages * page_size_bytes`` bytes; each model gets
    a strided view of it (:func:`seallm.models.attention.kv_view`). The swap space is a
    ``[num_host_pages, page_size_bytes]`` uint8 tensor in host memory (pinned on CUDA).
    """

    def __init__(self, models: dict[str, LlamaForCausalLM], num_pages: int, page_size_bytes: int,
                 tokens_per_page: dict[str, int], device: str | torch.device = "cpu",
                 num_host_pages: int = 0, loader: WeightLoader | None = None,
                 concurrent_models: int = 1) -> None:
        self.device = torch.device(device)
        self.num_threads = torch.get_num_threads()
        self.max_concurrent_plans = (max(1, min(int(concurrent_models), self.num_threads))
                                     if self.device.type == "cpu" else 1)
        self._lanes: ThreadPoolExecutor | None = None
        self._lane_set_threads = False  # a lane changed its count (and PyTorch's process-wide one)
        if self.device.type == "cpu":
            tune_malloc()
        self.models: dict[str, LlamaForCausalLM] = {}
        self.tokens_per_page = dict(tokens_per_page)
        self.page_size_bytes = page_size_bytes
        self.pool = torch.zeros(num_pages * page_size_bytes, dtype=torch.uint8, device=self.device)
        self.kv_views: dict[str, torch.Tensor] = {}
        self.kv_pages: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        for name, m in models.items():
            self._attach(name, m)
        self.loader = loader
        self.pages = self.pool.view(num_pages, page_size_bytes)
        # torch.empty: host memory is committed only as pages are swapped out (CPU).
        self.host_pages = torch.empty((num_host_pages, page_size_bytes), dtype=torch.uint8,
                                      pin_memory=self.device.type == "cuda" and num_host_pages > 0)
        self.sampler = Sampler()

    def _attach(self, name: str, m: LlamaForCausalLM) -> None:
        c = m.config
        self.models[name] = m
        self.kv_views[name] = kv_view(self.pool, self.page_size_bytes, c.num_layers, self.tokens_per_page[name],
                                      c.num_kv_heads, c.head_dim, m.dtype)
        self.kv_pages[name] = layer_page_views(self.kv_views[name])

    # ---- ModelLoader --------------------------------------------------------------------------
    def start_load(self, model: str) -> None:
        """Begin loading ``model`` in the background (host cache, else disk).

        Raises:
            ValueError: no loader, or an unknown model.
        """
        if self.loader is None:
            raise ValueError("this executor has no weight loader")
        self.loader.start(model)

    def poll_loads(self) -> list[ModelEvent]:
        """Finished loads; a loaded model is attached to the KV pool and runs from now on."""
        if self.loader is None:
            return []
        events = []
        for name, m, ev in self.loader.poll():
            if m is not None:
                self._attach(name, m)
            events.append(ev)
        return events

    def unload(self, model: str) -> None:
        """Drop ``model`` from the device; its weights go to the host cache."""
        m = self.models.pop(model)
        self.kv_views.pop(model, None)
        self.kv_pages.pop(model, None)
        if self.loader is not None:
            self.loader.release(model, m)
        del m
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def weights_bytes(self, model: str) -> int:
        return model_bytes(self.models[model])

    def copy_pages(self, swaps) -> None:
        """Perform a plan's page copies in order (``PageCopy``: device <-> host swap space)."""
        for c in swaps:
            src = torch.tensor([p for p, _ in c.pages], dtype=torch.long)
            dst = torch.tensor([p for _, p in c.pages], dtype=torch.long)
            if c.to_host:
                self.host_pages.index_copy_(0, dst, self.pages.index_select(0, src.to(self.device)).cpu())
            else:
                self.pages.index_copy_(0, dst.to(self.device), self.host_pages.index_select(0, src).to(self.device))

    def execute_concurrent(self, plans: list[StepPlan]) -> list[StepResult | Exception]:
        """Run several models' plans at the same time (CPU), each in its own thread with its
        share of the intra-op threads (split evenly, the first plans get the remainder) (``torch.set_num_threads`` is per thread);
        returns each plan's result, its ``step_time`` scaled by its share of the threads
        (see :class:`~seallm.engine.executor.ConcurrentExecutor`), or the exception it
        raised.

        Raises:
            ValueError: more plans than ``max_concurrent_plans``, or two plans of one model.
        """
        n = len(plans)
        if n > self.max_concurrent_plans or len({p.model for p in plans}) != n:
            raise ValueError(f"cannot run {n} plans at once (at most {self.max_concurrent_plans}, distinct models)")
        if self._lanes is None:
            self._lanes = ThreadPoolExecutor(self.max_concurrent_plans, thread_name_prefix="seallm-lane")
        total = self.num_threads
        shares = [total // n + (1 if i < total % n else 0) for i in range(n)]
        futures = [self._lanes.submit(self._run_lane, p, k) for p, k in zip(plans, shares)]
        try:
            out: list[StepResult | Exception] = []
            for f, k in zip(futures, shares):
                try:
                    r = f.result()
                except Exception as e:  # noqa: BLE001 - reported per plan
                    out.append(e)
                    continue
                out.append(replace(r, step_time=r.step_time * k / total))
            return out
        finally:
            # Never leave a lane running (an interrupt here must not let a later step run
            # the same requests beside it), and restore the process-wide thread count that
            # PyTorch gives new threads (each lane's set_num_threads also changed it).
            wait(futures)
            if self._lane_set_threads:
                self._lane_set_threads = False
                torch.set_num_threads(total)

    def _run_lane(self, plan: StepPlan, threads: int) -> StepResult:
        # On a new thread PyTorch applies the process-wide count at its first op, which would
        # override a count set before it: read first, then set.
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
            self._lane_set_threads = True
        return self.execute(plan)

    def execute(self, plan: StepPlan) -> StepResult:
        """Perform the plan's page copies, in order, then run one iteration of ``plan.model``;
        returns the sampled tokens, the forward time and the copy time (s)."""
        swap_time = 0.0
        if plan.swaps:
            t0 = time.perf_counter()
            self.copy_pages(plan.swaps)
            swap_time = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.sampler.forget(plan.finished_ids)
        model = self.models[plan.model]
        decodes = [s for s in plan.seqs if s.is_decode]
        prefills = [s for s in plan.seqs if not s.is_decode]
        seqs: list[SeqChunk] = decodes + prefills
        ids: list[int] = []
        pos: list[int] = []
        rows, sampled = [], []
        for s in seqs:
            ids.extend(s.token_ids)
            pos.extend(range(s.start_pos, s.start_pos + s.num_tokens))
            if s.sample:
                rows.append(len(ids) - 1)
                sampled.append(s)
        meta = build_metadata([(s.start_pos, s.num_tokens, s.block_table) for s in seqs], len(decodes),
                              self.tokens_per_page[plan.model], model.config.sliding_window)
        dev = self.device
        if dev.type != "cpu":
            meta = _to_device(meta, dev)
        logits = model.forward(
            torch.tensor(ids, dtype=torch.long, device=dev),
            torch.tensor(pos, dtype=torch.long, device=dev),
            max(pos),
            self.kv_views[plan.model],
            self.kv_pages[plan.model],
            meta,
            torch.tensor(rows, dtype=torch.long, device=dev),
        )
        samples = {}
        if sampled:
            outs = self.sampler.sample(logits.cpu(), [s.request_id for s in sampled], [s.params for s in sampled])
            samples = {s.request_id: o for s, o in zip(sampled, outs)}
        return StepResult(plan.model, samples, time.perf_counter() - t0, swap_time)


def _to_device(meta, dev: torch.device):
    for name in ("slot_pages", "slot_offsets", "decode_block_tables", "decode_mask", "decode_context_lens"):
        t = getattr(meta, name)
        if t is not None:
            setattr(meta, name, t.to(dev, non_blocking=True))
    for p in meta.prefills:
        p.block_table = p.block_table.to(dev, non_blocking=True)
        if p.mask is not None:
            p.mask = p.mask.to(dev, non_blocking=True)
    return meta
