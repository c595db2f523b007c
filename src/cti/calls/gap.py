"""Calls that began and ended while the daemon was away, rebuilt from Asterisk's own records.

Asterisk writes one CEL row per channel event (cel.conf, cel_pgsql) and one queue_log row per
queue step (the realtime queue_log) to PostgreSQL (asterisk-conf/postgresql-tables.sql). After a
restart or a reconnect the daemon reads the rows of every call that ended in the gap and that it
never knew (calls/cel_source.py), and this module turns one call's rows into what the tracker
needs to close it as any other call (`CallTracker.close_recovered`): the record's start and end,
caller, direction, IVR path, campaign, and who hung up, from CEL; its queue stays (outcome,
agent, wait, ring and talk times) from queue_log. Pure: rows in, facts out; no I/O.

What each CEL row gives, as Asterisk 22 writes them (seen on the real-PBX tier):

- `CHAN_START` / `CHAN_END`: a channel's life; the first channel of a call has
  `uniqueid == linkedid` and the caller's number (`cid_num`); `LINKEDID_END`: the call's last
  channel is gone (its end).
- `ANSWER`; `BRIDGE_ENTER` / `BRIDGE_EXIT` (`extra`: `{"bridge_id": ...}`).
- `HANGUP` (`extra`: `{"hangupcause": 16, "hangupsource": "PJSIP/trunk-00000001",
  "dialstatus": "ANSWER"}`): who started the end of the call (a channel's name, or
  `dialplan/builtin` when the dialplan hung up).
- `APP_START` of `UserEvent` (cel.conf `apps = userevent`): `appdata` is the UserEvent's data,
  `IVR,Menu: main,Choice: 1`: the dialplans' contract with cti (docs/asterisk.md); a site's
  `CELGenUserEvent(IVR,Menu: main,Choice: 1)` (`USER_DEFINED`) is read the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cti.calls.channels import campaign_of_account, device_of, dialed_number, leg_of
from cti.calls.ivr import IvrVocabulary
from cti.calls.queue_log import QueueLogEntry
from cti.calls.records import CallRecord, Direction, HangupBy, IvrStep, QueueSegment
from cti.directory.numbers import normalize

DIALPLAN_HANGUP = "dialplan/builtin"  # hangupsource when the dialplan itself hung up
_UNKNOWN = frozenset({"", "<unknown>", "<null>", "unknown"})
# QueueExit statuses of a caller refused at the door: app_queue writes no queue_log line for them.
_REFUSED = frozenset({"JOINEMPTY", "FULL", "JOINUNAVAIL"})
ANSWERED = 4  # OriginateResponse's Reason for an answered call (channels.ORIGINATE_REASONS)
# An originated call nobody answered: its OriginateResponse Reason, from what the dial said
# (the HANGUP's dialstatus), else from the hangup causes (Q.850) of its channels.
_DIALSTATUS_REASON = {"BUSY": 5, "NOANSWER": 3, "CONGESTION": 8, "CHANUNAVAIL": 0, "CANCEL": 1}
_CAUSE_REASON = (({17}, 5), ({34, 38, 41, 42, 44}, 8), ({18, 19}, 3), ({21}, 1))
# queue_log verbs about a caller's stay (member-level lines, ADDMEMBER, PAUSE..., name the
# channel that ran AddQueueMember as their callid in Asterisk 22: they are no call's facts).
QUEUE_CALL_VERBS = frozenset(
    {
        "ENTERQUEUE", "CONNECT", "COMPLETECALLER", "COMPLETEAGENT", "ABANDON", "EXITWITHTIMEOUT",
        "EXITEMPTY", "EXITWITHKEY", "BLINDTRANSFER", "ATTENDEDTRANSFER", "RINGNOANSWER",
        "RINGCANCELED", "TRANSFER",
    }
)  # fmt: skip
_CHANNEL_EVENTS = frozenset(
    {"CHAN_START", "CHAN_END", "ANSWER", "HANGUP", "APP_START", "APP_END", "BRIDGE_ENTER", "BRIDGE_EXIT"}
)


@dataclass(frozen=True, slots=True)
class CelRow:
    """One row of the `cel` table (the columns cel_pgsql fills), times in epoch seconds."""

    at: float
    event: str  # eventtype: CHAN_START, ANSWER, HANGUP, APP_START, USER_DEFINED...
    uniqueid: str
    linkedid: str
    channel: str = ""  # channame
    context: str = ""
    exten: str = ""
    cid_num: str = ""
    cid_name: str = ""
    app: str = ""  # appname
    appdata: str = ""
    accountcode: str = ""
    peer: str = ""
    extra: str = ""  # JSON text
    userdeftype: str = ""
    seq: int = 0  # the row's id: Asterisk's own order within a microsecond

    def extra_json(self) -> dict[str, Any]:
        try:
            value = json.loads(self.extra) if self.extra else {}
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class RebuildRules:
    """What the live tracker is told too (settings): the same words, the same region."""

    server: str
    region: str = "FR"
    ivr: IvrVocabulary = field(default_factory=IvrVocabulary)
    internal_contexts: frozenset[str] = frozenset({"cti-agents", "cti-agent-features"})


@dataclass
class RecoveredCall:
    """A call rebuilt from its rows: the record so far (no queue stays yet) and what
    `CallTracker.close_recovered` settles it with."""

    record: CallRecord
    queue_log: list[QueueLogEntry]
    originated: bool = False
    originate_answered_at: float | None = None
    hangup: tuple[HangupBy, float] | None = None
    # Channels that ran our dialplans' steps (UserEvent, Queue): the system's side of the call.
    dialplan_uids: frozenset[str] = frozenset()


def user_event(data: str) -> tuple[str, dict[str, str]]:
    """`UserEvent`'s data, `Name,Header: value,...`, as app_userevent sends it: the name and its
    headers (each argument after the name is one `Header: value` line)."""
    name, *lines = data.split(",")
    headers: dict[str, str] = {}
    for line in lines:
        key, sep, value = line.partition(":")
        if sep and key.strip():
            headers.setdefault(key.strip(), value.strip())
    return name.strip(), headers


def _user_events(rows: Iterable[CelRow]) -> list[tuple[float, str, dict[str, str]]]:
    """(time, name, headers) of the dialplans' UserEvent()s and CELGenUserEvent()s."""
    found = []
    for row in rows:
        if row.event == "APP_START" and row.app.lower() == "userevent":
            name, headers = user_event(row.appdata)
        elif row.event == "USER_DEFINED" or (row.userdeftype and row.event not in _CHANNEL_EVENTS):
            extra = row.extra_json().get("extra")
            text = extra if isinstance(extra, str) else ""
            name, headers = row.userdeftype or row.event, user_event("," + text)[1]
        else:
            continue
        found.append((row.at, name, headers))
    return found


