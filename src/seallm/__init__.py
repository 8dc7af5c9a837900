"""seallm: serve many LLMs on shared accelerators with low latency.

The offline entry point is :class:`seallm.LLM`; :class:`seallm.SamplingParams` controls
decoding. Both are imported lazily so that ``import seallm.sched`` (and the other
torch-free layers) never pulls in torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

__all__ = ["LLM", "SamplingParams", "RequestOutput", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from seallm.core.sampling_params import SamplingParams
    from seallm.offline import LLM, RequestOutput


def __getattr__(name: str):
    if name == "SamplingParams":
        from seallm.core.sampling_params import SamplingParams

        return SamplingParams
    if name in ("LLM", "RequestOutput"):
        from seallm import offline

        return getattr(offline, name)
    raise AttributeError(f"module 'seallm' has no attribute {name!r}")
