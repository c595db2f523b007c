"""The finished-call record: what the tracker hands to persistence, statistics and `cti replay`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Direction = Literal["inbound", "outbound", "internal"]
# answered / abandoned / timeout / ivr_only / outbound_<reason>; see README "replay schema".
HangupBy = Literal["caller", "agent", "system", "pbx", "unknown"]
# How the record was closed: seen end to end, reconstructed after a reconnect, or cut by a PBX restart;
# "cel": a call that began and ended while the daemon was away, rebuilt from Asterisk's CEL and
# queue_log in PostgreSQL (calls/gap.py).
ClosedBy = Literal["events", "resync", "queue_log", "pbx_restart", "shutdown", "reconcile", "evicted", "cel"]


@dataclass(slots=True)
class QueueSegment:
    """One stay of the caller in one queue (a blind transfer into another queue opens a second one)."""

    queue: str
    joined_at: float
    left_at: float | None = None
    # answered / abandoned / timeout / full / joinempty / leaveempty / continue / unknown
    outcome: str | None = None
    agent: str | None = None
    interface: str | None = None
    wait_s: float | None = None
    ring_s: float | None = None
    talk_s: float | None = None
    # caller / agent / transfer, from AgentComplete.
    completed_by: str | None = None
    position: int | None = None
    ring_attempts: int = 0
    ring_no_answer: int = 0


@dataclass(slots=True)
class IvrStep:
    at: float
    menu: str
    # enter / choice / invalid / timeout / step
    kind: str
    value: str


@dataclass(slots=True)
class CallRecord:
    server: str
    linkedid: str
    direction: Direction
    started_at: float
    ended_at: float | None = None
    caller_raw: str | None = None
    caller_e164: str | None = None
    caller_name: str | None = None
    called: str | None = None
    ivr_path: list[IvrStep] = field(default_factory=list)
    segments: list[QueueSegment] = field(default_factory=list)
    outcome: str = "unknown"
    hangup_by: HangupBy = "unknown"
    hangup_cause: int | None = None
    agent: str | None = None
    agent_interface: str | None = None
    answered_at: float | None = None
    wait_s: float | None = None
    ring_s: float | None = None
    talk_s: float | None = None
    transfers: int = 0
    # Parties who talked to the caller after a transfer outside any queue (attended transfer).
    transferred_to: list[str] = field(default_factory=list)
    originate_reason: int | None = None
    originate_action_id: str | None = None
    campaign: str | None = None
    contact: str | None = None
    closed_by: ClosedBy = "events"

    @property
    def queue(self) -> str | None:
        return self.segments[0].queue if self.segments else None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["queue"] = self.queue
        data["queues"] = [s.queue for s in self.segments]
        data["ivr_path"] = [f"{s.menu}:{s.kind}={s.value}" for s in self.ivr_path]
        data["ivr_steps"] = [asdict(s) for s in self.ivr_path]
        return data
