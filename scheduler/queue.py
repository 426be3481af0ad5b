"""Waiting queues: the order in which waiting and preempted requests are admitted.

"fcfs" admits in arrival order and puts preempted requests back at the front. "priority" admits
the lowest `priority` value first, then the earliest arrival (then the order of adding); a
preempted request re-enters by the same rule. Removal (aborts) is O(n), which is fine for rare
aborts against queues of thousands.
"""

from __future__ import annotations

import heapq
import itertools
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterator

from llmservice.scheduler.config import Policy
from llmservice.scheduler.request import Request


class WaitingQueue(ABC):
    """Requests waiting to be admitted, in admission order."""

    @abstractmethod
    def add(self, request: Request) -> None:
        """Queue a new request."""

    @abstractmethod
    def requeue(self, request: Request) -> None:
        """Put back a preempted request, ahead of the requests it arrived before."""

    @abstractmethod
    def peek(self) -> Request:
        """The next request to admit (IndexError when empty)."""

    @abstractmethod
    def pop(self) -> Request:
        """Remove and return the next request to admit (IndexError when empty)."""

    @abstractmethod
    def remove(self, request: Request) -> None:
        """Remove a request wherever it is (ValueError if absent)."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __iter__(self) -> Iterator[Request]:
        """Requests in no particular order."""

    def __bool__(self) -> bool:
        return len(self) > 0


class FCFSQueue(WaitingQueue):
    """First come, first served; preempted requests go back to the front."""

    def __init__(self) -> None:
        self._queue: deque[Request] = deque()

    def add(self, request: Request) -> None:
        self._queue.append(request)

    def requeue(self, request: Request) -> None:
        self._queue.appendleft(request)

    def peek(self) -> Request:
        return self._queue[0]

    def pop(self) -> Request:
        return self._queue.popleft()

    def remove(self, request: Request) -> None:
        self._queue.remove(request)

    def __len__(self) -> int:
        return len(self._queue)

    def __iter__(self) -> Iterator[Request]:
        return iter(self._queue)


class PriorityQueue(WaitingQueue):
    """Lowest (priority, arrival_time) first; ties in the order of adding."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, float, int, Request]] = []
        self._counter = itertools.count()

    def add(self, request: Request) -> None:
        entry = (request.priority, request.arrival_time, next(self._counter), request)
        heapq.heappush(self._heap, entry)

    def requeue(self, request: Request) -> None:
        self.add(request)

    def peek(self) -> Request:
        return self._heap[0][3]

    def pop(self) -> Request:
        return heapq.heappop(self._heap)[3]

    def remove(self, request: Request) -> None:
        for i, entry in enumerate(self._heap):
            if entry[3] is request:
                self._heap[i] = self._heap[-1]
                self._heap.pop()
                heapq.heapify(self._heap)
                return
        raise ValueError(f"request {request.request_id!r} is not waiting")

    def __len__(self) -> int:
        return len(self._heap)

    def __iter__(self) -> Iterator[Request]:
        return (entry[3] for entry in self._heap)


def make_waiting_queue(policy: Policy) -> WaitingQueue:
    """The waiting queue for a scheduling policy."""
    if policy == "priority":
        return PriorityQueue()
    return FCFSQueue()
