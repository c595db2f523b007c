"""Queue members (the agents) of one Asterisk server: their state per queue, from the
QueueMember* events and the QueueStatus list a resync reads.

Apart from the calls: an agent's state changes on its own (login, pause, device state), and
Asterisk repeats a member's full state in every QueueMemberStatus, so only a change is news.
"""

from __future__ import annotations

from cti import values
from cti.ami.message import Message, known
from cti.calls import events as ev


class QueueMembers:
    """Every member of every queue of one server, by (queue, interface)."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.states: dict[tuple[str, str], ev.AgentStateChanged] = {}

    def changed(self, msg: Message, at: float) -> list[ev.Event]:
        """QueueMemberStatus/Added/Pause(d) or a resync's QueueMember: the state, if new."""
        queue = msg.get("Queue", "")
        interface = msg.get("Interface") or msg.get("Location") or ""
        if not queue or not interface:
            return []
        paused = msg.get("Paused") == "1"
        state = ev.AgentStateChanged(
            self.server,
            at,
            queue,
            interface,
            known(msg.get("MemberName") or msg.get("Name")),
            values.counter(msg.get("Status")),
            paused,
            # PausedReason since 13; Asterisk 11's QueueMemberPaused said Reason (16 sends both).
            (msg.get("PausedReason") or msg.get("Reason") or None) if paused else None,
            True,
            None if msg.get("InCall") is None else msg.get("InCall") == "1",
            values.counter(msg.get("CallsTaken")),
        )
        previous = self.states.get((queue, interface))
        self.states[(queue, interface)] = state
        if previous is not None and (
            previous.status,
            previous.paused,
            previous.paused_reason,
            previous.in_call,
        ) == (state.status, state.paused, state.paused_reason, state.in_call):
            return []
        return [state]

    def removed(self, msg: Message, at: float) -> list[ev.Event]:
        """QueueMemberRemoved: logged out of that queue."""
        queue = msg.get("Queue", "")
        interface = msg.get("Interface") or msg.get("Location") or ""
        previous = self.states.pop((queue, interface), None)
        return [
            ev.AgentStateChanged(
                self.server,
                at,
                queue,
                interface,
                known(msg.get("MemberName")) or (previous.agent if previous else None),
                values.counter(msg.get("Status")),
                False,
                None,
                False,
                False,
                values.counter(msg.get("CallsTaken")),
            )
        ]
