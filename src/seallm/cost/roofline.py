"""Analytic roofline cost model: max(compute time, memory time) + a fixed step overhead.

Reference: the roofline model (Williams et al., CACM 2009) applied per iteration, as SeaLLM
and SLOs-Serve do for their schedulers (``shared/reference/slo-scheduling.md`` §1.3).
"""

from __future__ import annotations

from dataclasses import dataclass

from seallm.cost.batch import BatchShape
from seallm.cost.device import DeviceSpec


@dataclass(frozen=True)
class ModelShape:
    """Sizes of a Llama-family decoder (elements; ``dtype_bytes`` per element)."""

    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    dtype_bytes: int

    @property
    def layer_params(self) -> int:
        q, kv = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        return self.hidden_size * (q + 2 * kv) + q * self.hidden_size + 3 * self.hidden_size * self.intermediate_size

    @property
    def weights_bytes(self) -> int:
        """Bytes of all weights: the layers, plus embedding and LM head (untied)."""
        return (self.num_layers * self.layer_params + 2 * self.vocab_size * self.hidden_size) * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * self.dtype_bytes


class RooflineCostModel:
    """Predicted step time (s) of ``shape`` on ``device``, or on a group of
    ``tensor_parallel_size`` such devices in one node.

    FLOPs: 2 x layer params x batch tokens + 4 x layers x heads x head_dim x query-key pairs
    + 2 x vocab x hidden x sampled rows. Bytes: all weights once + KV read (context tokens)
    + KV written (batch tokens). With tensor parallelism (Megatron-LM's split: attention
    heads and MLP columns across devices) each device does ``1/tp`` of both, and every layer
    adds two all-reduces of ``batch tokens x hidden`` elements, each taking
    ``2 (tp-1)/tp x bytes / interconnect_bandwidth + interconnect_latency_s`` (ring
    all-reduce).

    Raises:
        ValueError: ``tensor_parallel_size < 1``, or above 1 on a device without a peer link.
    """

    def __init__(self, shape: ModelShape, device: DeviceSpec, tensor_parallel_size: int = 1) -> None:
        if tensor_parallel_size < 1:
            raise ValueError(f"tensor_parallel_size must be >= 1, got {tensor_parallel_size}")
        if tensor_parallel_size > 1 and not device.interconnect_bandwidth > 0:
            raise ValueError(f"device {device.name!r} has no peer link for tensor parallelism")
        self.shape = shape
        self.device = device
        self.tensor_parallel_size = tensor_parallel_size
        # integer coefficients of flops() and bytes() and the device's rates, computed once:
        # step_time is the simulator's innermost call (same values, int arithmetic is exact)
        s = shape
        self._per_token_flops = 2 * s.num_layers * s.layer_params
        self._per_pair_flops = 4 * s.num_layers * s.num_heads * s.head_dim
        self._per_sample_flops = 2 * s.vocab_size * s.hidden_size
        self._weights_bytes, self._kv_bytes = s.weights_bytes, s.kv_bytes_per_token
        self._peak_flops = device.flops(s.dtype_bytes)

    def all_reduce_time(self, b: BatchShape) -> float:
        """Seconds of the step's all-reduces (0 without tensor parallelism)."""
        return self._all_reduce(b.num_tokens)

    def _all_reduce(self, num_tokens: int) -> float:
        tp = self.tensor_parallel_size
        if tp == 1:
            return 0.0
        d, s = self.device, self.shape
        one = 2 * (tp - 1) / tp * num_tokens * s.hidden_size * s.dtype_bytes / d.interconnect_bandwidth
        return 2 * s.num_layers * (one + d.interconnect_latency_s)

    def flops(self, b: BatchShape) -> float:
        s = self.shape
        attn = 4 * s.num_layers * s.num_heads * s.head_dim * b.attention_pairs
        return 2 * s.num_layers * s.layer_params * b.num_tokens + attn + 2 * s.vocab_size * s.hidden_size * b.num_sampled

    def bytes(self, b: BatchShape) -> float:
        s = self.shape
        return s.weights_bytes + s.kv_bytes_per_token * (b.num_context_tokens + b.num_tokens)

    def step_time(self, batch: BatchShape) -> float:
        return self._time(batch.num_tokens, batch.num_context_tokens, batch.num_sampled, batch.attention_pairs)

    def decode_step_times(self, batch_size: int, context_tokens: int, n: int) -> list[float]:
        """Step times (s) of ``n`` successive decode iterations of ``batch_size`` sequences
        whose contexts total ``context_tokens`` in the first and grow by ``batch_size`` per
        iteration: ``step_time`` of each one's shape (one query-key pair per context token),
        without building the shapes (the simulator's fast-forward)."""
        b, t = batch_size, self._time
        return [t(b, c, b, c) for c in range(context_tokens, context_tokens + n * b, b)]

    def _time(self, num_tokens: int, context_tokens: int, num_sampled: int, pairs: int) -> float:
        d, tp = self.device, self.tensor_parallel_size
        flops = self._per_token_flops * num_tokens + self._per_pair_flops * pairs + self._per_sample_flops * num_sampled
        nbytes = self._weights_bytes + self._kv_bytes * (context_tokens + num_tokens)
        comm = self._all_reduce(num_tokens) if tp > 1 else 0.0
        return max(flops / self._peak_flops, nbytes / d.memory_bandwidth) / tp + comm + d.step_overhead_s
