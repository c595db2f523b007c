"""Every real Asterisk 22 capture in tests/captures/lab (from ../shared/ami-captures), through `cti replay`.

Expected records are written from each capture's .md description and its AgentConnect /
AgentComplete / QueueCallerAbandon figures (whole seconds, hence the 1 s tolerance), never from
our own output. Start/end instants come from an independent frame reader below.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cti.replay import replay_files

CAPTURES = Path(__file__).resolve().parent / "captures" / "lab"
pytestmark = pytest.mark.skipif(not CAPTURES.is_dir(), reason="tests/captures/lab is missing")

IVR1 = ["main:enter=enter", "main:choice=1"]


def frames(path: Path) -> list[dict[str, str]]:
    """A deliberately naive reader, independent of cti's parser."""
    out = []
    for block in path.read_bytes().decode("utf-8", "replace").split("\r\n\r\n"):
        msg: dict[str, str] = {}
        for line in block.split("\r\n"):
            key, sep, value = line.partition(": ")
            if sep and key not in msg:
                msg[key] = value
        if msg:
            out.append(msg)
    return out


def span(paths: list[Path], linkedid: str) -> tuple[float, float]:
    stamps = [
        float(m["Timestamp"])
        for p in paths
        for m in frames(p)
        if m.get("Linkedid") == linkedid and m.get("Event") in ("Newchannel", "Hangup") and "Timestamp" in m
    ]
    return min(stamps), max(stamps)


