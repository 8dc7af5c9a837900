"""Cluster files: the devices, the services and the traffic a cluster plan is made for
(torch-free). Read by ``seallm simulate --cluster`` and ``seallm place``.

Format (every key optional except ``services``; ``default`` is the built-in file)::

    cluster: {device: h100-sxm, num_nodes: 4, devices_per_node: 8,
              memory_utilization: 0.9, kv_floor_tokens: 8192}
    services:                      # a list of services ...
      - {name: chat, arch: Llama-3.1-8B, path: /ckpt/llama3}   # path: for `seallm place`
      - {name: code, arch: Qwen2.5-14B}
    # ... or a mix of catalog architectures, named <arch>-<i>:
    # mix: {LLaMA-7B: 12, LLaMA-13B: 4, LLaMA-30B: 2, LLaMA-65B: 1}
    workload:
      traces: [conv, code]         # Azure 2023 traces (one stream) ... or synthetic:
      # synthetic: {rate: 20, arrival: gamma, cv: 2, length_dist: sharegpt}
      alpha: 0.9                   # split into services by power-law popularity
      drift_period_s: 600          # popularity rotates between services (none: fixed)
      window_start_s: 0
      duration_s: 600              # trace seconds (synthetic: seconds of arrivals)
      rate_scale: 1.0
      max_input_len: 1024          # length caps (tokens)
      max_output_len: 1024
    slo_scales: [2, 5, 10]
    scheduler: {max_num_batched_tokens: 2048, max_num_seqs: 256}   # vLLM V1's online defaults
    replacement: {mode: adaptive}  # none (default), fixed (interval_s: 60) or adaptive;
                                   # see seallm.cluster.replacement.ReplacementConfig
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

from seallm.bench.workload import (AzureWorkload, BenchRequest, LengthConfig, SyntheticWorkload, WorkloadError,
                                   build_workload, split_services)
from seallm.cluster.catalog import CatalogModel, catalog_model
from seallm.cluster.placement import DEFAULT_CHUNK_TOKENS
from seallm.cluster.replacement import ReplacementConfig
from seallm.cluster.spec import ClusterSpec
from seallm.sched import SchedulerConfig

#: Iteration limits of every group unless a cluster file says otherwise: vLLM V1's online
#: serving defaults on GPUs (a 2048-token chunked-prefill budget, 256 sequences).
DEFAULT_SCHEDULER = SchedulerConfig(DEFAULT_CHUNK_TOKENS, 256)

#: MuxServe's synthetic mix (multi-model-sharing.md §3.5): 12 x 7B, 4 x 13B, 2 x 30B, 1 x 65B.
DEFAULT_MIX = (("LLaMA-7B", 12), ("LLaMA-13B", 4), ("LLaMA-30B", 2), ("LLaMA-65B", 1))


@dataclass(frozen=True)
class ServiceEntry:
    """One service: its name, its architecture, and (for ``seallm place``) its checkpoint."""

    name: str
    arch: CatalogModel
    path: str | None = None


@dataclass(frozen=True)
class ClusterWorkload:
    """The traffic: one stream (Azure traces, or synthetic arrivals), split into the services
    by power-law popularity (:func:`~seallm.bench.workload.split_services`).

    Attributes:
        traces: Azure 2023 trace names or CSV paths (empty: synthetic).
        rate: synthetic: total requests/s (before ``rate_scale``). arrival, cv: synthetic
            process (``poisson`` or ``gamma``, coefficient of variation). length_dist:
            synthetic lengths (``sharegpt``, ``arxiv``, ``bwb`` or a CSV).
        alpha: popularity exponent; drift_period_s: rotation period of the popularity (s).
        window_start_s, duration_s: traces: the window, trace seconds (replayed in
            ``duration_s / rate_scale`` s); synthetic: seconds of arrivals.
        rate_scale: arrival-rate multiplier. lengths: caps and scaling.
    """

    traces: tuple[str, ...] = ("conv", "code")
    rate: float | None = None
    arrival: str = "poisson"
    cv: float = 1.0
    length_dist: str = "sharegpt"
    alpha: float = 0.9
    drift_period_s: float | None = None
    window_start_s: float = 0.0
    duration_s: float = 600.0
    rate_scale: float = 1.0
    lengths: LengthConfig = field(default_factory=lambda: LengthConfig(max_input_len=1024, max_output_len=1024))

    def __post_init__(self) -> None:
        if not self.traces and self.rate is None:
            raise WorkloadError("the workload needs traces or a synthetic rate")
        if self.traces and self.rate is not None:
            raise WorkloadError("give traces or a synthetic rate, not both")
        if not (self.duration_s > 0 and math.isfinite(self.duration_s)):
            raise WorkloadError(f"duration must be > 0 s, got {self.duration_s}")

    @property
    def replay_s(self) -> float:
        """Seconds the arrivals span once replayed."""
        return self.duration_s / self.rate_scale if self.traces else self.duration_s

    def requests(self, services: list[str], seed: int = 0) -> list[BenchRequest]:
        """The requests, sorted by arrival. Raises :class:`WorkloadError`."""
        if self.traces:
            stream = AzureWorkload(tuple((t, "_") for t in self.traces), self.window_start_s, self.duration_s,
                                   self.rate_scale, lengths=self.lengths)
        else:
            stream = SyntheticWorkload(("_",), self.rate, self.duration_s, arrival=self.arrival, cv=self.cv,
                                       length_dists=(("*", self.length_dist),), rate_scale=self.rate_scale,
                                       lengths=self.lengths)
        return split_services(build_workload(stream, seed), services, self.alpha, seed, self.drift_period_s)


@dataclass(frozen=True)
class ClusterConfig:
    """A cluster file (module docstring)."""

    cluster: ClusterSpec
    services: tuple[ServiceEntry, ...]
    workload: ClusterWorkload = field(default_factory=ClusterWorkload)
    slo_scales: tuple[float, ...] = (2.0, 5.0, 10.0)
    scheduler: SchedulerConfig = DEFAULT_SCHEDULER
    replacement: ReplacementConfig = field(default_factory=lambda: ReplacementConfig(mode="none"))

    def __post_init__(self) -> None:
        names = [s.name for s in self.services]
        if not names:
            raise ValueError("a cluster file needs at least one service")
        if len(set(names)) != len(names):
            raise ValueError(f"service names must be unique, got {names}")
        if not self.slo_scales or not all(x > 0 and math.isfinite(x) for x in self.slo_scales):
            raise ValueError(f"slo_scales must be positive numbers, got {list(self.slo_scales)}")

    @property
    def archs(self) -> dict[str, CatalogModel]:
        return {s.name: s.arch for s in self.services}

    def with_overrides(self, duration_s: float | None = None, rate_scale: float | None = None,
                       slo_scales: tuple[float, ...] | None = None, replacement_mode: str | None = None,
                       replacement_interval_s: float | None = None) -> "ClusterConfig":
        """A copy with the command line's values (None: keep). Raises ``ValueError``."""
        w = self.workload
        w = replace(w, duration_s=w.duration_s if duration_s is None else duration_s,
                    rate_scale=w.rate_scale if rate_scale is None else rate_scale)
        r = self.replacement
        r = replace(r, mode=r.mode if replacement_mode is None else replacement_mode,
                    interval_s=r.interval_s if replacement_interval_s is None else replacement_interval_s)
        return replace(self, workload=w, slo_scales=self.slo_scales if slo_scales is None else tuple(slo_scales),
                       replacement=r)


