"""The call tracker: AMI messages in, domain events out. Pure logic, no I/O.

Channels are grouped into calls by `Linkedid` (the uniqueid of the call's first channel).
Everything the live link, `cti replay` and the tests feed goes through `CallTracker.feed`, so
what a test replays is what production runs.

Facts from real Asterisk 22 traffic this code relies on (see ../shared/ami-captures/README.md):
- `QueueCallerAbandon` is also sent when a caller leaves by queue timeout or leave-empty. A real
  abandon is always preceded by a hangup request on the caller's side; a timeout is not, and our
  dialplans follow it with `UserEvent: QueueExit` / `Status: TIMEOUT`.
- `AgentRingNoAnswer` carries `RingTime` in milliseconds, `AgentConnect`/`AgentComplete` seconds.
- A failed Async Originate's `OriginateResponse` has `Uniqueid: <unknown>` and names the dial
  string (`Local/0600000002@fake-pstn`), not the channel.
- In a ring-all queue the agents who lose the race get `DialEnd` CANCEL, no `AgentRingNoAnswer`.
- A PBX shutdown soft-hangs every channel with cause 4 before ordinary-looking hangups.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable

from cti import values
from cti.ami.message import Message, known
from cti.calls import events as ev
from cti.calls.channels import (
    ORIGINATE_ANSWERED,
    campaign_of_account,
    device_of,
    dialed_number,
    is_local_half,
    leg_of,
    originate_outcome,
    rings_a_device,
)
from cti.calls.ivr import IvrVocabulary
from cti.calls.live_call import LiveCall, LiveChannel, Ringing
from cti.calls.members import QueueMembers
from cti.calls.outcome import settle
from cti.calls.queue_log import QueueLogEntry
from cti.calls.records import CallRecord, ClosedBy, Direction, HangupBy, IvrStep, QueueSegment
from cti.directory.numbers import normalize

# QUEUESTATUS values that mean "left without an agent and without hanging up".
_QUEUE_EXIT_TIMEOUTS = frozenset(
    {"TIMEOUT", "LEAVEEMPTY", "JOINEMPTY", "FULL", "JOINUNAVAIL", "LEAVEUNAVAIL"}
)
_SHUTDOWN_CAUSE = "4"
ENDED_MEMORY = 20_000
# Live calls at most: a call whose hangups never arrive (a lost event, a PBX bug) must not hold
# memory for ever. The periodic reconcile closes such calls long before; this is the last guard.
MAX_LIVE_CALLS = 50_000
CHANNEL_STATE_UP = "6"  # ChannelState of an answered channel (AST_STATE_UP)
# How long a call whose queue conversation ended waits for a late AgentComplete.
COMPLETE_GRACE_S = 2.0
RESYNC_EVENTS = frozenset({"CoreShowChannel", "QueueParams", "QueueMember", "QueueEntry"})
# Dialplan contexts of the agents' own phones (dialplans/cti-agents.conf): a call that starts
# there is an agent's, not a customer's (feature codes, calls between agents), until it reaches
# the SVI (the 7000 test number) or is dialled out.
INTERNAL_CONTEXTS = frozenset({"cti-agents", "cti-agent-features"})


# CEL's row of a UserEvent and its AMI event are stamped apart by Asterisk (microseconds; a
# second leaves room for a loaded PBX), and a caller does not choose twice within it.
SAME_STEP_S = 1.0


def _int(value: str | None) -> int | None:
    return values.counter(value)  # None when missing or absurd (logged)


def _float(value: str | None) -> float | None:
    return values.duration(value)  # every float header read is a duration: None when absurd


class CallTracker:
    """Follows every call on one Asterisk server. `feed` one AMI message, get domain events back."""

    def __init__(
        self,
        server: str = "default",
        region: str = "FR",
        originate_grace_s: float = 10.0,
        clock: Callable[[], float] | None = None,
        internal_contexts: Iterable[str] = INTERNAL_CONTEXTS,
        ivr: IvrVocabulary | None = None,
        max_calls: int = MAX_LIVE_CALLS,
    ) -> None:
        self.server = server
        self.max_calls = max_calls
        self.evicted = 0
        self.internal_contexts = frozenset(internal_contexts)
        self.ivr = ivr or IvrVocabulary()
        self.region = region
        self.originate_grace_s = originate_grace_s
        self._clock = clock
        self._pbx_clock = values.AsteriskClock()
        self._last_at = 0.0
        self.untimed = False
        self.calls: dict[str, LiveCall] = {}
        self.channels: dict[str, LiveChannel] = {}
        # Recently ended calls: late events for them must not resurrect a ghost call.
        self._ended: OrderedDict[str, None] = OrderedDict()
        # Channels already hung up: Asterisk still sends a few events for them (NewCallerid
        # during a transfer's tear-down), which must not bring them back.
        self._dead: OrderedDict[str, None] = OrderedDict()
        self._awaiting: dict[str, LiveCall] = {}
        # Calls waiting for a late AgentComplete, oldest first (insertion order = hang-up order).
        self._completing: dict[str, LiveCall] = {}
        # OriginateResponses that arrived before their channel's Newchannel (Asterisk's threads
        # race: same millisecond), by the Uniqueid they name: held until the channel appears.
        self._early: OrderedDict[str, tuple[float, Message]] = OrderedDict()
        # While a recovery from Asterisk's own records is pending, calls whose story those records
        # hold and this tracker does not are held, not closed: adopted mid-way (their beginning
        # unseen) and then ended (the part seen may not tell an abandon from a timeout), and
        # those the resync finds over (in progress at the last stop or when the link dropped:
        # their end unseen).
        # The recovery settles them from CEL and queue_log (`held`, `settle_held`,
        # `forget_held`; calls/recovery.py).
        self.hold_adopted = False
        self._held: dict[str, LiveCall] = {}
        # OriginateResponses naming no channel (a failed Originate) that match no call, while a
        # recovery is pending: most are the end of a call that began while the daemon was away
        # and whose channels it never met; the recovery records that call from Asterisk's
        # records, and only the others become attempts of their own (`orphans`).
        self._orphans: list[tuple[float, Message]] = []
        self._members = QueueMembers(server)
        # The agents' states by (queue, interface) (calls/members.py).
        self.members = self._members.states
        self.unhandled: dict[str, int] = {}
        self._handlers: dict[str, Callable[[Message, float], list[ev.Event]]] = {
            "Newchannel": self._on_newchannel,
            "NewCallerid": self._on_newcallerid,
            "DialBegin": self._on_dial_begin,
            "DialEnd": self._on_dial_end,
            "UserEvent": self._on_user_event,
            "QueueCallerJoin": self._on_queue_join,
            "QueueCallerLeave": self._on_queue_leave,
            "QueueCallerAbandon": self._on_queue_abandon,
            "AgentCalled": self._on_agent_called,
            "AgentRingNoAnswer": self._on_agent_ring_no_answer,
            "AgentConnect": self._on_agent_connect,
            "AgentComplete": self._on_agent_complete,
            "BridgeEnter": self._on_bridge_enter,
            "BridgeLeave": self._on_bridge_leave,
            "BlindTransfer": self._on_blind_transfer,
            "AttendedTransfer": self._on_attended_transfer,
            "SoftHangupRequest": self._on_hangup_request,
            "HangupRequest": self._on_hangup_request,
            "Hangup": self._on_hangup,
            "OriginateResponse": self._on_originate_response,
            "Shutdown": self._on_shutdown,
            "QueueMemberStatus": self._members.changed,
            "QueueMemberAdded": self._members.changed,
            "QueueMemberPause": self._members.changed,
            "QueueMemberPaused": self._members.changed,
            "QueueMemberRemoved": self._members.removed,
            "QueueMember": self._members.changed,
        }

    # ------------------------------------------------------------------ entry points
    @property
    def handled_events(self) -> frozenset[str]:
        """Event names this tracker reads (plus the list items a resync reads)."""
        return frozenset(self._handlers) | RESYNC_EVENTS

    def feed(self, msg: Message, now: float | None = None) -> list[ev.Event]:
        name = msg.get("Event")
        if name is None:
            return []
        handler = self._handlers.get(name)
        if handler is None:
            return []
        at = self._time(msg, now)
        if self._completing or self._early:
            # A replay has no ticks: the events' own clock ends the waits.
            return [*self._expire_completing(at), *self._expire_early(at), *handler(msg, at)]
        return handler(msg, at)

    def tick(self, now: float) -> list[ev.Event]:
        """Close originated calls whose OriginateResponse never came within the grace period."""
        out: list[ev.Event] = [*self._expire_completing(now), *self._expire_early(now)]
        for linkedid, call in list(self._awaiting.items()):
            if (
                call.awaiting_originate_since is not None
                and now - call.awaiting_originate_since >= self.originate_grace_s
            ):
                del self._awaiting[linkedid]
                out.extend(self._finalize(call, call.record.ended_at or now))
        return out

    def _expire_early(self, now: float, everything: bool = False) -> list[ev.Event]:
        """Early OriginateResponses whose channel never appeared: recorded on their own."""
        out: list[ev.Event] = []
        while self._early:
            uid, (at, msg) = next(iter(self._early.items()))
            if not everything and now - at < self.originate_grace_s:
                break
            del self._early[uid]
            out.extend(self._on_originate_response(msg, at, hold=False))
        return out

    def _expire_completing(self, now: float) -> list[ev.Event]:
        out: list[ev.Event] = []
        while self._completing:
            linkedid, call = next(iter(self._completing.items()))
            if call.awaiting_complete_since is None or now - call.awaiting_complete_since < COMPLETE_GRACE_S:
                break
            del self._completing[linkedid]
            out.extend(self._finalize(call, call.record.ended_at or now))
        return out

    def flush(self) -> list[ev.Event]:
        """End of a replay: finalize calls still waiting for an OriginateResponse."""
        out: list[ev.Event] = self._expire_early(self._last_at, everything=True)
        for call in [*self._completing.values(), *self._awaiting.values()]:
            out.extend(self._finalize(call, call.record.ended_at or self._last_at))
        self._completing.clear()
        self._awaiting.clear()
        return out

    @property
    def last_event_at(self) -> float:
        """The latest event time seen (the PBX's clock when it stamps events)."""
        return self._last_at

    def knows(self, linkedid: str) -> bool:
        """The call is in progress here, waiting for a late event, or ended recently."""
        return (
            linkedid in self.calls
            or linkedid in self._ended
            or linkedid in self._completing
            or linkedid in self._awaiting
        )

    def open_calls(self) -> list[CallRecord]:
        return [c.record for c in self.calls.values()]

    def calls_gone(self, alive: Iterable[str], cutoff: float) -> list[CallRecord]:
        """Open calls none of whose channels is in `alive` (CoreShowChannels' uniqueids), among
        those whose channels were all seen before `cutoff` (the snapshot's time)."""
        up = set(alive)
        return [
            call.record
            for call in self.calls.values()
            if not any(uid in up for uid in call.channels)
            and all(c.seen_at <= cutoff for c in call.channels.values())
        ]

    # ------------------------------------------------------------------ helpers
    def _time(self, msg: Message, now: float | None) -> float:
        raw = msg.get("Timestamp")
        # Asterisk's clock when sane, else the arrival time on it (cti.values.AsteriskClock).
        stamp = self._pbx_clock.read(raw, now)
        if stamp is None:
            if not raw and now is None and self._clock is None:
                # No clock at all (a replay of traffic from `timestampevents = no`, Asterisk's
                # default): times are not absolute, durations come from Asterisk's own figures.
                self.untimed = True
            stamp = now if now is not None else (self._clock() if self._clock else self._last_at)
        if stamp > self._last_at:
            self._last_at = stamp
        return stamp

    def _call_for(
        self, msg: Message, at: float, uid_key: str = "Uniqueid", create: bool = True
    ) -> LiveCall | None:
        uid = msg.get(uid_key)
        if uid is None:
            return None
        channel = self.channels.get(uid)
        if channel is not None:
            return channel.call
        prefix = uid_key[: -len("Uniqueid")]
        linkedid = known(msg.get(prefix + "Linkedid"))
        if linkedid is None or not create or linkedid in self._ended or uid in self._dead:
            return None
        # A channel we never saw created (we connected mid-call): adopt it.
        call = self.calls.get(linkedid)
        if call is None:
            call = self._new_call(linkedid, msg, at, prefix)[0]
            call.record.closed_by = "resync"  # its beginning was not seen, as a resync's adoption
        channel = self._add_channel(call, uid, msg.get(prefix + "Channel", ""))
        if call.record.closed_by == "resync":
            self._adopt_origin(call, channel, msg.get(prefix + "ChannelState"))
        return call

    def _adopt_origin(self, call: LiveCall, channel: LiveChannel, state: str | None) -> None:
        """An adopted call whose first channel is the `;1` of a Local pair was started by an
        Originate (nothing else starts a call on one). Not answered yet, its OriginateResponse
        is still to come (Asterisk sends it on the answer or the failure): it must find this
        call, by the dialled leg as a live Originate's DialBegin would have keyed it, and not
        make a second record of the same attempt."""
        if channel.uniqueid != call.record.linkedid or not is_local_half(channel.name, "1"):
            return
        if state is None or state == CHANNEL_STATE_UP:
            return
        call.originated = True
        key = call.originate_key = call.originate_key or device_of(channel.name)
        if not call.ivr_seen:
            call.record.direction = "outbound"
        if not rings_a_device(key):
            call.record.called = call.record.called or dialed_number(key)

    def _new_call(
        self, linkedid: str, msg: Message, at: float, prefix: str = "", direction: Direction = "inbound"
    ) -> tuple[LiveCall, list[ev.Event]]:
        record = CallRecord(server=self.server, linkedid=linkedid, direction=direction, started_at=at)
        call = LiveCall(record=record)
        evicted = self._evict_oldest(at) if len(self.calls) >= self.max_calls else []
        self.calls[linkedid] = call
        self._set_caller(call, msg.get(prefix + "CallerIDNum"), msg.get(prefix + "CallerIDName"))
        started = ev.CallStarted(
            self.server, at, linkedid, record.direction, record.caller_raw, record.caller_name
        )
        return call, [*evicted, started]

    def _evict_oldest(self, at: float) -> list[ev.Event]:
        """Over `max_calls` live calls: close the oldest (calls are kept in arrival order)."""
        oldest = next(iter(self.calls.values()))
        self.evicted += 1
        return self._finalize(oldest, at, "evicted")

    def _add_channel(self, call: LiveCall, uid: str, name: str) -> LiveChannel:
        if uid == call.record.linkedid and is_local_half(name, "1"):
            call.local_origin = True
        channel = LiveChannel(uid, name, call, self._last_at)
        self.channels[uid] = channel
        call.channels[uid] = channel
        call.uids.add(uid)
        return channel

    def _set_caller(self, call: LiveCall, number: str | None, name: str | None) -> bool:
        number, name = known(number), known(name)
        record = call.record
        changed = False
        if number is not None and number != record.caller_raw:
            record.caller_raw = number
            record.caller_e164 = normalize(number, self.region).e164
            changed = True
        if name is not None and name != record.caller_name:
            record.caller_name = name
            changed = True
        return changed

    def _is_customer_channel(self, call: LiveCall, uid: str) -> bool:
        if uid == call.record.linkedid or uid in call.system_uids:
            return True
        channel = self.channels.get(uid)
        if channel is None:
            return False
        peer = self._peer(channel)
        if peer is not None and (peer.uniqueid == call.record.linkedid or peer.uniqueid in call.system_uids):
            return True
        # An originated call's first channel is a Local pair: the customer is whatever its far
        # half (;2) is bridged to (the trunk leg it dialled), not the channel itself.
        first = self.channels.get(call.record.linkedid)
        far = self._peer(first) if first is not None else None
        return far is not None and far.bridge is not None and channel.bridge == far.bridge

    def _peer(self, channel: LiveChannel) -> LiveChannel | None:
        """The other half of a Local channel pair."""
        if not channel.name.startswith("Local/"):
            return None
        leg = leg_of(channel.name)
        for other in channel.call.channels.values():
            if other is not channel and leg_of(other.name) == leg:
                return other
        return None

    def _segment(self, call: LiveCall, msg: Message, queue: str | None, at: float) -> QueueSegment | None:
        """The caller's current segment in `queue` (created if we missed its QueueCallerJoin)."""
        uid = msg.get("Uniqueid", "")
        segment = call.open_segments.get(uid)
        if segment is not None and (queue is None or segment.queue == queue):
            return segment
        for candidate in reversed(call.record.segments):
            if queue is None or candidate.queue == queue:
                return candidate
        if queue is None:
            return None
        segment = QueueSegment(queue=queue, joined_at=at)
        call.record.segments.append(segment)
        return segment

    # ------------------------------------------------------------------ channels
    def _on_newchannel(self, msg: Message, at: float) -> list[ev.Event]:
        uid, linkedid = msg.get("Uniqueid"), known(msg.get("Linkedid"))
        if uid is None or uid in self.channels:
            return []
        linkedid = linkedid or uid
        out: list[ev.Event] = []
        call = self.calls.get(linkedid)
        if call is None and (linkedid in self._ended or uid in self._dead):
            # The same frame again (a proxy or a capture that repeats itself): a channel can only
            # be created by a live one, so this call is over and must not start a second time,
            # whose record would overwrite the real one.
            return []
        if call is None:
            internal = msg.get("Context") in self.internal_contexts
            call, out = self._new_call(linkedid, msg, at, direction="internal" if internal else "inbound")
        self._add_channel(call, uid, msg.get("Channel", ""))
        early = self._early.pop(uid, None)
        if early is not None:
            call.originated = True
            out.extend(self._on_originate_response(early[1], early[0]))
        return out

    def _on_newcallerid(self, msg: Message, at: float) -> list[ev.Event]:
        call = self._call_for(msg, at)
        uid = msg.get("Uniqueid", "")
        if call is None or not self._is_customer_channel(call, uid):
            return []
        if not self._set_caller(call, msg.get("CallerIDNum"), msg.get("CallerIDName")):
            return []
        r = call.record
        return [ev.CallerIdentified(self.server, at, r.linkedid, r.caller_raw, r.caller_e164, r.caller_name)]

    def _on_dial_begin(self, msg: Message, at: float) -> list[ev.Event]:
        if "Channel" in msg:
            return self._on_dial_out(msg, at)
        # No calling channel: the dial was started by an Originate (or a transfer feature).
        dest_uid = msg.get("DestUniqueid", "")
        call = self._call_for(msg, at, "DestUniqueid")
        if call is None or dest_uid != call.record.linkedid:
            return []
        call.originated = True
        dest = msg.get("DestChannel", "")
        tech = dest.split("/", 1)[0]
        dial = msg.get("DialString")
        call.originate_key = f"{tech}/{dial}" if dial else leg_of(dest)
        if not call.ivr_seen:
            call.record.direction = "outbound"
        # The dialer's Originate names its campaign in the accountcode: known now, answered or not.
        campaign = campaign_of_account(msg.get("DestAccountCode"))
        if campaign is not None:
            call.record.campaign = campaign
        if rings_a_device(f"{tech}/{dial or ''}"):
            # A device rings first (click-to-call: the agent's phone); the number called is the
            # one it dials once answered, not its own extension.
            call.origin_device = device_of(dest)
        else:
            # Local/<number>@context, PJSIP/<number>@trunk: the number the call is for.
            call.record.called = dialed_number(dial) or known(msg.get("DestExten"))
        return []

    def _on_dial_out(self, msg: Message, at: float) -> list[ev.Event]:
        """The device an Originate rang first dials out: that number is the one called."""
        call = self._call_for(msg, at, create=False)
        if (
            call is None
            or call.origin_device is None
            or call.dial_out is not None
            or msg.get("Uniqueid") != call.record.linkedid
        ):
            return []
        call.dial_out = msg.get("DestUniqueid")
        call.record.called = dialed_number(msg.get("DialString")) or known(msg.get("DestExten"))
        return []

    def _dial_out_ended(self, call: LiveCall, status: str, at: float) -> None:
        call.dial_out_status = status
        if status == "ANSWER" and call.record.answered_at is None:
            call.record.answered_at = at  # the customer picked up: the conversation starts

    def _on_dial_end(self, msg: Message, at: float) -> list[ev.Event]:
        status = msg.get("DialStatus", "")
        dest_uid = msg.get("DestUniqueid", "")
        call = self._call_for(msg, at, create=False) if "Uniqueid" in msg else None
        if call is None:
            return []
        if dest_uid and dest_uid == call.dial_out:
            self._dial_out_ended(call, status, at)
        if status == "ANSWER":
            call.answered_dest.add(dest_uid)
            return []
        ringing = call.ringing.pop(dest_uid, None)
        if ringing is None:
            return []
        if call.answered_dest - {dest_uid}:
            reason = "answered_elsewhere"
        elif call.caller_hung_up:
            reason = "caller_left"
        else:
            reason = "cancelled"
        return [
            ev.AgentRingStopped(
                self.server,
                at,
                call.record.linkedid,
                ringing.queue,
                ringing.agent,
                ringing.interface,
                reason,
                at - ringing.started,
            )
        ]

    # ------------------------------------------------------------------ dialplan user events
    def _on_user_event(self, msg: Message, at: float) -> list[ev.Event]:
        kind = msg.get("UserEvent")
        call = self._call_for(msg, at)
        if call is None:
            return []
        uid = msg.get("Uniqueid", "")
        if kind == self.ivr.event:
            return self._ivr_step(call, uid, msg, at)
        if kind == "QueueExit":
            return self._queue_exit(call, msg, at)
        if kind == "DialerConnected":
            call.system_uids.add(uid)
            call.record.direction = "outbound"
            call.record.campaign = known(msg.get("Campaign"))
            call.record.contact = known(msg.get("Contact"))
            return [
                ev.DialerConnected(
                    self.server, at, call.record.linkedid, call.record.campaign, call.record.contact
                )
            ]
        return []

    def _ivr_step(self, call: LiveCall, uid: str, msg: Message, at: float) -> list[ev.Event]:
        call.ivr_seen = True
        call.system_uids.add(uid)
        call.record.direction = "inbound"
        menu = self.ivr.menu(msg)
        kind, value = self.ivr.classify(msg)
        call.record.ivr_path.append(IvrStep(at, menu, kind, value))
        return [ev.IvrStepped(self.server, at, call.record.linkedid, menu, kind, value)]

    def _queue_exit(self, call: LiveCall, msg: Message, at: float) -> list[ev.Event]:
        status = msg.get("Status", "").upper()
        queue = msg.get("Queue", "")
        if status not in _QUEUE_EXIT_TIMEOUTS:
            return []
        for segment in list(call.pending_abandon):
            if segment.queue == queue:
                call.pending_abandon.remove(segment)
                return self._timed_out(call, segment, status.lower(), at)
        if status in ("JOINEMPTY", "FULL", "JOINUNAVAIL") and not any(
            s.queue == queue and s.left_at is None for s in call.record.segments
        ):
            # Refused at the door: never joined, so no QueueCallerJoin/Abandon was sent.
            segment = QueueSegment(queue=queue, joined_at=at, left_at=at, outcome=status.lower(), wait_s=0.0)
            call.record.segments.append(segment)
            return [ev.QueueTimedOut(self.server, at, call.record.linkedid, queue, 0.0, status.lower())]
        return []

    # ------------------------------------------------------------------ queue
    def _on_queue_join(self, msg: Message, at: float) -> list[ev.Event]:
        call = self._call_for(msg, at)
        if call is None:
            return []
        uid = msg.get("Uniqueid", "")
        call.system_uids.add(uid)
        if call.record.caller_raw is None:
            self._set_caller(call, msg.get("CallerIDNum"), msg.get("CallerIDName"))
        queue = msg.get("Queue", "")
        segment = QueueSegment(queue=queue, joined_at=at, position=_int(msg.get("Position")))
        call.record.segments.append(segment)
        call.open_segments[uid] = segment
        return [
            ev.QueueJoined(
                self.server, at, call.record.linkedid, queue, segment.position, _int(msg.get("Count"))
            )
        ]

    def _on_queue_leave(self, msg: Message, at: float) -> list[ev.Event]:
        call = self._call_for(msg, at, create=False)
        if call is None:
            return []
        segment = call.open_segments.pop(msg.get("Uniqueid", ""), None)
        queue = msg.get("Queue", "")
        if segment is not None and segment.left_at is None:
            segment.left_at = at
        return [ev.QueueLeft(self.server, at, call.record.linkedid, queue, _int(msg.get("Count")))]

    def _on_queue_abandon(self, msg: Message, at: float) -> list[ev.Event]:
        call = self._call_for(msg, at)
        if call is None:
            return []
        segment = self._segment(call, msg, msg.get("Queue"), at)
        if segment is None or segment.outcome is not None:
            return []
        segment.left_at = at
        segment.position = segment.position or _int(msg.get("OriginalPosition"))
        hold = _float(msg.get("HoldTime"))
        segment.wait_s = at - segment.joined_at if segment.joined_at < at else hold
        if call.caller_hung_up:
            return self._abandoned(call, segment, at)
        # Asterisk says "abandon" for timeouts too; without a hangup request first it was not one.
        call.pending_abandon.append(segment)
        return []

    def _abandoned(self, call: LiveCall, segment: QueueSegment, at: float) -> list[ev.Event]:
        segment.outcome = "abandoned"
        return [
            ev.CallAbandoned(
                self.server, at, call.record.linkedid, segment.queue, segment.wait_s, segment.position
            )
        ]

    def _timed_out(self, call: LiveCall, segment: QueueSegment, status: str, at: float) -> list[ev.Event]:
        segment.outcome = status
        return [
            ev.QueueTimedOut(self.server, at, call.record.linkedid, segment.queue, segment.wait_s, status)
        ]

    # ------------------------------------------------------------------ agents
    def _on_agent_called(self, msg: Message, at: float) -> list[ev.Event]:
        call = self._call_for(msg, at)
        if call is None:
            return []
        queue = msg.get("Queue")
        segment = self._segment(call, msg, queue, at)
        if segment is not None:
            segment.ring_attempts += 1
        dest_uid = msg.get("DestUniqueid", "")
        ringing = Ringing(
            queue, known(msg.get("MemberName")), msg.get("Interface", ""), msg.get("DestChannel", ""), at
        )
        call.ringing[dest_uid] = ringing
        if dest_uid and dest_uid not in self.channels:
            self._add_channel(call, dest_uid, ringing.channel)
        r = call.record
        return [
            ev.AgentRinging(
                self.server,
                at,
                r.linkedid,
                queue,
                ringing.agent,
                ringing.interface,
                ringing.channel,
                r.caller_raw,
                r.caller_e164,
            )
        ]

    def _on_agent_ring_no_answer(self, msg: Message, at: float) -> list[ev.Event]:
        call = self._call_for(msg, at)
        if call is None:
            return []
        segment = self._segment(call, msg, msg.get("Queue"), at)
        if segment is not None:
            segment.ring_no_answer += 1
        call.ringing.pop(msg.get("DestUniqueid", ""), None)
        ring_ms = _float(msg.get("RingTime"))
        return [
            ev.AgentRingStopped(
                self.server,
                at,
                call.record.linkedid,
                msg.get("Queue"),
                known(msg.get("MemberName")),
                msg.get("Interface", ""),
                "no_answer",
                None if ring_ms is None else ring_ms / 1000,
            )
        ]

    def _on_agent_connect(self, msg: Message, at: float) -> list[ev.Event]:
        call = self._call_for(msg, at)
        if call is None:
            return []
        segment = self._segment(call, msg, msg.get("Queue"), at)
        dest_uid = msg.get("DestUniqueid", "")
        call.ringing.pop(dest_uid, None)
        agent, interface = known(msg.get("MemberName")), msg.get("Interface", "")
        wait = _float(msg.get("HoldTime"))
        if segment is not None:
            segment.outcome = "answered"
            segment.agent, segment.interface = agent, interface
            segment.left_at = segment.left_at or at
            if segment.joined_at < at and segment.ring_attempts:
                wait = at - segment.joined_at
            segment.wait_s = wait
            segment.ring_s = _float(msg.get("RingTime"))
        self._mark_answered(call, agent, interface, at)
        return [
            ev.CallAnswered(
                self.server,
                at,
                call.record.linkedid,
                msg.get("Queue"),
                agent,
                interface,
                known(msg.get("DestChannel")),
                wait,
                _float(msg.get("RingTime")),
            )
        ]

    def _mark_answered(self, call: LiveCall, agent: str | None, interface: str, at: float) -> None:
        record = call.record
        if record.answered_at is None or at < record.answered_at:
            record.answered_at = at
        if record.agent is None:
            record.agent, record.agent_interface = agent, interface

    def _completion_due(self, call: LiveCall) -> bool:
        """The queue conversation is over but its AgentComplete has not come yet."""
        if call.pbx_cut or not call.record.segments:
            return False
        last = call.record.segments[-1]
        return last.outcome == "answered" and last.completed_by is None

    def _completing_call(self, msg: Message, at: float) -> LiveCall | None:
        """The call an AgentComplete is about. Asterisk names the caller's channel, or, when that
        channel is already gone, only the agent's (Dest* headers), possibly after both hangups."""
        if "Uniqueid" in msg:
            call = self._call_for(msg, at)
            if call is not None:
                return call
        call = self._call_for(msg, at, "DestUniqueid", create=False)
        if call is not None:
            return call
        for key in ("Linkedid", "DestLinkedid"):
            waiting = self._completing.get(known(msg.get(key)) or "")
            if waiting is not None:
                return waiting
        return None

    def _on_agent_complete(self, msg: Message, at: float) -> list[ev.Event]:
        call = self._completing_call(msg, at)
        if call is None:
            return []
        queue = msg.get("Queue")
        segment = self._segment(call, msg, queue, at)
        agent, interface = known(msg.get("MemberName")), msg.get("Interface", "")
        talk, hold = _float(msg.get("TalkTime")), _float(msg.get("HoldTime"))
        reason = msg.get("Reason", "")
        if segment is not None:
            if segment.outcome != "answered":
                # We missed the AgentConnect (link down meanwhile): Asterisk's own figures fill in.
                segment.outcome, segment.agent, segment.interface, segment.wait_s = (
                    "answered",
                    agent,
                    interface,
                    hold,
                )
                if talk is not None:
                    self._mark_answered(call, agent, interface, at - talk)
                    segment.left_at = segment.left_at or at - talk
            if (
                segment.outcome == "answered"
                and segment.left_at is not None
                and segment.left_at <= at
                and talk is not None
                and not self.untimed
            ):
                # The timestamps are finer than Asterisk's whole-second TalkTime.
                segment.talk_s = round(at - segment.left_at, 3)
            else:
                segment.talk_s = talk
            segment.completed_by = reason
        call.last_complete = (reason, at)
        out: list[ev.Event] = [
            ev.AgentCompleted(self.server, at, call.record.linkedid, queue, agent, interface, reason, talk)
        ]
        if call.awaiting_complete_since is not None and not self._completion_due(call):
            self._completing.pop(call.record.linkedid, None)
            call.awaiting_complete_since = None
            out.extend(self._call_over(call, call.record.ended_at or at))
        return out

    # ------------------------------------------------------------------ bridges and transfers
    def _on_bridge_enter(self, msg: Message, at: float) -> list[ev.Event]:
        channel = self.channels.get(msg.get("Uniqueid", ""))
        if channel is not None:
            channel.bridge = known(msg.get("BridgeUniqueid"))
            channel.bridged = True
            peer = self._peer(channel)
            if peer is not None:
                peer.bridged = True
        return []

    def _on_bridge_leave(self, msg: Message, at: float) -> list[ev.Event]:
        channel = self.channels.get(msg.get("Uniqueid", ""))
        if channel is not None and channel.bridge == known(msg.get("BridgeUniqueid")):
            channel.bridge = None
        return []

    def _bridged_with(self, call: LiveCall, channel: LiveChannel) -> list[LiveChannel]:
        if channel.bridge is None:
            return []
        return [c for c in call.channels.values() if c is not channel and c.bridge == channel.bridge]

    def _device_behind(self, call: LiveCall, channel: LiveChannel, depth: int = 0) -> str:
        """The phone a channel leads to: a Local channel's far half is bridged to it."""
        peer = self._peer(channel)
        if peer is None or depth > 3:
            return device_of(channel.name)
        for other in self._bridged_with(call, peer):
            return self._device_behind(call, other, depth + 1)
        return device_of(channel.name)

    def _transfer_target(self, call: LiveCall, msg: Message) -> str | None:
        """Whom an attended transfer handed the caller to. A transfer keyed on the phone (DTMF
        *2) merges bridges: the event names no target channel, only the bridge the caller is in
        now, where the target (often the Local channel the agent dialled) already sits."""
        target = known(msg.get("TransferTargetChannel"))
        if target:
            # Often a Local channel (the agent dialled 1004, a Local pair rang the phone).
            channel = next((c for c in call.channels.values() if c.name == target), None)
            return self._device_behind(call, channel) if channel is not None else device_of(target)
        bridge = known(msg.get("DestBridgeUniqueid"))
        if bridge is None:
            return None
        parties = {
            msg.get(key)
            for key in ("TransfereeUniqueid", "OrigTransfererUniqueid", "SecondTransfererUniqueid")
        }
        for channel in call.channels.values():
            if channel.bridge == bridge and channel.uniqueid not in parties:
                return self._device_behind(call, channel)
        return None

    def _exclude(self, uid: str | None) -> None:
        channel = self.channels.get(uid or "")
        if channel is not None:
            channel.excluded = True
            peer = self._peer(channel)
            if peer is not None:
                peer.excluded = True

    def _transferring_agent(self, call: LiveCall) -> tuple[str | None, str | None]:
        for segment in reversed(call.record.segments):
            if segment.outcome == "answered":
                return segment.agent, segment.interface
        return None, None

    def _on_blind_transfer(self, msg: Message, at: float) -> list[ev.Event]:
        call = self._call_for(msg, at, "TransfereeUniqueid", create=False)
        if call is None:
            return []
        call.record.transfers += 1
        call.hangup_signal = None
        self._exclude(msg.get("TransfererUniqueid"))
        agent, interface = self._transferring_agent(call)
        target = f"{msg.get('Extension', '')}@{msg.get('Context', '')}"
        return [ev.CallTransferred(self.server, at, call.record.linkedid, "blind", agent, interface, target)]

    def _on_attended_transfer(self, msg: Message, at: float) -> list[ev.Event]:
        if msg.get("Result") != "Success":
            return []
        call = self._call_for(msg, at, "TransfereeUniqueid", create=False)
        if call is None:
            return []
        call.record.transfers += 1
        call.hangup_signal = None
        self._exclude(msg.get("OrigTransfererUniqueid"))
        self._exclude(msg.get("SecondTransfererUniqueid"))
        device = self._transfer_target(call, msg)
        if device:
            call.record.transferred_to.append(device)
        agent, interface = self._transferring_agent(call)
        return [
            ev.CallTransferred(self.server, at, call.record.linkedid, "attended", agent, interface, device)
        ]

    # ------------------------------------------------------------------ hangups
    def _on_hangup_request(self, msg: Message, at: float) -> list[ev.Event]:
        channel = self.channels.get(msg.get("Uniqueid", ""))
        if channel is None:
            return []
        call = channel.call
        if msg.get("Event") == "SoftHangupRequest" and msg.get("Cause") == _SHUTDOWN_CAUSE:
            call.pbx_cut = True
        who = self._who_hangs_up(call, channel, msg.get("Event", ""))
        if who == "caller" and not call.caller_hung_up:
            call.caller_hung_up = True
        if who is not None and call.hangup_signal is None:
            call.hangup_signal = (who, at)
        return []

    def _who_hangs_up(self, call: LiveCall, channel: LiveChannel, event: str) -> HangupBy | None:
        if channel.excluded:
            return None
        uid = channel.uniqueid
        if uid in call.system_uids:
            # Our dialplan's own channel: a soft hangup is the dialplan hanging up; a plain
            # request arriving there first comes from the far end (a trunk's BYE).
            if event == "SoftHangupRequest":
                return "system"
            return "caller" if not channel.name.startswith("Local/") else None
        if self._is_customer_channel(call, uid) or (uid == call.record.linkedid):
            return "caller"
        if channel.bridged:
            return "agent"
        return None

    def _on_hangup(self, msg: Message, at: float) -> list[ev.Event]:
        uid = msg.get("Uniqueid", "")
        # Remembered even when unknown: a resync snapshot taken just before this hangup must
        # not adopt the channel afterwards.
        self._dead[uid] = None
        if len(self._dead) > ENDED_MEMORY:
            self._dead.popitem(last=False)
        channel = self.channels.pop(uid, None)
        if channel is None:
            return []
        call = channel.call
        if call.hangup_signal is None:
            who = self._who_hangs_up(call, channel, "Hangup")
            if who is not None:
                call.hangup_signal = (who, at)
                call.caller_hung_up = call.caller_hung_up or who == "caller"
        if call.record.hangup_cause is None and self._is_customer_channel(call, uid):
            call.record.hangup_cause = _int(msg.get("Cause"))
        call.channels.pop(uid, None)
        if call.channels:
            return []
        return self._call_over(call, at)

    def _call_over(self, call: LiveCall, at: float) -> list[ev.Event]:
        call.record.ended_at = at
        self.calls.pop(call.record.linkedid, None)
        if self.hold_adopted and self._incomplete(call):
            self._hold(call, "events")
            return []
        if self._completion_due(call):
            call.awaiting_complete_since = at
            self._completing[call.record.linkedid] = call
            return []
        if call.originated and not call.originate_resolved and not call.ivr_seen:
            # The OriginateResponse may still be on its way: it carries the outcome.
            call.awaiting_originate_since = at
            self._awaiting[call.record.linkedid] = call
            return []
        return self._finalize(call, at)

    # ------------------------------------------------------------------ originate
    def _find_originated(self, msg: Message) -> LiveCall | None:
        uid = known(msg.get("Uniqueid"))
        if uid is not None and uid in self.channels:
            return self.channels[uid].call
        channel = msg.get("Channel", "")
        candidates = [*self._awaiting.values(), *self.calls.values(), *self._held.values()]
        for call in candidates:
            if (
                call.originated
                and not call.originate_resolved
                and (
                    (uid is not None and uid in call.uids)
                    or call.originate_key == channel
                    or leg_of(channel) in {leg_of(c.name) for c in call.channels.values()}
                )
            ):
                return call
        return None

    def _on_originate_response(self, msg: Message, at: float, hold: bool = True) -> list[ev.Event]:
        reason = _int(msg.get("Reason")) or 0
        outcome = originate_outcome(reason)
        call = self._find_originated(msg)
        out: list[ev.Event] = []
        uid = known(msg.get("Uniqueid"))
        if call is None and uid is None and self.hold_adopted:
            self._orphans.append((at, msg))
            return []
        if call is None and uid is not None:
            if uid in self._dead:
                return []  # its call was recorded when its channels hung up
            if hold:
                # Its Newchannel has not come yet: the same millisecond, another Asterisk thread.
                self._early[uid] = (at, msg)
                while len(self._early) > ENDED_MEMORY:
                    self._early.popitem(last=False)
                return []
        if call is None:
            # Nothing was ever created for it (e.g. an unknown endpoint): record the attempt anyway.
            linkedid = f"originate-{msg.get('ActionID') or at}"
            call, out = self._new_call(linkedid, msg, at)
            call.originated = True
            call.record.direction = "outbound"
            channel = msg.get("Channel", "")
            if not rings_a_device(channel):
                call.record.called = dialed_number(channel) or known(msg.get("Exten"))
            self.calls.pop(linkedid, None)
            call.record.ended_at = at
        call.originate_resolved = True
        call.record.originate_reason = reason
        call.record.originate_action_id = msg.get("ActionID")
        if reason == ORIGINATE_ANSWERED and call.origin_device is None:
            # The callee answered: an outbound call is answered, queue or no queue (decided when
            # the call ends: an Originate that then runs the SVI is the lab's inbound caller).
            call.originate_answered_at = at
        out.append(
            ev.OriginateResult(
                self.server,
                at,
                call.record.linkedid,
                msg.get("ActionID"),
                reason,
                outcome,
                known(msg.get("Channel")),
            )
        )
        if call.record.linkedid in self._held:
            return out  # over, and settled by the recovery from Asterisk's records
        if call.record.linkedid in self._awaiting or call.record.linkedid not in self.calls:
            self._awaiting.pop(call.record.linkedid, None)
            out.extend(self._finalize(call, call.record.ended_at or at))
        return out

    def _on_shutdown(self, msg: Message, at: float) -> list[ev.Event]:
        return self.close_all(at, "pbx_restart")

    # ------------------------------------------------------------------ closing
    def _finalize(self, call: LiveCall, at: float, closed_by: ClosedBy = "events") -> list[ev.Event]:
        record = call.record
        record.ended_at = record.ended_at or at
        record.closed_by = closed_by
        out: list[ev.Event] = []
        for segment in call.pending_abandon:
            out.extend(self._timed_out(call, segment, "timeout", at))
        call.pending_abandon.clear()
        for segment in record.segments:
            if segment.outcome is None:
                segment.left_at = segment.left_at or at
                segment.wait_s = (
                    segment.wait_s if segment.wait_s is not None else segment.left_at - segment.joined_at
                )
                if call.caller_hung_up and closed_by == "events":
                    out.extend(self._abandoned(call, segment, at))
                else:
                    segment.outcome = "unknown"
        settle(call, self.untimed)
        for ringing in call.ringing.values():
            out.append(
                ev.AgentRingStopped(
                    self.server,
                    at,
                    record.linkedid,
                    ringing.queue,
                    ringing.agent,
                    ringing.interface,
                    "caller_left",
                    at - ringing.started,
                )
            )
        call.ringing.clear()
        for uid in list(call.channels):
            self.channels.pop(uid, None)
        self.calls.pop(record.linkedid, None)
        self._remember_ended(record.linkedid)
        out.append(ev.CallEnded(self.server, record.ended_at or at, record.linkedid, record))
        return out

    def _remember_ended(self, linkedid: str) -> None:
        self._ended[linkedid] = None
        if len(self._ended) > ENDED_MEMORY:
            self._ended.popitem(last=False)

    def close_all(self, at: float, closed_by: ClosedBy) -> list[ev.Event]:
        """Close every open call (PBX shutdown, daemon shutdown)."""
        out: list[ev.Event] = []
        for call in list(self.calls.values()):
            if closed_by == "pbx_restart":
                call.pbx_cut = True
            out.extend(self._finalize(call, at, closed_by))
        out.extend(self.flush())
        return out

    # ------------------------------------------------------------------ resynchronisation
    def resync(
        self,
        channels: Iterable[Message],
        queue_status: Iterable[Message],
        at: float,
        queue_log: Iterable[QueueLogEntry] = (),
        snapshot_at: float | None = None,
        closed_by: ClosedBy = "resync",
    ) -> list[ev.Event]:
        """Rebuild live state after a (re)connect.

        `channels` are CoreShowChannel events, `queue_status` the QueueStatus list (QueueParams,
        QueueMember, QueueEntry). Calls still alive are kept (or adopted when new to us); calls
        we knew whose channels are all gone ended while we were away: they are closed, with their
        true outcome when Asterisk's queue_log tells it, and marked as such. `snapshot_at` is the
        last event time seen when the snapshot was requested (events may race with it).
        """
        out: list[ev.Event] = []
        alive: dict[str, Message] = {m["Uniqueid"]: m for m in channels if "Uniqueid" in m}
        entries = list(queue_log)
        # Channels created after the snapshot was asked for are legitimately absent from it.
        cutoff = snapshot_at if snapshot_at is not None else float("inf")
        for call in list(self.calls.values()):
            for uid in [u for u, c in call.channels.items() if u not in alive and c.seen_at <= cutoff]:
                call.channels.pop(uid, None)
                self.channels.pop(uid, None)
        for uid, m in alive.items():
            if uid not in self.channels and uid not in self._dead:
                out.extend(self._adopt_channel(m, at))
        for m in queue_status:
            out.extend(self._adopt_queue_status(m, at))
        out.extend(self.apply_queue_log(entries))
        for call in list(self.calls.values()):
            if not call.channels:
                ended = call.record.ended_at or call.queue_log_end or at
                how: ClosedBy = "queue_log" if call.queue_log_uids else closed_by
                if self.hold_adopted and closed_by == "resync":
                    # Over while the daemon was away or cut off: when and how it ended is in
                    # Asterisk's records, not here (its end would be this resync's time, an
                    # Originate's outcome unknown, an abandon seen from queue_log alone).
                    self.calls.pop(call.record.linkedid, None)
                    call.record.ended_at = ended
                    self._hold(call, how)
                    continue
                out.extend(self._finalize(call, ended, how))
        return out

    def _adopt_channel(self, m: Message, at: float) -> list[ev.Event]:
        linkedid = known(m.get("Linkedid")) or m["Uniqueid"]
        out: list[ev.Event] = []
        call = self.calls.get(linkedid)
        if call is None:
            duration = _duration(m.get("Duration"))
            call, out = self._new_call(linkedid, m, at - duration if duration else at)
            call.record.closed_by = "resync"
        channel = self._add_channel(call, m["Uniqueid"], m.get("Channel", ""))
        # An adopted call, or one restored from the database (stored in progress at a clean
        # stop, another node's included) whose Originate has no answer yet: its response, still
        # to come, must find it by the dialled leg, not make a second record of the attempt
        # (`originate-<ActionID>`, seen in tests/test_ha_takeover.py after a hand-over).
        if call.record.closed_by == "resync" or (call.originated and not call.originate_resolved):
            self._adopt_origin(call, channel, m.get("ChannelState"))
        channel.bridged = bool(known(m.get("BridgeId")))
        if m.get("Application") == "Queue" and channel.bridged and not call.record.answered_at:
            # In conversation through a queue: answered while we were away; AgentComplete will
            # bring Asterisk's own wait and talk times.
            call.system_uids.add(m["Uniqueid"])
        return out

    def _adopt_queue_status(self, m: Message, at: float) -> list[ev.Event]:
        name = m.get("Event")
        if name == "QueueMember":
            return self._members.changed(m, at)
        if name != "QueueEntry":
            return []
        call = self._call_for(m, at)
        if call is None:
            return []
        uid = m.get("Uniqueid", "")
        call.system_uids.add(uid)
        if uid in call.open_segments:
            return []
        queue = m.get("Queue", "")
        restored = next(
            (
                s
                for s in reversed(call.record.segments)
                if s.queue == queue and s.outcome is None and s.left_at is None
            ),
            None,
        )
        if restored is not None:
            # A call restored after a daemon restart, still waiting where it was: the same stay.
            call.open_segments[uid] = restored
            return []
        wait = _float(m.get("Wait")) or 0.0
        segment = QueueSegment(queue=queue, joined_at=at - wait, position=_int(m.get("Position")))
        call.record.segments.append(segment)
        call.open_segments[uid] = segment
        return [ev.QueueJoined(self.server, at, call.record.linkedid, queue, segment.position, None)]

    def forget_all(self) -> None:
        """Drop every call, channel and agent this tracker knows, emitting nothing: the daemon
        no longer owns the server's stream (calls/ownership.py), another daemon records them now,
        and a later takeover starts from the database, as a restart does."""
        for held in (self.calls, self.channels, self._ended, self._dead, self._awaiting, self._completing):
            held.clear()
        self._early.clear()
        self._held.clear()
        self._orphans.clear()
        self.members.clear()
        self.hold_adopted = False
        self._pbx_clock = values.AsteriskClock()
        self._last_at = 0.0

    def restore(self, records: Iterable[CallRecord]) -> None:
        """Take back the calls that were open when the daemon last stopped (persisted with
        `closed_by="shutdown"`). They have no channels yet: the resync that follows the first
        connect either adopts their live channels into them (keeping the IVR path, segments and
        start time seen before the restart) or closes them as ended while we were down."""
        for record in records:
            if record.linkedid in self.calls:
                continue
            record.closed_by = "events"
            record.ended_at = None
            call = LiveCall(record=record, ivr_seen=bool(record.ivr_path), crossed_gap=True)
            call.originated = record.direction == "outbound"
            call.originate_resolved = record.originate_reason is not None
            self.calls[record.linkedid] = call

    def gap_began(self) -> None:
        """The AMI link dropped: what the calls open now do until it is back is unseen."""
        for call in self.calls.values():
            call.crossed_gap = True

    def apply_queue_log(self, entries: Iterable[QueueLogEntry]) -> list[ev.Event]:
        """Fill in what the link missed from Asterisk's queue_log (CONNECT, COMPLETE*, ABANDON, EXIT*)."""
        out: list[ev.Event] = []
        for entry in entries:
            channel = self.channels.get(entry.callid)
            call = channel.call if channel else self._call_by_queue_uid(entry.callid)
            if call is None:
                continue
            call.queue_log_uids.add(entry.callid)
            out.extend(self._apply_entry(call, entry))
        return out

    def close_recovered(
        self,
        record: CallRecord,
        queue_log: Iterable[QueueLogEntry],
        *,
        originated: bool = False,
        originate_answered_at: float | None = None,
        hangup: tuple[HangupBy, float] | None = None,
        closed_by: ClosedBy = "cel",
    ) -> list[ev.Event]:
        """Close a call this tracker never saw (it began and ended while the daemon was away),
        rebuilt from Asterisk's own records (calls/gap.py: start, end, caller, IVR path from CEL):
        its queue stays come from queue_log, then it is settled as any call, so its outcome, wait
        and talk time and who hung up mean what a live call's do."""
        call = LiveCall(record=record, ivr_seen=bool(record.ivr_path), originated=originated)
        call.originate_resolved = originated
        call.originate_answered_at = originate_answered_at
        call.hangup_signal = hangup
        call.caller_hung_up = hangup is not None and hangup[0] == "caller"
        for entry in queue_log:
            call.queue_log_uids.add(entry.callid)
            self._apply_entry(call, entry)
        return self._finalize(call, record.ended_at or record.started_at, closed_by)

    def complete_adopted(
        self,
        earlier: CallRecord,
        *,
        originated: bool,
        originate_answered_at: float | None,
        dialplan_uids: Iterable[str] = (),
    ) -> bool:
        """A call a resync adopted (in progress when the daemon came back) gets what the resync
        could not see, from Asterisk's records of its beginning (calls/recovery.py): its start,
        caller, direction and IVR steps, and for an Originate the number called and its answer
        (the OriginateResponse went to a daemon that is no more). Of a call followed live, what
        an Originate whose DialBegin or response went during a cut lacks. False if nothing
        changed."""
        # A held call (adopted, then over before the pass read its records) is completed too:
        # its end may not be in the records yet (they lag the AMI events), its beginning is.
        call = self.calls.get(earlier.linkedid) or self._held.get(earlier.linkedid)
        if call is None:
            return False
        if call.record.closed_by != "resync":
            gap = call.crossed_gap and self._from_the_gap(call, earlier, dialplan_uids)
            call.crossed_gap = False
            return self._originate_from_records(call, earlier, originated, originate_answered_at) or gap
        record = call.record
        # Asterisk's records saw it begin; an adoption only estimates it (now - Duration).
        record.started_at = earlier.started_at
        # The channels that ran the dialplan's steps before the cut are the system's side: who
        # hangs up from there is not the caller.
        call.system_uids.update(uid for uid in dialplan_uids if uid in call.uids)
        first_seen = record.ivr_path[0].at if record.ivr_path else float("inf")
        record.ivr_path[:0] = [step for step in earlier.ivr_path if step.at < first_seen]
        call.ivr_seen = call.ivr_seen or bool(earlier.ivr_path)
        if record.caller_raw is None:
            record.caller_raw, record.caller_e164 = earlier.caller_raw, earlier.caller_e164
        record.caller_name = record.caller_name or earlier.caller_name
        if record.direction == "inbound" and not call.ivr_seen:
            record.direction = earlier.direction
        record.campaign, record.contact = (
            record.campaign or earlier.campaign,
            record.contact or earlier.contact,
        )
        if originated and not call.ivr_seen:
            call.originated = True
            record.called = record.called or earlier.called
            if originate_answered_at is not None and record.originate_reason is None:
                call.originate_resolved, call.originate_answered_at = True, originate_answered_at
                record.originate_reason = ORIGINATE_ANSWERED
        return True

    def _from_the_gap(self, call: LiveCall, earlier: CallRecord, dialplan_uids: Iterable[str]) -> bool:
        """A call known from before a gap and still on: the IVR steps it took while the daemon
        was away (cut off, or stopped), from Asterisk's records, and what they make of it, as
        live steps would: an SVI call (the lab's customers are Originates of `Local/s@ivr`, an
        Originate until their first step: stored `outbound_answered` without them, seen in
        tests/test_ha_takeover.py). Steps seen live are not taken twice."""
        record = call.record
        missed = _not_seen(earlier.ivr_path, record.ivr_path)
        if missed:
            record.ivr_path = sorted([*record.ivr_path, *missed], key=lambda step: step.at)
            call.ivr_seen = True
            record.direction = "inbound"
            call.system_uids.update(uid for uid in dialplan_uids if uid in call.uids)
        changed = bool(missed)
        if earlier.campaign and not record.campaign:  # its DialerConnected went in the gap
            record.campaign, record.contact = earlier.campaign, record.contact or earlier.contact
            changed = True
        return changed

    def follows(self, linkedid: str) -> bool:
        """The call is open here: in progress, or held for the recovery."""
        return linkedid in self.calls or linkedid in self._held

    def _hold(self, call: LiveCall, how: ClosedBy) -> None:
        call.held_as = how
        self._held[call.record.linkedid] = call
        self._remember_ended(call.record.linkedid)

    def incomplete(self) -> list[str]:
        """Live calls Asterisk's records can complete (`complete_adopted`): adopted ones (their
        beginning unseen), and Originates with no response yet (it, and even their DialBegin,
        may have gone while the link was cut)."""
        return [linkedid for linkedid, call in self.calls.items() if self._incomplete(call)]

    def _incomplete(self, call: LiveCall) -> bool:
        if call.record.closed_by == "resync" or call.crossed_gap:
            return True
        return (call.originated or call.local_origin) and not call.originate_resolved

    def _originate_from_records(
        self, call: LiveCall, earlier: CallRecord, originated: bool, answered_at: float | None
    ) -> bool:
        """A call followed live whose Originate's DialBegin or response went during a cut: what
        the records say of it (answered, or still ringing; unanswered, it would be over and
        recorded from them whole)."""
        if not originated or call.originate_resolved or call.ivr_seen or earlier.ivr_path:
            return False
        call.originated = True
        record = call.record
        record.direction = "outbound"
        record.called = record.called or earlier.called
        record.campaign = record.campaign or earlier.campaign
        record.contact = record.contact or earlier.contact
        if answered_at is not None:
            call.originate_resolved, call.originate_answered_at = True, answered_at
            record.originate_reason = ORIGINATE_ANSWERED
        return True

    def held(self) -> list[str]:
        """The calls held while `hold_adopted` was on, oldest first: adopted ones that ended,
        and those the resync found over (their end unseen)."""
        return list(self._held)

    def held_record(self, linkedid: str) -> CallRecord | None:
        call = self._held.get(linkedid)
        return None if call is None else call.record

    def settle_held(self, linkedid: str) -> list[ev.Event]:
        """Close a held call as seen here (its records could not be read)."""
        call = self._held.pop(linkedid, None)
        if call is None:
            return []
        return self._finalize(call, call.record.ended_at or self._last_at, call.held_as)

    def orphans(self) -> list[tuple[float, Message]]:
        """The OriginateResponses parked while `hold_adopted` was on (taken: the list empties)."""
        found, self._orphans = self._orphans, []
        return found

    def settle_orphan(self, at: float, msg: Message) -> list[ev.Event]:
        """An orphan response no recovered call explains: the attempt is recorded on its own."""
        return self._on_originate_response(msg, at, hold=False)

    def forget_held(self, linkedid: str) -> None:
        """A held call recorded from Asterisk's records instead (calls/recovery.py)."""
        self._held.pop(linkedid, None)

    def _call_by_queue_uid(self, uid: str) -> LiveCall | None:
        call = self.calls.get(uid)
        if call is not None:
            return call
        for call in self.calls.values():
            if uid in call.system_uids or uid in call.open_segments:
                return call
        return None

    def _apply_entry(self, call: LiveCall, e: QueueLogEntry) -> list[ev.Event]:
        segment = next((s for s in reversed(call.record.segments) if s.queue == e.queue), None)
        if segment is None:
            if e.verb != "ENTERQUEUE":
                segment = QueueSegment(queue=e.queue, joined_at=e.at)
                call.record.segments.append(segment)
            else:
                call.record.segments.append(QueueSegment(queue=e.queue, joined_at=e.at))
                return []
        if e.verb == "CONNECT":
            segment.outcome, segment.agent = "answered", e.agent
            segment.wait_s = _float(e.data(0))
            segment.ring_s = _float(e.data(2))
            segment.left_at = e.at
            self._mark_answered(call, e.agent, call.record.agent_interface or "", e.at)
        elif e.verb in ("COMPLETECALLER", "COMPLETEAGENT"):
            segment.talk_s = _float(e.data(1))
            segment.completed_by = "caller" if e.verb == "COMPLETECALLER" else "agent"
            call.last_complete = (segment.completed_by, e.at)
            call.queue_log_end = max(call.queue_log_end or e.at, e.at)
        elif e.verb in ("ABANDON", "EXITWITHTIMEOUT", "EXITEMPTY") and segment.outcome in (None, "unknown"):
            segment.left_at = e.at
            segment.wait_s = _float(e.data(2))
            segment.outcome = {
                "ABANDON": "abandoned",
                "EXITWITHTIMEOUT": "timeout",
                "EXITEMPTY": "leaveempty",
            }[e.verb]
            call.caller_hung_up = call.caller_hung_up or e.verb == "ABANDON"
            call.queue_log_end = max(call.queue_log_end or e.at, e.at)
        elif e.verb in ("BLINDTRANSFER", "ATTENDEDTRANSFER"):
            segment.completed_by = "transfer"
        return []


def _not_seen(recorded: list[IvrStep], seen: list[IvrStep]) -> list[IvrStep]:
    """The steps of the records not among those seen live, each seen step standing for one
    recorded step only (a caller who keys the same wrong digit twice within the window made
    two steps)."""
    unmatched = list(seen)
    missed = []
    for step in recorded:
        match = next((s for s in unmatched if _same_step(step, s)), None)
        if match is None:
            missed.append(step)
        else:
            unmatched.remove(match)
    return missed


def _same_step(a: IvrStep, b: IvrStep) -> bool:
    """One IVR step, seen live and in the records: CEL's row and the AMI event are stamped a
    moment apart."""
    return (a.menu, a.kind, a.value) == (b.menu, b.kind, b.value) and abs(a.at - b.at) < SAME_STEP_S


def _duration(value: str | None) -> float | None:
    """CoreShowChannel's `Duration: HH:MM:SS`."""
    if not value:
        return None
    try:
        h, m, s = (int(p) for p in value.split(":"))
    except ValueError:
        return None
    return float(h * 3600 + m * 60 + s)