# name -> (files, expected fields of the single call). Durations: within 1 s.
EXPECTED: dict[str, tuple[list[str], dict[str, Any]]] = {
    "inbound_answered": (
        ["inbound_answered"],
        dict(
            linkedid="1795389610.8",
            direction="inbound",
            caller_raw="+33612345678",
            caller_e164="+33612345678",
            caller_name="Jean Dupont",
            ivr_path=IVR1,
            queues=["support"],
            outcome="answered",
            agent="Agent1",
            agent_interface="Local/agent1@agents/n",
            hangup_by="agent",
            wait_s=2,
            ring_s=2,
            talk_s=6,
            transfers=0,
            closed_by="events",
        ),
    ),
    "inbound_caller_hangup": (
        ["inbound_caller_hangup"],
        dict(
            linkedid="1795389622.12",
            direction="inbound",
            caller_raw="0612345678",
            caller_e164="+33612345678",
            ivr_path=IVR1,
            queues=["support"],
            outcome="answered",
            agent="Agent4",
            hangup_by="caller",
            wait_s=3,
            ring_s=3,
            talk_s=7,
        ),
    ),
    "inbound_abandoned": (
        ["inbound_abandoned"],
        dict(
            linkedid="1795389636.16",
            direction="inbound",
            caller_raw="+212661234567",
            caller_e164="+212661234567",
            ivr_path=["main:enter=enter", "main:choice=4"],
            queues=["billing"],
            outcome="abandoned",
            agent=None,
            hangup_by="caller",
            wait_s=9,
            talk_s=None,
            answered_at=None,
        ),
    ),
    "inbound_ivr_only": (
        ["inbound_ivr_only"],
        dict(
            linkedid="1795389649.22",
            direction="inbound",
            caller_raw="+33145678901",
            caller_name="Cabinet Martin",
            ivr_path=["main:enter=enter", "main:choice=3"],
            queues=[],
            outcome="ivr_only",
            agent=None,
            hangup_by="system",
            wait_s=None,
            talk_s=None,
        ),
    ),
    "inbound_ivr_timeout": (
        ["inbound_ivr_timeout"],
        dict(
            linkedid="1795389671.30",
            direction="inbound",
            caller_raw="anonymous",
            caller_e164=None,
            ivr_path=["main:enter=enter", "main:invalid=9", "main:timeout=yes"],
            queues=[],
            outcome="ivr_only",
            hangup_by="system",
        ),
    ),
    "inbound_queue_timeout": (
        ["inbound_queue_timeout"],
        dict(
            linkedid="1795389682.32",
            direction="inbound",
            caller_raw="+33611223344",
            ivr_path=["main:enter=enter", "main:choice=4"],
            queues=["billing"],
            outcome="timeout",
            agent=None,
            hangup_by="system",
            wait_s=10,
        ),
    ),
    "inbound_ringnoanswer": (
        ["inbound_ringnoanswer"],
        dict(
            linkedid="1795389656.24",
            direction="inbound",
            caller_raw="+33698765432",
            ivr_path=["main:enter=enter", "main:choice=2"],
            queues=["sales"],
            outcome="answered",
            agent="Agent3",
            hangup_by="agent",
            wait_s=7,
            ring_s=1,
            talk_s=5,
        ),
    ),
    "inbound_ringall_answered": (
        ["inbound_ringall_answered"],
        dict(
            linkedid="1795436551.0",
            direction="inbound",
            caller_raw="+33478123456",
            caller_name="Boulangerie Riviere",
            ivr_path=["main:enter=enter", "main:choice=5"],
            queues=["hotline"],
            outcome="answered",
            agent="Agent3",
            hangup_by="agent",
            wait_s=1,
            ring_s=1,
            talk_s=7,
        ),
    ),
    "inbound_ringall_abandoned": (
        ["inbound_ringall_abandoned"],
        dict(
            linkedid="1795436569.8",
            direction="inbound",
            caller_raw="0478654321",
            caller_e164="+33478654321",
            ivr_path=["main:enter=enter", "main:choice=6"],
            queues=["escalation"],
            outcome="abandoned",
            agent=None,
            hangup_by="caller",
            wait_s=9,
        ),
    ),
    "inbound_blind_transfer": (
        ["inbound_blind_transfer"],
        dict(
            linkedid="1795390574.586",
            direction="inbound",
            caller_raw="+33612345678",
            ivr_path=IVR1,
            queues=["support", "sales"],
            outcome="answered",
            agent="Agent4",
            hangup_by="agent",
            wait_s=3,
            talk_s=3 + 9,
            transfers=1,
        ),
    ),
    "inbound_attended_transfer": (
        ["inbound_attended_transfer"],
        dict(
            linkedid="1795436764.36",
            direction="inbound",
            caller_raw="+33612345678",
            ivr_path=IVR1,
            queues=["support"],
            outcome="answered",
            agent="Agent4",
            hangup_by="agent",
            wait_s=3,
            transfers=1,
            transferred_to=["Local/2003@agents"],
        ),
    ),
    "outbound_answered": (
        ["outbound_answered"],
        dict(
            linkedid="1795389972.0",
            direction="outbound",
            called="0600000001",
            campaign="c1",
            contact="1001",
            queues=["outbound"],
            outcome="outbound_answered",
            originate_reason=4,
            agent="Agent3",
            hangup_by="caller",
            wait_s=1,
            talk_s=11,
        ),
    ),
    "outbound_busy": (
        ["outbound_busy"],
        dict(
            linkedid="1795389846.90",
            direction="outbound",
            called="0600000002",
            queues=[],
            outcome="outbound_busy",
            originate_reason=5,
            agent=None,
            answered_at=None,
        ),
    ),
    "outbound_noanswer": (
        ["outbound_noanswer"],
        dict(
            linkedid="1795389851.92",
            direction="outbound",
            called="0600000003",
            queues=[],
            outcome="outbound_no_answer",
            originate_reason=3,
            hangup_by="system",
        ),
    ),
    "outbound_congestion": (
        ["outbound_congestion"],
        dict(
            direction="outbound",
            called="0600000004",
            queues=[],
            outcome="outbound_congestion",
            originate_reason=8,
        ),
    ),
    "inbound_agi": (
        ["inbound_agi"],
        dict(
            linkedid="1795390635.594",
            direction="inbound",
            caller_raw="+33612345678",
            ivr_path=["main:enter=enter", "main:choice=3"],
            queues=[],
            outcome="ivr_only",
            hangup_by="system",
        ),
    ),
    # The link is cut while the agent rings; the agent answers during the gap; the resync adopts the
    # call and AgentComplete brings Asterisk's own wait (3 s) and talk (12 s).
    "reconnect": (
        ["reconnect_part1", "reconnect_part2"],
        dict(
            linkedid="1795389589.4",
            direction="inbound",
            caller_raw="+33612345678",
            ivr_path=IVR1,
            queues=["support"],
            outcome="answered",
            agent="Agent4",
            hangup_by="agent",
            wait_s=3,
            talk_s=12,
        ),
    ),
    # Asterisk restarts under a call in conversation: nobody hung up, the PBX cut it.
    "pbx_restart": (
        ["pbx_restart_part1", "pbx_restart_part2"],
        dict(
            linkedid="1795437104.274",
            direction="inbound",
            caller_raw="+33612345678",
            queues=["support"],
            outcome="answered",
            agent="Agent4",
            hangup_by="pbx",
            wait_s=3,
            talk_s=2,
        ),
    ),
}

