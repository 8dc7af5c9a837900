"""Deployment configuration (YAML or CLI) and the builder of a device's engine stack.

Both the offline :class:`seallm.LLM` and the server's engine process build their
``ReplicaCore`` here, so the two paths never drift apart.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, fields, replace
from typing import Any

from seallm.cluster.router import Router
from seallm.core import SLO, WallClock
from seallm.engine.core import ReplicaCore
from seallm.engine.replica import ReplicaLayout, ReplicaModel, ReplicaSpec, build_replica
from seallm.kv import KVCacheManager, parse_bytes
from seallm.models.config import ModelConfig, load_model_config
from seallm.sched import Scheduler, SchedulerConfig, make_policy

logger = logging.getLogger("seallm")


@dataclass(frozen=True)
class ModelEntry:
    """One served model: its API name, checkpoint folder, dtype ("auto" = checkpoint's), and
    whether it is pinned (resident from the start, never unloaded)."""

    name: str
    path: str
    dtype: str = "auto"
    pinned: bool = False


@dataclass(frozen=True)
class SLOClass:
    """A named latency target; requests may name one with ``slo_class``. The fields are
    those of :class:`~seallm.core.SLO` (seconds; ``ttft_slowdown`` a multiple of the
    zero-load prefill time). The built-in classes of :data:`seallm.sched.slo.SLO_CLASSES`
    (chatbot, coding, summarization, reasoning, tool_calling, tool_calling_final) are always
    there; a deployment class of the same name replaces one."""

    name: str
    ttft: float | None = None
    tpot: float | None = None
    e2e: float | None = None
    ttft_slowdown: float | None = None
    tpot_thinking: float | None = None
    thinking_tokens: int = 0

    def to_slo(self) -> SLO:
        """The class as an :class:`SLO` (raises ValueError on an invalid target)."""
        return SLO(self.ttft, self.tpot, self.e2e, self.ttft_slowdown, self.tpot_thinking, self.thinking_tokens)


ROUTING_POLICIES = Router.POLICIES


@dataclass(frozen=True)
class ReplicaEntry:
    """One replica of a deployment: a name, the models it may hold (names from the
    deployment's ``models``; empty: all), and the device settings that differ from the
    deployment's top level (None: inherit). Each replica runs in its own engine process.

    Raises:
        ValueError: an empty name or a non-positive ``threads``.
    """

    name: str
    models: tuple[str, ...] = ()
    device: str | None = None
    tensor_parallel_size: int | None = None
    kv_cache_memory: str | int | None = None
    swap_space: str | int | None = None
    max_resident_models: int | None = None
    weights_memory: str | int | None = None
    host_weight_cache: str | int | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"a replica needs a non-empty name, got {self.name!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"replica {self.name!r}: threads must be a positive integer, got {self.threads!r}")


REPLICA_KEYS = tuple(f.name for f in fields(ReplicaEntry))  # name, models, then the per-replica overrides


@dataclass(frozen=True)
class DeploymentConfig:
    """Everything needed to serve a set of models on one device.

    Attributes:
        models: the served models.
        device: "cpu" or "cuda[:i]".
        tensor_parallel_size: devices of the group a replica runs on. Only 1 is served
            today: ``seallm place`` writes the degree it planned, and a file asking for more
            is refused with a clear error until the engine runs tensor parallelism.
        kv_cache_memory: KV pool size ("2GiB"); None sizes it from free GPU memory.
        page_size_bytes: KV page size; None derives it from the models.
        scheduling_policy: "seallm" (doubling budget; the default), "fcfs" (vLLM-like
            baseline), "slos-serve" (SLO planner with soft admission) or "sarathi" (chunked
            prefill, token budget sized to the tightest TPOT).
        policy_options: knobs of the policy (``seallm``: fields of ``SeaLLMConfig``;
            ``slos-serve`` / ``sarathi``: fields of ``SLOsServeConfig``, e.g.
            ``{admission: reject, default_slo_class: coding}``).
        profiles_path: JSON file where the ``seallm`` policy keeps its service profiles
            (loaded at start if present, written at shutdown).
        max_num_batched_tokens: per-iteration token budget (chunked prefill).
        max_num_seqs: most sequences per iteration.
        preemption_mode: "swap" (the default: a preempted request's KV is copied to host memory
            and back; recompute when the swap space is full) or "recompute" (dropped and
            prefilled again, vLLM's way).
        swap_space: host memory for swapped-out KV pages ("4GiB"); used with "swap" only.
        gpu_memory_utilization: fraction of free GPU memory for the KV pool.
        slo_classes: named SLOs requests may refer to.
        max_tokens_limit: most output tokens one request may ask for (None = context length).
        max_waiting_requests: admission control, per model: most requests waiting to run
            (queued, preempted or swapped); beyond it a new request is refused with HTTP 429
            (None = no limit).
        max_waiting_tokens: admission control, per model: most tokens still to prefill
            over the waiting requests, the new one's prompt included (None = no limit).
        max_queue_delay_s: admission control, per model: while the oldest of its queued
            requests that never started has waited longer than this (s), new ones are refused
            with 429 (None = no limit). Bounds queueing under overload whatever the device's speed.
        max_sequences_per_request: most sequences (prompts x ``n``) in one HTTP request;
            beyond it the request is refused with HTTP 400.
        max_request_body: largest HTTP request body ("4MiB"); beyond it HTTP 413.
        allow_request_chat_template: accept a ``chat_template`` sent in a request's
            ``chat_template_kwargs`` (off by default: a template is code). When on, such a
            template renders in a separate process, killed after ``chat_template_timeout_s``.
        chat_template_timeout_s: time limit of a request-supplied chat template (s).
        engine_restart_max: supervision: most restarts of a dead engine process within
            ``engine_restart_window_s``; once spent, the server stays up in the "failed" state
            (``/health`` 503) until restarted. 0 never restarts.
        engine_restart_window_s: the window of ``engine_restart_max`` (s).
        engine_restart_backoff_s: wait before the first restart of a window (s); it doubles
            with each further restart in the window, up to ``engine_restart_backoff_max_s``.
        engine_restart_backoff_max_s: longest wait before a restart (s).
        engine_hang_timeout_s: an engine process that sends nothing for this long while
            alive (it reports at least every 0.25 s when idle, and after every iteration) is
            taken as hung, killed and restarted like a dead one (s; None: never).
        max_resident_models: most models resident on the device at once (None: all); a
            request for another listed model is held while it loads, evicting an idle one.
        weights_memory: device memory for resident weights ("2GiB"; None: no limit).
        host_weight_cache: host memory that keeps the weights of unloaded models, so a
            reload is a memory copy instead of a checkpoint read ("8GiB"; 0: none).
        residency_policy: which model loads next and which one makes room: "seallm" (by the
            urgency of the held requests; the least requested idle model leaves) or "lru"
            (in arrival order; the least recently used idle model leaves, as llama-swap and
            Ollama do).
        residency_preempt_after: ``seallm`` residency: a model drained to make room whose
            running requests outlast this many times what preempting them costs (the
            predicted load times of it and of the waiting model, plus recomputing their
            context) is evicted, its running requests preempted (recomputed after its
            reload; each request at most once). null: always wait for the drain.
        threads: intra-op CPU threads of the engine process (None: PyTorch's default, every
            core); with several replicas on one CPU host, give each its share.
        concurrent_models: CPU: most models whose decode iterations run at the same time,
            each on its share of the threads (:class:`seallm.engine.core.ReplicaCore`,
            "Concurrent iterations"); 1: one iteration at a time on every thread; "auto":
            every model, up to the thread count, on CPU, and 1 elsewhere.
        replicas: the replicas behind the one endpoint (:class:`ReplicaEntry`; empty: one
            replica holding every model, with the settings above). A request goes to a
            replica that lists its model, chosen by ``routing_policy``.
        routing_policy: "least_loaded" (the replica with the fewest requests queued or
            running, preferring one where the model is resident), "round_robin", or "slo"
            (SLOs-Serve's try-then-forward: in turn, a replica whose SLO planner cannot
            guarantee the request hands it to the next; the last serves it best effort).
        host, port, api_key: HTTP front end.
    """

    models: tuple[ModelEntry, ...]
    device: str = "cpu"
    tensor_parallel_size: int = 1
    kv_cache_memory: str | int | None = "1GiB"
    page_size_bytes: int | None = None
    scheduling_policy: str = "seallm"
    policy_options: dict = field(default_factory=dict)
    profiles_path: str | None = None
    max_num_batched_tokens: int = 512
    max_num_seqs: int = 128
    preemption_mode: str = "swap"
    swap_space: str | int = "4GiB"
    gpu_memory_utilization: float = 0.9
    slo_classes: tuple[SLOClass, ...] = field(default_factory=tuple)
    max_tokens_limit: int | None = None
    max_waiting_requests: int | None = 1024
    max_waiting_tokens: int | None = 1 << 20
    max_queue_delay_s: float | None = 10.0
    max_sequences_per_request: int = 256
    max_request_body: str | int = "4MiB"
    allow_request_chat_template: bool = False
    chat_template_timeout_s: float = 2.0
    engine_restart_max: int = 5
    engine_restart_window_s: float = 600.0
    engine_restart_backoff_s: float = 1.0
    engine_restart_backoff_max_s: float = 30.0
    engine_hang_timeout_s: float | None = 120.0
    max_resident_models: int | None = None
    weights_memory: str | int | None = None
    host_weight_cache: str | int = "8GiB"
    residency_policy: str = "seallm"
    residency_preempt_after: float | None = 1.0
    threads: int | None = None
    concurrent_models: int | str = "auto"
    replicas: tuple[ReplicaEntry, ...] = ()
    routing_policy: str = "least_loaded"
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("a deployment needs at least one model")
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique, got {names}")
        SchedulerConfig(self.max_num_batched_tokens, self.max_num_seqs, self.preemption_mode)  # validates
        if not isinstance(self.tensor_parallel_size, int) or self.tensor_parallel_size < 1:
            raise ValueError(f"tensor_parallel_size must be a positive integer, got {self.tensor_parallel_size!r}")
        if self.tensor_parallel_size > 1:
            raise ValueError(f"tensor_parallel_size={self.tensor_parallel_size}: the engine does not run tensor "
                             "parallelism yet (the cluster simulator and `seallm place` plan it); serve groups of "
                             "one device")
        parse_bytes(self.swap_space)  # validates
        if self.kv_cache_memory is not None:
            parse_bytes(self.kv_cache_memory)
        if parse_bytes(self.max_request_body) < 1024:
            raise ValueError(f"max_request_body must be at least 1KiB, got {self.max_request_body!r}")
        for k in ("max_waiting_requests", "max_waiting_tokens"):
            v = getattr(self, k)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ValueError(f"{k} must be a positive integer or null, got {v!r}")
        if not isinstance(self.max_sequences_per_request, int) or self.max_sequences_per_request < 1:
            raise ValueError(f"max_sequences_per_request must be a positive integer, got "
                             f"{self.max_sequences_per_request!r}")
        if self.max_waiting_requests is not None and self.max_waiting_requests < self.max_sequences_per_request:
            raise ValueError(f"max_waiting_requests ({self.max_waiting_requests}) must be at least "
                             f"max_sequences_per_request ({self.max_sequences_per_request}): a request of that many "
                             f"sequences could never be admitted")
        if self.max_queue_delay_s is not None and not (isinstance(self.max_queue_delay_s, (int, float))
                                                      and 0 < self.max_queue_delay_s < float("inf")):
            raise ValueError(f"max_queue_delay_s must be a positive number of seconds or null, got "
                             f"{self.max_queue_delay_s!r}")
        if not self.chat_template_timeout_s > 0:
            raise ValueError(f"chat_template_timeout_s must be > 0, got {self.chat_template_timeout_s!r}")
        if not isinstance(self.engine_restart_max, int) or self.engine_restart_max < 0:
            raise ValueError(f"engine_restart_max must be an integer >= 0, got {self.engine_restart_max!r}")
        if self.engine_hang_timeout_s is not None and not (
                isinstance(self.engine_hang_timeout_s, (int, float)) and 0 < self.engine_hang_timeout_s < float("inf")):
            raise ValueError(f"engine_hang_timeout_s must be a positive number of seconds or null, got "
                             f"{self.engine_hang_timeout_s!r}")
        for k in ("engine_restart_window_s", "engine_restart_backoff_s", "engine_restart_backoff_max_s"):
            v = getattr(self, k)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v < float("inf"):
                raise ValueError(f"{k} must be a finite number >= 0, got {v!r}")
        parse_bytes(self.host_weight_cache) if self.host_weight_cache != 0 else 0  # validates
        if self.weights_memory is not None:
            parse_bytes(self.weights_memory)
        from seallm.sched.residency import ResidencyConfig

        ResidencyConfig(self.max_resident_models, None, frozenset(m.name for m in self.models if m.pinned),
                        self.residency_policy, preempt_after=self.residency_preempt_after)  # validates
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"threads must be a positive integer or null, got {self.threads!r}")
        if self.concurrent_models != "auto" and (not isinstance(self.concurrent_models, int)
                                                 or isinstance(self.concurrent_models, bool)
                                                 or self.concurrent_models < 1):
            raise ValueError(f"concurrent_models must be a positive integer or 'auto', got {self.concurrent_models!r}")
        if self.routing_policy not in ROUTING_POLICIES:
            raise ValueError(f"unknown routing_policy {self.routing_policy!r}; known: {list(ROUTING_POLICIES)}")
        self._check_replicas(names)
        object.__setattr__(self, "policy_options", resolve_trace_seeds(self.policy_options))
        make_policy(self.scheduling_policy, self.policy_options)  # validates name and options

    def _check_replicas(self, names: list[str]) -> None:
        rnames = [r.name for r in self.replicas]
        if len(set(rnames)) != len(rnames):
            raise ValueError(f"replica names must be unique, got {rnames}")
        served: set[str] = set()
        for r in self.replicas:
            unknown = sorted(set(r.models) - set(names))
            if unknown:
                raise ValueError(f"replica {r.name!r} lists model(s) {unknown} that are not in models: {names}")
            served |= set(r.models or names)
        missing = [n for n in names if self.replicas and n not in served]
        if missing:
            raise ValueError(f"model(s) {missing} are on no replica; add them to a replica's models")
        if self.replicas:
            self.replica_deployments()  # each replica validates as a one-device deployment

    def replica_deployments(self) -> list[tuple[str, "DeploymentConfig"]]:
        """The deployment of each replica as a one-replica ``DeploymentConfig`` (its models,
        the replica's overrides applied), in order; ``[("0", self)]`` without ``replicas``.
        With several replicas, a ``profiles_path`` ``p.json`` becomes ``p.<replica>.json``.

        Raises:
            ValueError: a replica whose settings are invalid (named).
        """
        if not self.replicas:
            return [("0", self)]
        out = []
        for r in self.replicas:
            models = tuple(m for m in self.models if not r.models or m.name in r.models)
            over = {k: getattr(r, k) for k in REPLICA_KEYS[2:]}
            prof = self.profiles_path
            if prof and len(self.replicas) > 1:
                stem, ext = os.path.splitext(prof)
                prof = f"{stem}.{r.name}{ext or '.json'}"
            try:
                out.append((r.name, replace(self, models=models, replicas=(), profiles_path=prof,
                                            **{k: v for k, v in over.items() if v is not None})))
            except ValueError as e:
                raise ValueError(f"replica {r.name!r}: {e}") from None
        return out

    def with_overrides(self, **kw: Any) -> "DeploymentConfig":
        """A copy with the given fields replaced (None values are ignored)."""
        return replace(self, **{k: v for k, v in kw.items() if v is not None})


def deployment_from(models: dict[str, str], config_path: str | None) -> "DeploymentConfig | None":
    """The deployment of a command line: the YAML file (its models replaced by ``models`` if
    any are given), else ``models`` with default settings; None when neither is given.

    Raises:
        ValueError: an invalid deployment file.
    """
    if config_path:
        cfg = load_deployment(config_path)
        if models:
            cfg = cfg.with_overrides(models=tuple(ModelEntry(n, p) for n, p in models.items()))
        return cfg
    if models:
        return DeploymentConfig(models=tuple(ModelEntry(n, p) for n, p in models.items()))
    return None


def resolve_trace_seeds(options: dict, window: int = 512) -> dict:
    """Replace ``seeds: {MODEL: {trace: NAME, length_scale: X}}`` in ``seallm`` policy options
    by the output lengths of the trace's last ``window`` requests (scaled by X, default 1), so
    a service profile starts from its real traffic. NAME is an Azure LLM trace 2023 shipped
    with seallm (``chat``, ``code``, ``conv``) or a CSV path in that format.

    Raises:
        ValueError: an unknown trace or a malformed seed.
    """
    seeds = options.get("seeds") if isinstance(options, dict) else None
    if not isinstance(seeds, dict) or not any(isinstance(v, dict) and "trace" in v for v in seeds.values()):
        return options
    from seallm.bench.traces import load_azure_trace

    out = {}
    for model, seed in seeds.items():
        if isinstance(seed, dict) and "trace" in seed:
            seed = dict(seed)
            trace = load_azure_trace(str(seed.pop("trace")))
            try:
                scale = float(seed.pop("length_scale", 1.0))
            except (TypeError, ValueError):
                raise ValueError(f"seeds.{model}.length_scale must be a number") from None
            if not scale > 0:
                raise ValueError(f"seeds.{model}.length_scale must be > 0, got {scale}")
            seed["output_lengths"] = [max(1, round(int(n) * scale)) for n in trace.output_lens[-window:]]
        out[model] = seed
    return {**options, "seeds": out}


def load_deployment(path: str) -> DeploymentConfig:
    """Read a YAML deployment file.

    Format::

        models:
          - {name: chat, path: /ckpt/llama, dtype: auto}
          - {name: code, path: /ckpt/qwen2}
        device: cpu
        kv_cache_memory: 2GiB
        scheduling_policy: seallm
        policy_options: {output_quantile: 0.5, aging_interval_s: 30,
                         seeds: {chat: {trace: chat}, code: {trace: code}}}
        max_num_batched_tokens: 512
        preemption_mode: swap
        swap_space: 4GiB
        slo_classes:
          - {name: interactive, ttft: 0.5, tpot: 0.1}
          - {name: long_reads, ttft_slowdown: 3, tpot: 0.2}   # built in: chatbot, coding, ...
        engine_restart_max: 5         # restarts of a dead engine within the window
        engine_restart_window_s: 600
        engine_restart_backoff_s: 1   # doubling per restart in the window,
        engine_restart_backoff_max_s: 30  # up to this
        # several replicas behind the one endpoint (optional; each its own engine process):
        replicas:
          - {name: r0, models: [chat], threads: 1}
          - {name: r1, models: [chat, code], threads: 1, kv_cache_memory: 1GiB}
        routing_policy: least_loaded  # or round_robin, or slo (try-then-forward)

    Relative model paths are resolved against the file's folder.

    Raises:
        ValueError: unreadable YAML, unknown keys, or invalid values (the key is named).
    """
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except OSError as e:
        raise ValueError(f"{path}: cannot read deployment file ({e})") from None
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: invalid YAML ({e})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    known = {f.name for f in fields(DeploymentConfig)}
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
    base = os.path.dirname(os.path.abspath(path))
    models = []
    for i, m in enumerate(raw.get("models") or []):
        if not isinstance(m, dict) or "name" not in m or "path" not in m:
            raise ValueError(f"{path}: models[{i}] needs 'name' and 'path'")
        extra = set(m) - {"name", "path", "dtype", "pinned"}
        if extra:
            raise ValueError(f"{path}: models[{i}] has unknown keys {sorted(extra)}")
        if not isinstance(m.get("pinned", False), bool):
            raise ValueError(f"{path}: models[{i}].pinned must be true or false")
        p = os.path.expanduser(str(m["path"]))
        models.append(ModelEntry(str(m["name"]), p if os.path.isabs(p) else os.path.join(base, p),
                                 str(m.get("dtype", "auto")), m.get("pinned", False)))
    slos = []
    for i, s in enumerate(raw.get("slo_classes") or []):
        try:
            slos.append(SLOClass(**s))
            slos[-1].to_slo()
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: slo_classes[{i}]: {e}") from None
    replicas = []
    for i, r in enumerate(raw.get("replicas") or []):
        if not isinstance(r, dict):
            raise ValueError(f"{path}: replicas[{i}] must be a mapping")
        extra = set(r) - set(REPLICA_KEYS)
        if extra:
            raise ValueError(f"{path}: replicas[{i}] has unknown keys {sorted(extra)}; known: {list(REPLICA_KEYS)}")
        ms = r.get("models") or []
        if not isinstance(ms, list) or not all(isinstance(x, str) for x in ms):
            raise ValueError(f"{path}: replicas[{i}].models must be a list of model names")
        try:
            replicas.append(ReplicaEntry(**{**r, "name": str(r.get("name", f"r{i}")), "models": tuple(ms)}))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: replicas[{i}]: {e}") from None
    rest = {k: v for k, v in raw.items() if k not in ("models", "slo_classes", "replicas")}
    try:
        return DeploymentConfig(models=tuple(models), slo_classes=tuple(slos), replicas=tuple(replicas), **rest)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from None


@dataclass
class EngineStack:
    """A built device: the loop body plus what the front end needs to know per model."""

    core: ReplicaCore
    kv: KVCacheManager
    scheduler: Scheduler
    model_configs: dict[str, ModelConfig]


def replica_spec(cfg: DeploymentConfig, configs: dict[str, Any], kv_cache_bytes: int | None = None) -> ReplicaSpec:
    """The :class:`ReplicaSpec` of a one-device deployment, for its models' ``configs``
    (``ModelConfig``, or anything with a ``kv_spec``). ``kv_cache_bytes`` overrides
    ``cfg.kv_cache_memory`` (needed when that is None: sized from free GPU memory).

    Raises:
        ValueError: no KV size, or invalid sizes.
    """
    if kv_cache_bytes is None:
        if cfg.kv_cache_memory is None:
            raise ValueError("kv_cache_memory is required on CPU (for example '2GiB')")
        kv_cache_bytes = parse_bytes(cfg.kv_cache_memory)
    pinned = {m.name for m in cfg.models if m.pinned}
    return ReplicaSpec(
        models=tuple(ReplicaModel(n, c.kv_spec, getattr(c, "weights_bytes", 0), n in pinned)
                     for n, c in configs.items()), kv_cache_bytes=kv_cache_bytes,
        device=cfg.device, page_size_bytes=cfg.page_size_bytes, swap_space_bytes=parse_bytes(cfg.swap_space),
        scheduler=SchedulerConfig(cfg.max_num_batched_tokens, cfg.max_num_seqs, cfg.preemption_mode),
        scheduling_policy=cfg.scheduling_policy, policy_options=cfg.policy_options, profiles_path=cfg.profiles_path,
        max_resident_models=cfg.max_resident_models,
        weights_memory_bytes=parse_bytes(cfg.weights_memory) if cfg.weights_memory is not None else None,
        residency_policy=cfg.residency_policy, residency_preempt_after=cfg.residency_preempt_after)


def build_engine(cfg: DeploymentConfig) -> EngineStack:
    """Load the models resident at start and build the replica
    (:func:`seallm.engine.replica.build_replica`) around a torch ``ModelExecutor`` whose
    ``WeightLoader`` loads the others on demand.

    Raises:
        seallm.models.CheckpointError: unsupported or malformed checkpoint.
        ValueError: bad sizes or a pool smaller than one page.
    """
    import torch

    from seallm.worker.executor import ModelExecutor
    from seallm.worker.weights import WeightLoader

    configs = {m.name: load_model_config(m.path, m.dtype) for m in cfg.models}
    dev = torch.device(cfg.device)
    budget = None
    if cfg.kv_cache_memory is None and dev.type == "cuda":
        # Room for the weights first: every model when all are resident, else the limit.
        resident_bytes = (parse_bytes(cfg.weights_memory) if cfg.weights_memory is not None
                          else sum(c.weights_bytes for c in configs.values()))
        free, _ = torch.cuda.mem_get_info(dev)
        budget = int((free - resident_bytes) * cfg.gpu_memory_utilization)
    spec = replica_spec(cfg, configs, budget)
    cache = parse_bytes(cfg.host_weight_cache) if cfg.host_weight_cache != 0 else 0

    def executor(layout: ReplicaLayout) -> ModelExecutor:
        loader = WeightLoader(configs, dev, cache)
        models = {n: loader.load_now(n) for n in layout.resident}
        return ModelExecutor(models, layout.num_pages, layout.page_size_bytes, dict(layout.tokens_per_page), dev,
                             num_host_pages=layout.num_host_pages, loader=loader,
                             concurrent_models=len(configs) if cfg.concurrent_models == "auto" else cfg.concurrent_models)

    rep = build_replica(spec, executor, WallClock())
    lay = rep.layout
    lanes = rep.core.max_concurrent_plans
    logger.info("seallm: %d model(s) (%d resident) on %s; KV pool %d pages x %d bytes; tokens/page %s; policy %s; "
                "preemption %s%s%s", len(configs), len(lay.resident), cfg.device, lay.num_pages, lay.page_size_bytes,
                dict(lay.tokens_per_page), cfg.scheduling_policy, cfg.preemption_mode,
                f" ({lay.num_host_pages} host pages)" if lay.num_host_pages else "",
                f"; decode iterations of up to {lanes} models at once" if lanes > 1 else "")
    return EngineStack(rep.core, rep.kv, rep.scheduler, configs)
