"""Domain events the tracker emits. Consumers (screen pops, tickets, dialer, statistics, web) see
only these, never raw AMI messages. Versioned with `SCHEMA_VERSION`; documented in docs/events.md."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from cti.calls.records import CallRecord

SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class Event:
    kind: ClassVar[str] = "event"
    server: str
    at: float

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["type"] = self.kind
        return data


@dataclass(frozen=True, slots=True)
class CallEvent(Event):
    linkedid: str


@dataclass(frozen=True, slots=True)
class CallStarted(CallEvent):
    kind: ClassVar[str] = "call_started"
    direction: str
    caller_raw: str | None
    caller_name: str | None


@dataclass(frozen=True, slots=True)
class CallerIdentified(CallEvent):
    """The caller's number became known or changed (Asterisk often sets it after Newchannel)."""

    kind: ClassVar[str] = "caller_identified"
    caller_raw: str | None
    caller_e164: str | None
    caller_name: str | None


@dataclass(frozen=True, slots=True)
class IvrStepped(CallEvent):
    kind: ClassVar[str] = "ivr_step"
    menu: str
    step: str  # enter / choice / invalid / timeout / step
    value: str


@dataclass(frozen=True, slots=True)
class QueueJoined(CallEvent):
    kind: ClassVar[str] = "queue_joined"
    queue: str
    position: int | None
    waiting: int | None  # callers now waiting in that queue, Asterisk's own count


@dataclass(frozen=True, slots=True)
class QueueLeft(CallEvent):
    """The caller left the queue (answered, abandoned, timed out or transferred away)."""

    kind: ClassVar[str] = "queue_left"
    queue: str
    waiting: int | None


@dataclass(frozen=True, slots=True)
class AgentRinging(CallEvent):
    kind: ClassVar[str] = "agent_ringing"
    queue: str | None
    agent: str | None
    interface: str
    agent_channel: str
    caller_raw: str | None
    caller_e164: str | None


@dataclass(frozen=True, slots=True)
class AgentRingStopped(CallEvent):
    """An agent's phone stopped ringing without them taking the call.

    reason: no_answer (their ring timeout), answered_elsewhere (ring-all race lost), caller_left."""

    kind: ClassVar[str] = "agent_ring_stopped"
    queue: str | None
    agent: str | None
    interface: str
    reason: str
    ring_s: float | None


@dataclass(frozen=True, slots=True)
class CallAnswered(CallEvent):
    kind: ClassVar[str] = "call_answered"
    queue: str | None
    agent: str | None
    interface: str
    agent_channel: str | None
    wait_s: float | None
    ring_s: float | None


@dataclass(frozen=True, slots=True)
class AgentCompleted(CallEvent):
    """The agent's part of a queue call ended (reason caller / agent / transfer)."""

    kind: ClassVar[str] = "agent_completed"
    queue: str | None
    agent: str | None
    interface: str
    reason: str
    talk_s: float | None


@dataclass(frozen=True, slots=True)
class CallAbandoned(CallEvent):
    kind: ClassVar[str] = "call_abandoned"
    queue: str
    wait_s: float | None
    position: int | None


@dataclass(frozen=True, slots=True)
class QueueTimedOut(CallEvent):
    """Left the queue without an agent and without hanging up: timeout, leave-empty, full."""

    kind: ClassVar[str] = "queue_timeout"
    queue: str
    wait_s: float | None
    status: str


@dataclass(frozen=True, slots=True)
class CallTransferred(CallEvent):
    kind: ClassVar[str] = "call_transferred"
    transfer: str  # blind / attended
    from_agent: str | None
    from_interface: str | None
    target: str | None  # queue/extension (blind) or the new party's device (attended)


@dataclass(frozen=True, slots=True)
class OriginateResult(CallEvent):
    kind: ClassVar[str] = "originate_result"
    action_id: str | None
    reason: int
    outcome: str  # failed / hangup / no_answer / answered / busy / congestion / unknown_<n>
    channel: str | None


@dataclass(frozen=True, slots=True)
class DialerConnected(CallEvent):
    kind: ClassVar[str] = "dialer_connected"
    campaign: str | None
    contact: str | None


@dataclass(frozen=True, slots=True)
class CallEnded(CallEvent):
    kind: ClassVar[str] = "call_ended"
    record: CallRecord

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "server": self.server,
            "at": self.at,
            "linkedid": self.linkedid,
            "record": self.record.to_json(),
        }


@dataclass(frozen=True, slots=True)
class AgentStateChanged(Event):
    """A queue member's state as Asterisk reports it (per queue)."""

    kind: ClassVar[str] = "agent_state"
    queue: str
    interface: str
    agent: str | None
    status: int | None  # AST_DEVICE_* code: 1 not in use, 2 in use, 5 unavailable, 6 ringing...
    paused: bool
    paused_reason: str | None
    logged_in: bool
    in_call: bool | None
    calls_taken: int | None


@dataclass(frozen=True, slots=True)
class LinkStateChanged(Event):
    kind: ClassVar[str] = "link_state"
    up: bool
    detail: str