DURATIONS = ("wait_s", "ring_s", "talk_s")


def check_call(call: dict[str, Any], expected: dict[str, Any]) -> None:
    for key, want in expected.items():
        got = call[key]
        if key in DURATIONS and want is not None:
            assert got is not None and abs(got - want) <= 1.0, f"{key}: {got} vs {want}"
        else:
            assert got == want, f"{key}: {got!r} vs {want!r}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_capture_gives_exactly_the_expected_call(name: str) -> None:
    files, expected = EXPECTED[name]
    paths = [CAPTURES / f"{f}.ami" for f in files]
    doc = replay_files(paths).to_json()
    assert len(doc["calls"]) == 1, [c["linkedid"] for c in doc["calls"]]
    call = doc["calls"][0]
    assert "open" not in call, "call left open"
    check_call(call, expected)
    start, end = span(paths, call["linkedid"])
    assert abs(call["started_at"] - start) <= 1.0
    assert abs(call["ended_at"] - end) <= 1.0


def test_actions_midcall_keeps_the_call_and_records_the_failed_originate() -> None:
    doc = replay_files([CAPTURES / "actions_midcall.ami"]).to_json()
    calls = {c["linkedid"]: c for c in doc["calls"]}
    check_call(
        calls["1795389749.54"],
        dict(outcome="answered", agent="Agent1", queues=["support"], hangup_by="agent", wait_s=2, talk_s=10),
    )
    # The synchronous Originate into a context that does not exist created and destroyed a channel.
    failed = [c for c in calls.values() if c["linkedid"] != "1795389749.54"]
    assert len(failed) == 1 and failed[0]["queues"] == [] and failed[0]["answered_at"] is None


def test_agent_session_has_no_call() -> None:
    doc = replay_files([CAPTURES / "agent_session.ami"]).to_json()
    assert doc["calls"] == []


def test_reconnect_part1_alone_leaves_the_call_open_not_lost() -> None:
    doc = replay_files([CAPTURES / "reconnect_part1.ami"]).to_json()
    assert [c["linkedid"] for c in doc["calls"]] == ["1795389589.4"]
    assert doc["calls"][0]["open"] is True