def _mix_services(mix: Any) -> list[ServiceEntry]:
    items = mix.items() if isinstance(mix, dict) else mix
    out = []
    for arch_name, count in items:
        arch = catalog_model(str(arch_name))
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"mix: {arch_name} needs a positive count, got {count!r}")
        out += [ServiceEntry(f"{arch.name.lower()}-{len(out) + i}", arch) for i in range(count)]
    return out


def default_cluster() -> ClusterConfig:
    """The built-in cluster: 32 H100s (4 nodes x 8), MuxServe's 19-model LLaMA mix, the
    Azure conv + code traces at their real rate split by popularity (alpha 0.9), 600 s."""
    return ClusterConfig(ClusterSpec(), tuple(_mix_services(DEFAULT_MIX)))


_WORKLOAD_KEYS = {"traces", "synthetic", "alpha", "drift_period_s", "window_start_s", "duration_s", "rate_scale",
                  "max_input_len", "max_output_len", "length_scale"}


def _workload(raw: dict) -> ClusterWorkload:
    unknown = set(raw) - _WORKLOAD_KEYS
    if unknown:
        raise ValueError(f"workload: unknown keys {sorted(unknown)}; known: {sorted(_WORKLOAD_KEYS)}")
    kw: dict[str, Any] = {k: raw[k] for k in ("alpha", "drift_period_s", "window_start_s", "duration_s", "rate_scale")
                          if k in raw}
    kw["lengths"] = LengthConfig(float(raw.get("length_scale", 1.0)), raw.get("max_input_len", 1024),
                                 raw.get("max_output_len", 1024))
    if "synthetic" in raw:
        syn = raw["synthetic"] or {}
        extra = set(syn) - {"rate", "arrival", "cv", "length_dist"}
        if extra or "rate" not in syn:
            raise ValueError("workload.synthetic needs 'rate' and takes only rate, arrival, cv, length_dist")
        if "traces" in raw:
            raise ValueError("workload: give traces or synthetic, not both")
        kw.update(traces=(), rate=float(syn["rate"]), arrival=syn.get("arrival", "poisson"),
                  cv=float(syn.get("cv", 1.0)), length_dist=str(syn.get("length_dist", "sharegpt")))
    elif "traces" in raw:
        if not isinstance(raw["traces"], list) or not raw["traces"]:
            raise ValueError("workload.traces must be a non-empty list of trace names or CSV paths")
        kw["traces"] = tuple(str(t) for t in raw["traces"])
    return ClusterWorkload(**kw)


