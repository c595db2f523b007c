"""What the call tracker holds of a call in progress: its channels, the agents it rings, and the
facts seen along the way that decide its outcome (calls/outcome.py) when it ends."""

from __future__ import annotations

from dataclasses import dataclass, field

from cti.calls.records import CallRecord, ClosedBy, HangupBy, QueueSegment


@dataclass(slots=True)
class LiveChannel:
    """One channel of a call, as the tracker follows it."""

    uniqueid: str
    name: str
    call: LiveCall
    seen_at: float = 0.0
    bridged: bool = False
    excluded: bool = False  # a transferer that left the conversation
    bridge: str | None = None  # the bridge it is in now (BridgeEnter/BridgeLeave)


@dataclass(slots=True)
class Ringing:
    """An agent's phone ringing for a queue call (AgentCalled until it is answered or stops)."""

    queue: str | None
    agent: str | None
    interface: str
    channel: str
    started: float


@dataclass(slots=True)
class LiveCall:
    """A call in progress: its record (what is stored) and what the tracker needs to settle it."""

    record: CallRecord
    channels: dict[str, LiveChannel] = field(default_factory=dict)
    uids: set[str] = field(default_factory=set)  # every channel it ever had, hung up or not
    originated: bool = False
    originate_key: str | None = None
    originate_resolved: bool = False
    ivr_seen: bool = False
    system_uids: set[str] = field(default_factory=set)
    ringing: dict[str, Ringing] = field(default_factory=dict)
    answered_dest: set[str] = field(default_factory=set)
    open_segments: dict[str, QueueSegment] = field(default_factory=dict)  # by caller channel uniqueid
    pending_abandon: list[QueueSegment] = field(default_factory=list)
    caller_hung_up: bool = False
    hangup_signal: tuple[HangupBy, float] | None = None
    pbx_cut: bool = False
    last_complete: tuple[str, float] | None = None
    awaiting_originate_since: float | None = None
    originate_answered_at: float | None = None  # OriginateResponse Reason 4
    # Every channel hung up but Asterisk's AgentComplete for the conversation is still to come:
    # it may follow the last Hangup (seen with PJSIP phones, carrying only Dest* headers).
    awaiting_complete_since: float | None = None
    queue_log_uids: set[str] = field(default_factory=set)
    # The latest queue_log line that ended a queue visit (COMPLETE*, ABANDON, EXIT*): when the
    # call ended unseen, its best known end (the resync's own time can be much later).
    queue_log_end: float | None = None
    # An Originate whose first leg is a device (click-to-call: the agent's phone rings first):
    # that device, the leg it then dials (the customer) and how that dial ended.
    origin_device: str | None = None
    dial_out: str | None = None
    dial_out_status: str | None = None
    # Held for the recovery (`CallTracker.hold_adopted`): how it is closed if released as seen.
    held_as: ClosedBy = "events"
    # Its first channel is the `;1` of a Local pair: an Originate made it, even when its
    # DialBegin went unseen (during a cut).
    local_origin: bool = False
    # Known from before a gap (open when the AMI link dropped, or restored after a stop): what
    # went meanwhile (IVR steps, the dialer's DialerConnected) is only in Asterisk's records.
    crossed_gap: bool = False
