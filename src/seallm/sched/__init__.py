"""Iteration-level scheduling policies (torch-free, deterministic given state and ``now``)."""

from seallm.sched.config import SchedulerConfig
from seallm.sched.fcfs import FCFSPolicy
from seallm.sched.policy import SchedulingPolicy, make_policy
from seallm.sched.scheduler import Scheduler

__all__ = ["FCFSPolicy", "Scheduler", "SchedulerConfig", "SchedulingPolicy", "make_policy"]
