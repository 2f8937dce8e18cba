"""The simulator's single event heap.

Entries are ``(time_s, sequence number, kind, object)``; the sequence number makes ties deterministic (first
scheduled, first served) and keeps objects from ever being compared. Arrivals, timeline samples and planner windows
do not enter the heap: the event loop (:mod:`biscale.sim.engine`) merges them in.
"""

from __future__ import annotations

import heapq
import itertools
from enum import IntEnum
from typing import Any

from biscale.sim.instance import Instance


class Event(IntEnum):
    """Kinds of heap events (the object each carries in brackets)."""

    PREFILL_END = 0
    """A prefill iteration ended [PrefillInstance]."""
    DECODE_END = 1
    """A decode iteration ended [DecodeInstance]."""
    KV_DONE = 2
    """A request's KV transfer ended [request id]."""
    READY = 3
    """An instance finished starting up [Instance]."""
    KICK_PREFILL = 4
    """An idle prefill instance got work: it forms a batch after every other event of the same instant
    [PrefillInstance]."""
    KICK_DECODE = 5
    """The same for a decode instance [DecodeInstance]."""
    CAPACITY = 6
    """Instances were created while other work was being handled: route the global queues [None] (a deferred
    call, so that no loop over a queue is ever re-entered by the stop that created them)."""


# Heap entries carry plain ints (comparisons between IntEnum members miss CPython's fast path for exact ints).
_KICK_PREFILL, _KICK_DECODE = int(Event.KICK_PREFILL), int(Event.KICK_DECODE)


class EventQueue:
    """The heap plus the two operations every stage needs: schedule an event, wake an idle instance."""

    __slots__ = ("heap", "next_seq")

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, int, Any]] = []
        self.next_seq = itertools.count().__next__
        """Next tie-breaking sequence number (hot paths push with ``heapq.heappush`` and this directly)."""

    def push(self, t: float, kind: int, obj: Any) -> None:
        """Schedule event ``kind`` carrying ``obj`` at time ``t``."""
        heapq.heappush(self.heap, (t, self.next_seq(), kind, obj))

    def kick(self, inst: Instance, t: float) -> None:
        """Wake an idle instance *after* every other event at ``t`` (so simultaneous arrivals share a batch)."""
        if not inst.kick_pending:
            inst.kick_pending = True
            kind = _KICK_PREFILL if inst.phase == "prefill" else _KICK_DECODE
            heapq.heappush(self.heap, (t, self.next_seq(), kind, inst))