def ended_at(rows: Sequence[CelRow]) -> float | None:
    """When the call was over: its LINKEDID_END, else the last CHAN_END once every channel that
    started has ended; None while a channel is still up."""
    for row in rows:
        if row.event == "LINKEDID_END":
            return row.at
    started = {r.uniqueid for r in rows if r.event == "CHAN_START"}
    ends = {r.uniqueid: r.at for r in rows if r.event == "CHAN_END"}
    if not started or not started <= set(ends):
        return None
    return max(ends.values())


def _known(value: str | None) -> str | None:
    return None if value is None or value.strip() in _UNKNOWN else value


def _ordered(rows: Iterable[CelRow]) -> list[CelRow]:
    return sorted(rows, key=lambda r: (r.at, r.seq))


def rebuild(
    linkedid: str,
    rows: Iterable[CelRow],
    queue_log: Iterable[QueueLogEntry],
    rules: RebuildRules,
    finished: bool = True,
) -> RecoveredCall | None:
    """The call `linkedid` from its CEL rows and the queue_log rows of its channels; None when
    the rows show nothing, or (`finished`) do not show it over (a channel still up). With
    `finished=False`, a call still in progress: how it began (its end unknown)."""
    cel = _ordered(rows)
    end = ended_at(cel)
    if not cel or (finished and end is None):
        return None
    starts = [r for r in cel if r.event == "CHAN_START"]
    first = next((r for r in starts if r.uniqueid == linkedid), starts[0] if starts else cel[0])
    record = CallRecord(
        server=rules.server,
        linkedid=linkedid,
        direction="inbound",
        started_at=starts[0].at if starts else cel[0].at,
        ended_at=end,
    )
    names = {r.uniqueid: r.channel for r in cel if r.channel}
    # An Originate's first channel is the dialled half of a Local pair: nothing else starts a
    # call on one (a Local channel a dialplan dials has its caller's Linkedid).
    originated = first.channel.startswith("Local/") and first.channel.endswith(";1")
    _caller(record, [r for r in cel if r.uniqueid == first.uniqueid], rules.region)
    ivr_seen, connected = _user_event_facts(record, cel, rules)
    record.direction = _direction(first, originated, ivr_seen, connected, rules)
    record.campaign = record.campaign or next(
        (c for c in (campaign_of_account(r.accountcode) for r in cel) if c), None
    )
    record.transfers = sum(1 for r in cel if r.event in ("BLINDTRANSFER", "ATTENDEDTRANSFER"))
    uids = {r.uniqueid for r in cel}
    entries = sorted(
        (e for e in queue_log if e.callid in uids and e.verb in QUEUE_CALL_VERBS), key=lambda e: e.at
    )
    record.agent_interface = _agent_device(entries, names)
    dialplan = {r.uniqueid for r in cel if r.event == "APP_START" and r.app.lower() in ("userevent", "queue")}
    call = RecoveredCall(record, entries, originated=originated, dialplan_uids=frozenset(dialplan))
    if originated:
        record.called = dialed_number(device_of(first.channel))
        answer = next((r.at for r in cel if r.event == "ANSWER" and r.uniqueid == first.uniqueid), None)
        call.originate_answered_at = answer
        record.originate_reason = ANSWERED if answer is not None else _unanswered_reason(cel)
    customers = _customer_channels(cel, first, originated, _dialplan_channels(cel))
    call.hangup = _first_hangup(cel, customers, names)
    if call.hangup is None and any(e.verb == "ABANDON" for e in entries):
        call.hangup = ("caller", next(e.at for e in entries if e.verb == "ABANDON"))
    record.hangup_cause = _hangup_cause(cel, customers)
    return call


