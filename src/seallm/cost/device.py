"""Device specs for the roofline model: vendor datasheet numbers, or measured on this CPU."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class DeviceSpec:
    """Peak throughput of a device.

    Attributes:
        name: identifier.
        peak_flops: dense matmul FLOP/s by element size in bytes (4 = fp32/TF32, 2 = bf16/fp16).
        memory_bandwidth: bytes/s of device memory.
        memory_bytes: device memory (bytes).
        step_overhead_s: fixed cost of one iteration (launches, Python), s.
        host_link_bandwidth: bytes/s between device and host memory (KV swapping).
        interconnect_bandwidth: bytes/s of one device's link to its peers in a node
            (tensor-parallel all-reduce; NCCL "bus bandwidth"); 0: no peer link.
        interconnect_latency_s: fixed cost of one all-reduce (s).
    """

    name: str
    peak_flops: dict[int, float]
    memory_bandwidth: float
    memory_bytes: int
    step_overhead_s: float = 0.0
    host_link_bandwidth: float = 25e9
    interconnect_bandwidth: float = 0.0
    interconnect_latency_s: float = 0.0

    def flops(self, dtype_bytes: int) -> float:
        return self.peak_flops.get(dtype_bytes) or min(self.peak_flops.values())


# NVIDIA datasheets (dense, no sparsity). fp32 matmuls run as TF32 on tensor cores.
# Host links: PCIe 4.0 x16 (A100) and PCIe 5.0 x16 (H100/H200), about 25 and 50 GB/s in practice.
# Peer links: NVLink 3 (A100, 600 GB/s both ways) and NVLink 4 (H100/H200, 900 GB/s); an
# all-reduce reaches about 230 and 360 GB/s of NCCL bus bandwidth on 8-GPU nodes, and costs
# about 10 us of latency for the small messages of decoding.
DEVICES: dict[str, DeviceSpec] = {
    "a100-80gb": DeviceSpec("a100-80gb", {2: 312e12, 4: 156e12}, 2.039e12, 80 << 30, 3e-3, 25e9, 230e9, 10e-6),
    "h100-sxm": DeviceSpec("h100-sxm", {2: 989e12, 4: 495e12}, 3.35e12, 80 << 30, 2e-3, 50e9, 360e9, 10e-6),
    "h200": DeviceSpec("h200", {2: 989e12, 4: 495e12}, 4.8e12, 141 << 30, 2e-3, 50e9, 360e9, 10e-6),
}


def measure_local_cpu(seconds: float = 0.5) -> DeviceSpec:
    """Micro-benchmark this CPU with NumPy: fp32 matmul FLOP/s and copy bandwidth.

    Takes about ``2 x seconds``. bf16/fp16 are assumed no faster than fp32 on CPU.
    """
    import numpy as np

    n = 1024
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = a.copy()
    a @ b  # warm-up
    t0, reps = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    flops = 2 * n**3 * reps / (time.perf_counter() - t0)
    src = np.ones(64 << 20, dtype=np.uint8)  # 64 MiB: beyond the caches
    dst = np.empty_like(src)
    np.copyto(dst, src)
    t0, reps = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        np.copyto(dst, src)
        reps += 1
    bw = 2 * src.nbytes * reps / (time.perf_counter() - t0)  # read + write
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        mem = 0
    return DeviceSpec("local-cpu", {4: flops, 2: flops}, bw, mem, 1e-3, bw / 2)  # a swap is a copy
