"""Per-request progress events for the server-sent-events stream.

Events live in memory: a stream first replays what this agent process published for the request,
then follows live. The request's stored state is the record; events only report progress.
"""

from __future__ import annotations

import asyncio
import datetime
import enum
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EventState", "Event", "EventBus", "TERMINAL_STATES"]


class EventState(str, enum.Enum):
    WAITING_FOR_REVIEW = "waiting_for_review"
    APPROVED = "approved"
    REJECTED = "rejected"
    WAITING_FOR_TOKEN = "waiting_for_token"
    TOKEN_PRESENT = "token_present"
    #: A card that does not hold the signer's certificate (or that qsign cannot read); the wait goes on.
    WRONG_TOKEN = "wrong_token"
    SIGNING = "signing"
    SIGNED = "signed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


#: States after which no further event comes for a request.
TERMINAL_STATES = {EventState.SIGNED, EventState.REJECTED, EventState.CANCELLED, EventState.EXPIRED}

_HISTORY = 50


@dataclass(frozen=True)
class Event:
    request_id: str
    state: EventState
    time: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "state": self.state.value, "time": self.time, **self.data}


class EventBus:
    def __init__(self) -> None:
        self._history: dict[str, deque[Event]] = defaultdict(lambda: deque(maxlen=_HISTORY))
        self._subscribers: dict[str, set[asyncio.Queue[Event]]] = defaultdict(set)

    def publish(self, request_id: str, state: EventState, **data: Any) -> Event:
        event = Event(request_id, state, datetime.datetime.now(datetime.timezone.utc).isoformat(), data)
        self._history[request_id].append(event)
        for queue in self._subscribers.get(request_id, ()):
            queue.put_nowait(event)
        return event

    def history(self, request_id: str) -> list[Event]:
        return list(self._history.get(request_id, ()))

    def subscribe(self, request_id: str) -> asyncio.Queue[Event]:
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self._subscribers[request_id].add(queue)
        return queue

    def unsubscribe(self, request_id: str, queue: asyncio.Queue[Event]) -> None:
        self._subscribers[request_id].discard(queue)
        if not self._subscribers[request_id]:
            del self._subscribers[request_id]