def _caller(record: CallRecord, rows: Sequence[CelRow], region: str) -> None:
    """The caller ID of the call's first channel, as it last stood (a lookup may name it)."""
    number = next((n for n in (_known(r.cid_num) for r in reversed(rows)) if n), None)
    name = next((n for n in (_known(r.cid_name) for r in reversed(rows)) if n), None)
    if number is not None:
        record.caller_raw = number
        record.caller_e164 = normalize(number, region).e164
    record.caller_name = name


def _user_event_facts(record: CallRecord, cel: Sequence[CelRow], rules: RebuildRules) -> tuple[bool, bool]:
    """The IVR path, the dialer's DialerConnected and the queue refusals (QueueExit); returns
    whether the call ran the IVR and whether it was a campaign call put through."""
    ivr_seen = connected = False
    for at, name, headers in _user_events(cel):
        if name == rules.ivr.event:
            ivr_seen = True
            kind, value = rules.ivr.classify(headers)
            record.ivr_path.append(IvrStep(at, rules.ivr.menu(headers), kind, value))
        elif name == "DialerConnected":
            connected = True
            record.campaign = _known(headers.get("Campaign")) or record.campaign
            record.contact = _known(headers.get("Contact"))
        elif name == "QueueExit" and headers.get("Status", "").upper() in _REFUSED:
            # Refused at the door: never joined, so app_queue logged nothing (the tracker's
            # `_queue_exit` does the same from the live event).
            status = headers["Status"].lower()
            queue = headers.get("Queue", "")
            record.segments.append(
                QueueSegment(queue=queue, joined_at=at, left_at=at, outcome=status, wait_s=0.0)
            )
    return ivr_seen, connected