def test_mixed_seed1_agrees_with_asterisks_queue_log() -> None:
    """Call by call against Asterisk's own queue_log (an independent record of the same traffic)."""
    capture = CAPTURES / "mixed_seed1.ami"
    uid_to_linkedid = {
        m["Uniqueid"]: m["Linkedid"] for m in frames(capture) if m.get("Event") == "Newchannel"
    }
    truth: dict[str, dict[str, Any]] = {}
    for line in (CAPTURES / "mixed_seed1.queue_log").read_text().splitlines():
        p = line.split("|")
        if len(p) < 5 or p[1] in ("NONE", ""):
            continue
        t = truth.setdefault(uid_to_linkedid.get(p[1], p[1]), {"queue": p[2]})
        if p[4] == "CONNECT":
            t.update(outcome="answered", agent=p[3], wait=int(p[5]))
        elif p[4] in ("COMPLETECALLER", "COMPLETEAGENT"):
            t.update(talk=int(p[6]), hangup_by="caller" if p[4] == "COMPLETECALLER" else "agent")
        elif p[4] == "ABANDON":
            t.update(outcome="abandoned", wait=int(p[7]))
        elif p[4] == "EXITWITHTIMEOUT":
            t.update(outcome="timeout", wait=int(p[7]))
    doc = replay_files([capture]).to_json()
    calls = {c["linkedid"]: c for c in doc["calls"]}
    assert len(calls) == 40
    assert len(truth) == 27
    for linkedid, t in truth.items():
        c = calls[linkedid]
        seg = c["segments"][0]
        assert seg["queue"] == t["queue"]
        assert seg["outcome"] == t["outcome"], linkedid
        assert abs(seg["wait_s"] - t["wait"]) <= 1.0, linkedid
        if "agent" in t:
            assert c["agent"] == t["agent"]
        if "talk" in t:
            assert abs(c["talk_s"] - t["talk"]) <= 1.0, linkedid
            assert c["hangup_by"] == t["hangup_by"], linkedid


def test_mixed_seed1_queue_counters_match_asterisks_queuestatus() -> None:
    doc = replay_files([CAPTURES / "mixed_seed1.ami"]).to_json()
    snapshots = doc["stats"]["asterisk_queue_status"]
    first, last = snapshots[0], snapshots[-1]
    queues = doc["stats"]["queues"]
    for name in last:
        completed = last[name]["completed"] - first[name]["completed"]
        abandoned = last[name]["abandoned"] - first[name]["abandoned"]
        ours = queues.get(name, {"answered": 0, "abandoned": 0, "timed_out": 0})
        assert ours["answered"] == completed, name
        # Asterisk counts timeouts as abandons; we keep them apart.
        assert ours["abandoned"] + ours["timed_out"] == abandoned, name
    assert queues["billing"]["timed_out"] == 1


def test_mixed_seed1_outbound_and_ivr_counts_match_the_plan() -> None:
    plan = json.loads((CAPTURES / "mixed_seed1.plan.json").read_text())
    by_digit = {
        "1": "outbound_answered",
        "2": "outbound_busy",
        "3": "outbound_no_answer",
        "4": "outbound_congestion",
    }
    want: dict[str, int] = {}
    for step in plan:
        if step[1] == "out":
            want[by_digit[step[2][-1]]] = want.get(by_digit[step[2][-1]], 0) + 1
    want["ivr_only"] = sum(1 for s in plan if s[1] == "in" and s[3] not in ("1", "2", "4", "5", "6"))
    doc = replay_files([CAPTURES / "mixed_seed1.ami"]).to_json()
    got: dict[str, int] = {}
    for c in doc["calls"]:
        if c["direction"] == "outbound" or c["outcome"] == "ivr_only":
            got[c["outcome"]] = got.get(c["outcome"], 0) + 1
    assert got == want


def test_cli_replay_json_from_a_subprocess() -> None:
    """The README's first command, end to end through the console entry point."""
    run = subprocess.run(
        [sys.executable, "-m", "cti.cli", "replay", str(CAPTURES / "inbound_answered.ami"), "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    doc = json.loads(run.stdout)
    assert [c["outcome"] for c in doc["calls"]] == ["answered"]
    assert doc["stats"]["queues"]["support"]["presented"] == 1
    assert doc["stats"]["queues"]["support"]["answered"] == 1


def test_cli_replay_missing_file_is_a_clear_error() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "cti.cli", "replay", "/nonexistent.ami"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "no such file" in run.stderr and "Traceback" not in run.stderr
