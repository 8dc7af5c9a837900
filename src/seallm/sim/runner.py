"""One simulated run: workload -> device simulation -> the same metrics as ``seallm bench``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from seallm.bench.baseline import AloneLatency, fit_alone_latency
from seallm.bench.calibrate import CalibrationConfig, calibration_requests
from seallm.bench.metrics import BenchMetrics, compute_metrics
from seallm.bench.workload import BenchRequest, Workload, build_workload
from seallm.engine.replica import load_policy_profiles
from seallm.sched import SchedulerConfig, make_policy
from seallm.sim.device import DeviceResult, SimModel, simulate_device


@dataclass(frozen=True)
class SimConfig:
    """A simulated deployment of one device and the workload it serves.

    Attributes:
        models: resident models (KV shape + cost model each).
        kv_pages, page_size_bytes: the unified KV pool (pages, bytes per page).
        scheduling_policy, policy_options: as in the deployment file (``fcfs``, ``seallm``,
            ``slos-serve``, ``sarathi``).
        scheduler: per-iteration limits (token budget, sequences) and preemption mode.
        swap_pages: host swap space in pages; swap_bandwidth: its copy rate, bytes/s.
        slo_scales: SLO attainment scales (E2E <= scale x served-alone latency).
        seed: workload seed (synthetic workloads).
        max_resident_models, weights_memory_bytes, residency_policy, residency_preempt_after: models loaded on
            demand, as in the deployment file (None: all resident).
        disk_bandwidth, host_cache_bandwidth: bytes/s of a cold load and of a reload from
            the host weight cache.
        fast_forward: fast-forward steady decode iterations (identical results; False: step
            by step, :mod:`seallm.sim.fastforward`).
        profiles_path: service profiles a served deployment saved (the ``seallm`` policy
            starts from them, as the server does).
        ingest_delay_s: per model, the delay from the front end to the engine's queue (s).
    """

    models: tuple[SimModel, ...]
    kv_pages: int
    page_size_bytes: int
    scheduling_policy: str = "fcfs"
    policy_options: Mapping = field(default_factory=dict)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    swap_pages: int = 0
    swap_bandwidth: float = 25e9
    slo_scales: tuple[float, ...] = (5.0, 10.0)
    seed: int = 0
    max_resident_models: int | None = None
    weights_memory_bytes: int | None = None
    residency_policy: str = "seallm"
    residency_preempt_after: float | None = 1.0
    disk_bandwidth: float = 2e9
    host_cache_bandwidth: float = 25e9
    fast_forward: bool = True
    profiles_path: str | None = None
    ingest_delay_s: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SimResult:
    """Metrics (as ``seallm bench`` computes them), the served-alone baselines and device stats."""

    metrics: BenchMetrics
    alone: dict[str, AloneLatency | None]
    device: DeviceResult


def _device(cfg: SimConfig, requests: Sequence[BenchRequest]) -> DeviceResult:
    policy = make_policy(cfg.scheduling_policy, dict(cfg.policy_options))
    load_policy_profiles(policy, cfg.profiles_path)
    return simulate_device(requests, cfg.models, policy, cfg.kv_pages, cfg.page_size_bytes, cfg.scheduler,
                           cfg.swap_pages, cfg.swap_bandwidth, max_resident_models=cfg.max_resident_models,
                           weights_memory_bytes=cfg.weights_memory_bytes, residency_policy=cfg.residency_policy,
                           residency_preempt_after=cfg.residency_preempt_after,
                           disk_bandwidth=cfg.disk_bandwidth, host_cache_bandwidth=cfg.host_cache_bandwidth,
                           fast_forward=cfg.fast_forward, ingest_delay_s=cfg.ingest_delay_s)


def _check_models(cfg: SimConfig, requests: Sequence[BenchRequest]) -> None:
    known = {m.name for m in cfg.models}
    unknown = sorted({r.model for r in requests} - known)
    if unknown:
        raise ValueError(f"the workload names model(s) {unknown} that the deployment does not serve: {sorted(known)}")


def simulated_alone_latency(cfg: SimConfig, requests: Sequence[BenchRequest],
                            calibration: CalibrationConfig | None = None) -> dict[str, AloneLatency | None]:
    """Served-alone latency per model, calibrated the way ``seallm bench`` does it (same
    request lengths, one request at a time on an idle device) but on the simulated device.

    Raises:
        ValueError: a request of a model the device does not hold.
    """
    _check_models(cfg, requests)
    cfg = replace(cfg, max_resident_models=None, weights_memory_bytes=None)  # alone: its model is resident
    calibration = calibration or CalibrationConfig()
    out = {}
    for m in sorted({r.model for r in requests}):
        _, measured = calibration_requests(requests, m, calibration)
        recs = [_device(cfg, [r]).records[0] for r in measured]
        out[m] = fit_alone_latency(recs)
    return out


def run_simulation(cfg: SimConfig, workload: Workload,
                   alone: Mapping[str, AloneLatency | None] | None = None) -> SimResult:
    """Simulate ``workload`` on the device of ``cfg``.

    ``alone``: served-alone baselines for SLO attainment (default: calibrated on the
    simulated device, see :func:`simulated_alone_latency`).

    Raises:
        ValueError: an invalid policy or option, a request of a model the device does not
            hold, or a request that cannot fit in the KV pool.
    """
    requests = build_workload(workload, cfg.seed)
    _check_models(cfg, requests)
    if alone is None:
        alone = simulated_alone_latency(cfg, requests)
    dev = _device(cfg, requests)
    metrics = compute_metrics(dev.records, alone, cfg.slo_scales)
    return SimResult(metrics, dict(alone), dev)