def _direction(
    first: CelRow, originated: bool, ivr_seen: bool, connected: bool, rules: RebuildRules
) -> Direction:
    # The tracker's order: the first channel's context, then an Originate, the IVR, the dialer.
    direction: Direction = "internal" if first.context in rules.internal_contexts else "inbound"
    if originated and not ivr_seen:
        direction = "outbound"
    if ivr_seen:
        direction = "inbound"
    if connected:
        direction = "outbound"
    return direction


def _agent_device(entries: Sequence[QueueLogEntry], names: Mapping[str, str]) -> str | None:
    """The device of the first agent who answered: CONNECT's second field is the uniqueid of the
    member's channel (`PJSIP/1001-00000002` → `PJSIP/1001`)."""
    for entry in entries:
        if entry.verb == "CONNECT":
            channel = names.get(entry.data(1) or "")
            return device_of(channel) if channel else None
    return None


def _unanswered_reason(cel: Sequence[CelRow]) -> int:
    hangups = [r.extra_json() for r in cel if r.event == "HANGUP"]
    for extra in hangups:
        reason = _DIALSTATUS_REASON.get(str(extra.get("dialstatus") or "").upper())
        if reason is not None:
            return reason
    causes = {c for c in (extra.get("hangupcause") for extra in hangups) if isinstance(c, int)}
    for known, reason in _CAUSE_REASON:
        if causes & known:
            return reason
    return 0


def _bridges(cel: Sequence[CelRow]) -> dict[str, set[str]]:
    """Channel name → the bridges it was ever in."""
    found: dict[str, set[str]] = {}
    for row in cel:
        if row.event == "BRIDGE_ENTER":
            bridge = row.extra_json().get("bridge_id")
            if isinstance(bridge, str) and bridge:
                found.setdefault(row.channel, set()).add(bridge)
    return found


def _dialplan_channels(cel: Sequence[CelRow]) -> set[str]:
    """Channels that ran our dialplans' steps (UserEvents, Queue): the system's side."""
    return {r.channel for r in cel if r.event == "APP_START" and r.app.lower() in ("userevent", "queue")}


def _customer_channels(
    cel: Sequence[CelRow], first: CelRow, originated: bool, dialplan: set[str]
) -> set[str]:
    """The caller's side, as the tracker sees it: the call's first channel; for an Originate, also
    the far half of its Local pair and, when that half runs no dialplan of ours, what it was
    bridged with (the trunk leg it dialled). A Local half that ran our dialplan is the system's
    (the lab's callers are Originates whose `;1` plays the customer and whose `;2` runs the SVI)."""
    customers = {first.channel}
    if originated:
        far = leg_of(first.channel) + ";2"
        customers.add(far)
        if far not in dialplan:
            bridges = _bridges(cel)
            joined = bridges.get(far, set())
            customers |= {name for name, seen in bridges.items() if seen & joined}
    return {c for c in customers if not (c.startswith("Local/") and c in dialplan)}


def _first_hangup(
    cel: Sequence[CelRow], customers: set[str], names: Mapping[str, str]
) -> tuple[HangupBy, float] | None:
    """Who started the end of the call, from the first HANGUP that names its source: the
    dialplan, the caller's side, or an agent (a channel that was bridged, or the far half of one)."""
    bridged = set(_bridges(cel))
    channels = set(names.values())
    for row in cel:
        if row.event != "HANGUP":
            continue
        source = str(row.extra_json().get("hangupsource") or "")
        if not source:
            continue
        if source == DIALPLAN_HANGUP:
            return "system", row.at
        if source in customers:
            return "caller", row.at
        if source in channels:
            peer = leg_of(source) + (";1" if source.endswith(";2") else ";2")
            return ("agent" if source in bridged or peer in bridged else "system"), row.at
    return None


def _hangup_cause(cel: Sequence[CelRow], customers: set[str]) -> int | None:
    for row in cel:
        if row.event == "HANGUP" and row.channel in customers:
            cause = row.extra_json().get("hangupcause")
            if isinstance(cause, int):
                return cause
    return None
