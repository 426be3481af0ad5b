"""The continuous-batching scheduler (pure: no torch, no I/O)."""

from __future__ import annotations

from llmservice.scheduler.config import POLICIES, Policy, SchedulerConfig
from llmservice.scheduler.headroom import DEFAULT_HEADROOM, NO_HEADROOM, HeadroomConfig
from llmservice.scheduler.output import ScheduledChunk, SchedulerOutput, SchedulerStats
from llmservice.scheduler.queue import FCFSQueue, PriorityQueue, WaitingQueue, make_waiting_queue
from llmservice.scheduler.request import Request, RequestLimits, RequestStatus
from llmservice.scheduler.scheduler import Scheduler

__all__ = [
    "DEFAULT_HEADROOM",
    "NO_HEADROOM",
    "POLICIES",
    "FCFSQueue",
    "HeadroomConfig",
    "Policy",
    "PriorityQueue",
    "Request",
    "RequestLimits",
    "RequestStatus",
    "ScheduledChunk",
    "Scheduler",
    "SchedulerConfig",
    "SchedulerOutput",
    "SchedulerStats",
    "WaitingQueue",
    "make_waiting_queue",
]