def load_cluster(path: str) -> ClusterConfig:
    """Read a cluster file (YAML; module docstring), or the built-in one for ``"default"``.

    Raises:
        ValueError: unreadable YAML, unknown keys or invalid values (the key is named).
    """
    if path == "default":
        return default_cluster()
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except OSError as e:
        raise ValueError(f"{path}: cannot read cluster file ({e})") from None
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: invalid YAML ({e})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    known = {"cluster", "services", "mix", "workload", "slo_scales", "scheduler", "replacement"}
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
    try:
        ckeys = {f.name for f in fields(ClusterSpec)}
        craw = raw.get("cluster") or {}
        if set(craw) - ckeys:
            raise ValueError(f"cluster: unknown keys {sorted(set(craw) - ckeys)}; known: {sorted(ckeys)}")
        cluster = ClusterSpec(**craw)
        if ("services" in raw) == ("mix" in raw):
            raise ValueError("give services (a list) or mix (architecture: count), one of the two")
        if "mix" in raw:
            services = _mix_services(raw["mix"])
        else:
            services = []
            for i, s in enumerate(raw["services"] or []):
                if not isinstance(s, dict) or "name" not in s or "arch" not in s or set(s) - {"name", "arch", "path"}:
                    raise ValueError(f"services[{i}] needs name and arch (and optionally path)")
                services.append(ServiceEntry(str(s["name"]), catalog_model(str(s["arch"])),
                                             None if s.get("path") is None else str(s["path"])))
        workload = _workload(raw.get("workload") or {})
        sched = raw.get("scheduler") or {}
        skeys = {f.name for f in fields(SchedulerConfig)}
        if set(sched) - skeys:
            raise ValueError(f"scheduler: unknown keys {sorted(set(sched) - skeys)}; known: {sorted(skeys)}")
        scheduler = replace(DEFAULT_SCHEDULER, **sched)
        scales = tuple(float(x) for x in raw.get("slo_scales", (2.0, 5.0, 10.0)))
        rep = raw.get("replacement") or {}
        rkeys = {f.name for f in fields(ReplacementConfig)}
        if not isinstance(rep, dict) or set(rep) - rkeys:
            raise ValueError(f"replacement: a mapping with keys among {sorted(rkeys)}")
        if "windows_s" in rep:
            rep = {**rep, "windows_s": tuple(float(x) for x in rep["windows_s"])}
        replacement = ReplacementConfig(**{"mode": "none", **rep})
        return ClusterConfig(cluster, tuple(services), workload, scales, scheduler, replacement)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from None
