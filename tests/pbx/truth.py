"""Asterisk's own account of the tier's calls (queue_log, CDR), to check cti's against."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cti.calls.queue_log import parse_lines


@dataclass
class QueueCall:
    """One caller's visits to the queues, as app_queue logged them (callid = caller's uniqueid)."""

    callid: str
    queues: list[str] = field(default_factory=list)
    outcome: str | None = None  # answered / abandoned / timeout / empty / transferred
    agent: str | None = None
    wait_s: int | None = None
    talk_s: int | None = None
    ring_s: int | None = None
    completed_by: str | None = None  # caller / agent
    ringnoanswer: list[str] = field(default_factory=list)  # agents whose phone rang out
    verbs: list[str] = field(default_factory=list)


def queue_calls(path: Path) -> dict[str, QueueCall]:
    calls: dict[str, QueueCall] = {}
    if not path.is_file():
        return calls
    for entry in parse_lines(path.read_text(errors="replace").splitlines()):
        call = calls.setdefault(entry.callid, QueueCall(entry.callid))
        call.verbs.append(entry.verb)
        data = entry.data
        if entry.verb == "ENTERQUEUE":
            call.queues.append(entry.queue)
        elif entry.verb == "CONNECT":
            call.outcome, call.agent = "answered", call.agent or entry.agent
            call.wait_s, call.ring_s = _int(data(0)), _int(data(2))
        elif entry.verb in ("COMPLETECALLER", "COMPLETEAGENT"):
            call.talk_s = (call.talk_s or 0) + (_int(data(1)) or 0)
            call.completed_by = "caller" if entry.verb == "COMPLETECALLER" else "agent"
        elif entry.verb in ("BLINDTRANSFER", "ATTENDEDTRANSFER"):
            call.talk_s = (call.talk_s or 0) + (
                _int(data(4) if entry.verb == "BLINDTRANSFER" else data(5)) or 0
            )
            call.completed_by = "transfer"
        elif entry.verb == "ABANDON":
            call.outcome, call.wait_s = "abandoned", _int(data(2))
        elif entry.verb == "EXITWITHTIMEOUT":
            call.outcome, call.wait_s = "timeout", _int(data(2))
        elif entry.verb in ("EXITEMPTY", "EXITWITHKEY"):
            call.outcome = "empty"
        elif entry.verb == "RINGNOANSWER" and entry.agent:
            call.ringnoanswer.append(entry.agent)
    return calls


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


MEMBER_VERBS = frozenset({"ADDMEMBER", "REMOVEMEMBER", "PAUSE", "UNPAUSE", "PAUSEALL", "UNPAUSEALL"})


def member_events(path: Path) -> list[tuple[str, str, str, tuple[str, ...]]]:
    """(queue, agent, verb, data) of member lines: ADDMEMBER, REMOVEMEMBER, PAUSE, UNPAUSE…
    (ADDMEMBER's callid is the channel that ran AddQueueMember, the others' NONE)."""
    found: list[tuple[str, str, str, tuple[str, ...]]] = []
    if not path.is_file():
        return found
    for line in path.read_text(errors="replace").splitlines():
        parts = line.split("|")
        if len(parts) >= 5 and parts[4] in MEMBER_VERBS:
            found.append((parts[2], parts[3], parts[4], tuple(parts[5:])))
    return found


def close(a: float | None, b: float | None, within: float = 1.01) -> bool:
    """Equal within Asterisk's whole-second rounding of queue_log durations."""
    return a is not None and b is not None and abs(a - b) <= within


def cdr_for(rows: list[dict[str, str]], linkedid: str) -> list[dict[str, str]]:
    return [row for row in rows if row.get("linkedid") == linkedid]


def cdr_time(value: str) -> float:
    """A CDR time (cdr.conf [csv] usegmtime = yes: UTC, whole seconds) as epoch seconds."""
    return datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()


def epoch(value: Any) -> float:
    """A stored call's time (datetime from the database, or epoch seconds) as epoch seconds."""
    return float(value.timestamp()) if hasattr(value, "timestamp") else float(value)


def agrees_with_cdr(call: dict[str, Any], rows: list[dict[str, str]]) -> list[str]:
    """What differs between a stored call and Asterisk's CDRs of the same Linkedid (empty: none).
    CDR times are whole seconds, hence the 1.5 s tolerance."""
    legs = cdr_for(rows, call["linkedid"])
    if not legs:
        return ["no CDR for this call"]
    problems = []
    start = min(cdr_time(leg["start"]) for leg in legs)
    end = max(cdr_time(leg["end"]) for leg in legs)
    if not close(epoch(call["started_at"]), start, 1.5):
        problems.append(f"started_at {epoch(call['started_at'])} vs CDR {start}")
    if not close(epoch(call["ended_at"]), end, 1.5):
        problems.append(f"ended_at {epoch(call['ended_at'])} vs CDR {end}")
    own = next((leg for leg in legs if leg["uniqueid"] == call["linkedid"]), legs[0])  # the caller's leg
    if call.get("caller_raw") and call["direction"] == "inbound" and own["src"] != call["caller_raw"]:
        problems.append(f"caller {call['caller_raw']} vs CDR src {own['src']}")
    agents = {leg["dstchannel"].rsplit("-", 1)[0] for leg in legs if leg["dstchannel"]}
    if call.get("agent_interface") and call["agent_interface"] not in agents:
        problems.append(f"agent {call['agent_interface']} not among the CDR's {sorted(agents)}")
    return problems


def summary(call: dict[str, Any]) -> dict[str, Any]:
    keys = ("outcome", "queue", "agent", "hangup_by", "wait_s", "talk_s", "direction", "called", "closed_by")
    return {key: call.get(key) for key in keys}
