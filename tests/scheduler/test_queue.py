"""Waiting queues: fcfs and priority order, requeueing and removal."""

from __future__ import annotations

import pytest

from llmservice.scheduler import FCFSQueue, PriorityQueue, Request, RequestLimits


def _r(rid: str, priority: int = 0, arrival: float = 0.0) -> Request:
    return Request(rid, [1], RequestLimits(max_tokens=1), priority=priority, arrival_time=arrival)


def test_fcfs_admits_in_order_and_requeues_at_the_front() -> None:
    q = FCFSQueue()
    a, b, c = _r("a"), _r("b"), _r("c")
    q.add(a)
    q.add(b)
    q.requeue(c)
    assert [q.pop().request_id for _ in range(3)] == ["c", "a", "b"]
    assert not q


def test_priority_admits_lowest_value_then_earliest_arrival_then_adding_order() -> None:
    q = PriorityQueue()
    for r in [_r("late", 1, 5.0), _r("urgent", 0, 9.0), _r("early", 1, 1.0), _r("tie", 1, 1.0)]:
        q.add(r)
    assert q.peek().request_id == "urgent"
    assert [q.pop().request_id for _ in range(4)] == ["urgent", "early", "tie", "late"]


def test_priority_requeue_keeps_priority_order() -> None:
    q = PriorityQueue()
    q.add(_r("high", 0, 5.0))
    q.requeue(_r("preempted", 1, 0.0))
    assert q.pop().request_id == "high"


@pytest.mark.parametrize("queue_cls", [FCFSQueue, PriorityQueue])
def test_remove_takes_out_any_request(queue_cls: type[FCFSQueue] | type[PriorityQueue]) -> None:
    q = queue_cls()
    rs = [_r(str(i), priority=i % 3, arrival=float(i)) for i in range(6)]
    for r in rs:
        q.add(r)
    q.remove(rs[3])
    q.remove(rs[0])
    assert len(q) == 4
    assert sorted(r.request_id for r in q) == ["1", "2", "4", "5"]
    with pytest.raises(ValueError):
        q.remove(rs[0])
    popped = [q.pop().request_id for _ in range(4)]
    assert sorted(popped) == ["1", "2", "4", "5"]
