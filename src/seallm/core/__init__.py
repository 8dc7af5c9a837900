"""Pure data shared by every layer: requests, sampling parameters, step plans, clocks.

Nothing here imports torch or does I/O.
"""

from seallm.core.clock import Clock, ManualClock, WallClock
from seallm.core.plan import PageCopy, SeqChunk, StepPlan, StepResult, SampleOutput
from seallm.core.request import SLO, FinishReason, Request, RequestStatus
from seallm.core.sampling_params import SamplingParams

__all__ = [
    "Clock",
    "FinishReason",
    "ManualClock",
    "PageCopy",
    "Request",
    "RequestStatus",
    "SLO",
    "SampleOutput",
    "SamplingParams",
    "SeqChunk",
    "StepPlan",
    "StepResult",
    "WallClock",
]
