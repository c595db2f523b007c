"""Desktop frames that name a call carry its server as well as its linkedid (docs/websocket.md).

A linkedid is unique within one Asterisk only: two PBXs without their own `systemname` can name
two calls alike, and one desktop may be offered both (a node hears every PBX, docs/scale-out.md).
The frames that carry a whole pop (`pop`, `pop.update`, `pop.answered`, `state`) have its
`server`, and so do tickets; `pop.withdraw`, `pop.transferred` and `pop.ended` named the call by
its `linkedid` alone, so the desktop could drop the pop of one PBX's call when the other's ended.

The screen-pop router (screenpop/router.py) builds those frames while it handles one domain event,
always about that event's call: `CallFrames` wraps the router's event handler to know which event
is being handled, and its `send` adds that event's `server` to a frame naming the same `linkedid`
without a server. A frame that already has its server goes through untouched (`linkedid` is
kept: desktops of an earlier version read it alone).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cti.calls import events as ev

# The frames that refer to a call by `linkedid` at their top level.
NAMES_A_CALL = frozenset({"pop.withdraw", "pop.transferred", "pop.ended"})

Send = Callable[[str, dict[str, Any]], None]


class CallFrames:
    def __init__(self, send: Send) -> None:
        self._send = send
        self._handling: tuple[str, str] | None = None  # (server, linkedid) of the event in hand

    def around(self, on_event: Callable[[ev.Event], None]) -> Callable[[ev.Event], None]:
        """`on_event`, with the event's call known to `send` while it runs (it sends in line)."""

        def handle(event: ev.Event) -> None:
            if not isinstance(event, ev.CallEvent):
                on_event(event)
                return
            outer, self._handling = self._handling, (event.server, event.linkedid)
            try:
                on_event(event)
            finally:
                self._handling = outer

        return handle

    def send(self, username: str, message: dict[str, Any]) -> None:
        handling = self._handling
        if (
            handling is not None
            and message.get("type") in NAMES_A_CALL
            and "server" not in message
            and message.get("linkedid") == handling[1]
        ):
            message = {**message, "server": handling[0]}
        self._send(username, message)
