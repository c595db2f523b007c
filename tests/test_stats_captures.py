"""Replayed statistics against every real capture.

The expected figures are written out from each capture's description (`.md`) and its events:
waits run from `QueueCallerJoin` to `AgentConnect` / `QueueCallerAbandon`, talk from
`AgentConnect` to `AgentComplete` (timestamps quoted below), so they do not come from our code.
For `mixed_seed1` they come from Asterisk's own queue_log, QueueStatus and the traffic plan.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from cti.replay import replay_files
from cti.stats.live import replay_live
from cti.stats.metrics import ThresholdSet

CAPTURES = Path(__file__).resolve().parent / "captures" / "lab"
pytestmark = pytest.mark.skipif(not CAPTURES.is_dir(), reason="../shared/ami-captures not present")

# The lab (README of the captures): servicelevel=20 except `outbound` (5); hotline wrapuptime 2.
LAB = ThresholdSet.build(per_queue={"outbound": {"service_level_s": 5}, "hotline": {"wrapup_s": 2}})
UTC = ZoneInfo("UTC")
# Leave time for wrap-ups to end after the last event.
AFTER_S = 10.0


def snapshot(*names: str) -> dict[str, Any]:
    stats, last = replay_live([CAPTURES / n for n in names], LAB, UTC)
    return stats.snapshot(last + AFTER_S)


def queues(snap: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {q["queue"]: q for q in snap["queues"] if q["presented"]}


def agents(snap: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["agent"]: a for a in snap["agents"]}


def one_queue(snap: dict[str, Any], name: str, **counts: int) -> dict[str, Any]:
    assert list(queues(snap)) == [name]
    q = queues(snap)[name]
    base = {"presented": 1, "answered": 0, "abandoned": 0, "short_abandoned": 0, "timed_out": 0}
    assert {k: q[k] for k in base} == {**base, **counts}
    return q


def ivr(snap: dict[str, Any]) -> dict[str, Any]:
    menus = {m["menu"]: m for m in snap["ivr"]["menus"]}
    assert set(menus) <= {"main"}
    return menus.get("main", {})


def ivr_counts(snap: dict[str, Any]) -> dict[str, Any]:
    m = ivr(snap)
    keys = ("entries", "visits", "choices", "invalid", "timeouts", "hangups", "contained")
    return {k: m.get(k, 0) for k in keys} | {"by_key": m.get("choices_by_key", {})}


def entered_and_chose(key: str) -> dict[str, Any]:
    return {
        "entries": 1,
        "visits": 1,
        "choices": 1,
        "invalid": 0,
        "timeouts": 0,
        "hangups": 0,
        "contained": 0,
        "by_key": {key: 1},
    }


# ------------------------------------------------------------------------ inbound, answered
@pytest.mark.parametrize(
    ("capture", "queue", "agent", "wait", "talk", "key"),
    [
        # join 611.429131, connect 613.431978, complete 619.939452 ("Agent1 ... talks 6 s")
        ("inbound_answered", "support", "Agent1", 613.431978 - 611.429131, 619.939452 - 613.431978, "1"),
        # join 623.961038, connect 626.964846, caller hangs up 633.217529
        ("inbound_caller_hangup", "support", "Agent4", 626.964846 - 623.961038, 633.217529 - 626.964846, "1"),
        # Agent2 rings 5 s for nothing, Agent3 answers: join 657.548027, connect 664.557944, 669.063988
        ("inbound_ringnoanswer", "sales", "Agent3", 664.557944 - 657.548027, 669.063988 - 664.557944, "2"),
        # ring-all, Agent3 first: join 552.745985, connect 553.749707, complete 560.256403
        (
            "inbound_ringall_answered",
            "hotline",
            "Agent3",
            553.749707 - 552.745985,
            560.256403 - 553.749707,
            "5",
        ),
        # list actions mid-call change nothing: join 750.290231, connect 752.292448, 762.803806
        ("actions_midcall", "support", "Agent1", 752.292448 - 750.290231, 762.803806 - 752.292448, "1"),
    ],
)
def test_answered_calls(capture: str, queue: str, agent: str, wait: float, talk: float, key: str) -> None:
    snap = snapshot(f"{capture}.ami")
    q = one_queue(snap, queue, answered=1)
    assert (q["answered_within_sl"], q["qs"], q["service_level"], q["abandon_rate"]) == (1, 1.0, 1.0, 0.0)
    assert (q["servicelevel_perf"], q["servicelevel_perf2"]) == (1.0, 1.0)
    assert q["asa_s"] == pytest.approx(wait, abs=0.01)
    assert q["max_wait_s"] == pytest.approx(wait, abs=0.01)
    assert q["dmc_s"] == pytest.approx(talk, abs=0.01)
    assert (q["asterisk_completed"], q["asterisk_abandoned"]) == (1, 0)
    a = agents(snap)[agent]
    assert a["handled"] == 1
    assert a["acd_s"] == pytest.approx(talk, abs=0.01)
    assert a["dmc_s"] == pytest.approx(talk, abs=0.01)
    assert a["state"] == "available"
    assert ivr_counts(snap) == entered_and_chose(key)
    assert snap["totals"]["waiting"] == 0


def test_ringall_wrapup_counts_in_dmt_not_dmc() -> None:
    """hotline has wrapuptime 2: Agent3 spends 2 s in wrap-up after the call (DMT = talk + 2)."""
    snap = snapshot("inbound_ringall_answered.ami")
    talk = 560.256403 - 553.749707
    q = queues(snap)["hotline"]
    assert q["wrapup_s"] == pytest.approx(2.0, abs=0.01)
    assert q["dmt_s"] == pytest.approx(talk + 2.0, abs=0.01)
    a = agents(snap)
    assert a["Agent3"]["wrapup_s"] == pytest.approx(2.0, abs=0.01)
    # AgentCalled for Agent3 at 552.746263, answered at 553.749707.
    assert a["Agent3"]["ringing_s"] == pytest.approx(553.749707 - 552.746263, abs=0.01)
    # The two who lost the race rang about 1 s and took nothing.
    for name in ("Agent1", "Agent4"):
        assert a[name]["handled"] == 0
        assert a[name]["ringing_s"] == pytest.approx(1.0, abs=0.01)
        assert a[name]["acd_s"] == 0


# ------------------------------------------------------------------------ abandons and timeouts
def test_abandon_is_ours_and_asterisks() -> None:
    # join 637.494675, QueueCallerAbandon 646.754324 ("hangs up about 8 s after joining")
    snap = snapshot("inbound_abandoned.ami")
    wait = 646.754324 - 637.494675
    q = one_queue(snap, "billing", abandoned=1)
    assert (q["qs"], q["service_level"], q["abandon_rate"]) == (0.0, 0.0, 1.0)
    assert q["max_wait_s"] == pytest.approx(wait, abs=0.01)
    assert q["asa_s"] is None and q["dmc_s"] is None
    assert (q["asterisk_completed"], q["asterisk_abandoned"]) == (0, 1)
    assert (q["servicelevel_perf"], q["servicelevel_perf2"]) == (None, 1.0)  # abandoned within T
    assert ivr_counts(snap) == entered_and_chose("4")


def test_ringall_abandon_while_two_agents_ring() -> None:
    # join 570.758524, QueueCallerAbandon 579.019579
    snap = snapshot("inbound_ringall_abandoned.ami")
    q = one_queue(snap, "escalation", abandoned=1)
    assert q["max_wait_s"] == pytest.approx(579.019579 - 570.758524, abs=0.01)
    assert q["abandon_rate"] == 1.0
    assert all(a["handled"] == 0 for a in snap["agents"])


def test_queue_timeout_is_not_an_abandon_but_asterisk_counts_it() -> None:
    # join 683.613637, QueueCallerAbandon + QueueExit TIMEOUT 693.624575 ("10 s queue timeout")
    snap = snapshot("inbound_queue_timeout.ami")
    q = one_queue(snap, "billing", timed_out=1)
    assert q["timed_out_within_sl"] == 1
    assert q["max_wait_s"] == pytest.approx(693.624575 - 683.613637, abs=0.01)
    assert (q["qs"], q["abandon_rate"]) == (0.0, 0.0)
    # Asterisk's view: an abandon, within T for ServicelevelPerf2.
    assert (q["asterisk_completed"], q["asterisk_abandoned"], q["servicelevel_perf2"]) == (0, 1, 1.0)


def test_short_abandon_threshold() -> None:
    """The same abandon (wait ≈ 9.26 s) is short once the threshold is above it."""
    stats, last = replay_live(
        [CAPTURES / "inbound_abandoned.ami"], ThresholdSet.build(short_abandon_s=10), UTC
    )
    q = queues(stats.snapshot(last))["billing"]
    assert (q["short_abandoned"], q["abandon_rate"], q["service_level"]) == (1, None, None)


# ------------------------------------------------------------------------ transfers
def test_blind_transfer_counts_two_queue_segments() -> None:
    snap = snapshot("inbound_blind_transfer.ami")
    qs = queues(snap)
    assert set(qs) == {"support", "sales"}
    support, sales = qs["support"], qs["sales"]
    assert (support["presented"], support["answered"], support["transferred_out"]) == (1, 1, 1)
    assert (sales["presented"], sales["answered"], sales["transferred_out"]) == (1, 1, 0)
    # support: join 575.734598, connect 578.739128, transfer 581.756629
    assert support["asa_s"] == pytest.approx(578.739128 - 575.734598, abs=0.01)
    assert support["dmc_s"] == pytest.approx(581.756629 - 578.739128, abs=0.01)
    # sales: join 581.758197, connect 588.768923 (Agent2 rang 5 s first), complete 597.273099
    assert sales["asa_s"] == pytest.approx(588.768923 - 581.758197, abs=0.01)
    assert sales["dmc_s"] == pytest.approx(597.273099 - 588.768923, abs=0.01)
    a = agents(snap)
    assert (a["Agent4"]["handled"], a["Agent3"]["handled"], a["Agent2"]["handled"]) == (1, 1, 0)
    assert a["Agent2"]["ringing_s"] == pytest.approx(5.0, abs=0.02)
    assert ivr_counts(snap) == entered_and_chose("1")  # one call, one IVR entry


def test_attended_transfer_ends_the_first_agents_part() -> None:
    # join 765.380460, connect 768.384944, AgentComplete (transfer) 777.616025
    snap = snapshot("inbound_attended_transfer.ami")
    q = one_queue(snap, "support", answered=1)
    assert q["transferred_out"] == 1
    assert q["asa_s"] == pytest.approx(768.384944 - 765.380460, abs=0.01)
    assert q["dmc_s"] == pytest.approx(777.616025 - 768.384944, abs=0.01)
    assert agents(snap)["Agent4"]["acd_s"] == pytest.approx(777.616025 - 768.384944, abs=0.01)


# ------------------------------------------------------------------------ IVR only
@pytest.mark.parametrize(
    ("capture", "expected"),
    [
        # "presses 3 -> informational message then the IVR hangs up" (not the caller)
        ("inbound_ivr_only", {"choices": 1, "invalid": 0, "timeouts": 0, "by_key": {"3": 1}}),
        # the AGI lookup, then 3
        ("inbound_agi", {"choices": 1, "invalid": 0, "timeouts": 0, "by_key": {"3": 1}}),
        # "presses 9 (invalid choice, back to the menu) then nothing: IVR timeout, hangup"
        ("inbound_ivr_timeout", {"choices": 0, "invalid": 1, "timeouts": 1, "by_key": {}}),
    ],
)
def test_calls_contained_in_the_ivr(capture: str, expected: dict[str, Any]) -> None:
    snap = snapshot(f"{capture}.ami")
    assert queues(snap) == {}
    base = {"entries": 1, "visits": 1, "hangups": 0, "contained": 1}
    assert ivr_counts(snap) == base | expected
    assert snap["ivr"]["totals"]["containment"] == 1.0


# ------------------------------------------------------------------------ outbound
@pytest.mark.parametrize("capture", ["outbound_busy", "outbound_congestion", "outbound_noanswer"])
def test_outbound_attempts_that_did_not_connect(capture: str) -> None:
    snap = snapshot(f"{capture}.ami")
    [campaign] = snap["outbound"]
    assert {k: campaign[k] for k in ("attempts", "connects", "dropped", "contact_rate", "drop_rate")} == {
        "attempts": 1,
        "connects": 0,
        "dropped": 0,
        "contact_rate": 0.0,
        "drop_rate": None,
    }
    # Dispositions do not exist yet: unknown, not zero.
    assert campaign["contacts_argued"] is None and campaign["conversion_rate"] is None
    assert queues(snap) == {}


def test_outbound_answered_reaches_agent3_within_the_drop_threshold() -> None:
    # DialerConnected (campaign c1) 974.744410, join 974.744512, connect 975.750816 (< 2 s),
    # the callee hangs up 987.247151.
    snap = snapshot("outbound_answered.ami")
    [campaign] = snap["outbound"]
    assert campaign["campaign"] == "c1"
    assert (campaign["attempts"], campaign["connects"], campaign["dropped"]) == (1, 1, 0)
    assert campaign["contact_rate"] == 1.0
    q = one_queue(snap, "outbound", answered=1)
    assert q["asa_s"] == pytest.approx(975.750816 - 974.744512, abs=0.01)
    assert q["answered_within_sl"] == 1  # T is 5 s on this queue
    agent3 = agents(snap)["Agent3"]
    assert agent3["outbound_s"] == pytest.approx(987.247151 - 975.750816, abs=0.01)
    assert agent3["acd_s"] == 0


# ------------------------------------------------------------------------ agents without calls
def test_agent_session_pauses_and_logout() -> None:
    snap = snapshot("agent_session.ami")
    a5 = agents(snap)["Agent5"]
    # Added to support 600.306874 (and sales), paused everywhere (lunch) from 602.310901 (the
    # second queue) to 605.315037, paused in sales only (training) — still available for
    # support —, logged out of sales 608.822080 and of support 609.824190.
    assert a5["state"] == "logged_out"
    assert a5["logged_in_s"] == pytest.approx(609.824190 - 600.306874, abs=0.01)
    assert a5["paused_s"] == pytest.approx(605.315037 - 602.310901, abs=0.01)
    assert a5["pause_by_reason"] == {"lunch": pytest.approx(605.315037 - 602.310901, abs=0.01)}
    assert a5["available_s"] == pytest.approx(a5["logged_in_s"] - a5["paused_s"], abs=0.01)
    assert (a5["handled"], a5["occupancy"], a5["calls_per_hour"]) == (0, 0.0, 0.0)
    assert queues(snap) == {}


def test_login_failed_gives_nothing() -> None:
    snap = snapshot("login_failed.ami")
    assert (snap["queues"], snap["agents"], snap["outbound"]) == ([], [], [])


# ------------------------------------------------------------------------ reconnects
def test_reconnect_counts_the_call_once() -> None:
    """The agent answered during the gap: AgentComplete says HoldTime 3, TalkTime 12."""
    snap = snapshot("reconnect_part1.ami", "reconnect_part2.ami")
    q = one_queue(snap, "support", answered=1)
    assert q["asa_s"] == pytest.approx(3.0, abs=0.01)
    assert q["dmc_s"] == pytest.approx(12.0, abs=0.01)
    assert snap["totals"]["waiting"] == 0
    assert agents(snap)["Agent4"]["handled"] == 1


def test_pbx_restart_keeps_the_cut_call() -> None:
    # join 105.820032, connect 108.824800, cut by the restart 110.851932
    snap = snapshot("pbx_restart_part1.ami", "pbx_restart_part2.ami")
    q = one_queue(snap, "support", answered=1)
    assert q["asa_s"] == pytest.approx(108.824800 - 105.820032, abs=0.01)
    assert q["dmc_s"] == pytest.approx(110.851932 - 108.824800, abs=0.01)
    assert ivr_counts(snap) == entered_and_chose("1")


# ------------------------------------------------------------------------ mixed_seed1
def _queue_log() -> dict[str, dict[str, float]]:
    """Asterisk's own record: per queue, calls entered/answered/abandoned/timed out, waits, talk."""
    out: dict[str, dict[str, float]] = {}
    for line in (CAPTURES / "mixed_seed1.queue_log").read_text().splitlines():
        p = line.split("|")
        if len(p) < 5 or p[1] in ("NONE", ""):
            continue
        q = out.setdefault(p[2], dict.fromkeys(("presented", "answered", "abandoned", "timed_out"), 0.0))
        q.setdefault("wait_answered_s", 0.0)
        q.setdefault("talk_s", 0.0)
        if p[4] == "ENTERQUEUE":
            q["presented"] += 1
        elif p[4] == "CONNECT":
            q["answered"] += 1
            q["wait_answered_s"] += int(p[5])
        elif p[4] in ("COMPLETECALLER", "COMPLETEAGENT"):
            q["talk_s"] += int(p[6])
        elif p[4] == "ABANDON":
            q["abandoned"] += 1
        elif p[4] == "EXITWITHTIMEOUT":
            q["timed_out"] += 1
    return out


def test_mixed_seed1_counters_equal_asterisks_queue_log() -> None:
    snap = snapshot("mixed_seed1.ami")
    ours = queues(snap)
    truth = _queue_log()
    assert set(ours) == set(truth) == {"support", "sales", "billing", "outbound"}
    for name, t in truth.items():
        q = ours[name]
        for key in ("presented", "answered", "abandoned", "timed_out"):
            assert q[key] == t[key], (name, key)
        # queue_log rounds every wait and talk to whole seconds: within 1 s per call.
        assert q["wait_answered_s"] == pytest.approx(t["wait_answered_s"], abs=t["answered"] or 0.01)
        assert q["talk_s"] == pytest.approx(t["talk_s"], abs=t["answered"] or 0.01)


def _queue_params(name: str) -> list[dict[str, dict[str, str]]]:
    raw = (CAPTURES / name).read_bytes().decode()
    snaps: dict[str, dict[str, dict[str, str]]] = {}
    for frame in raw.split("\r\n\r\n"):
        h = dict(line.split(": ", 1) for line in frame.split("\r\n") if ": " in line)
        if h.get("Event") == "QueueParams":
            snaps.setdefault(h["ActionID"], {})[h["Queue"]] = h
    return list(snaps.values())


def test_mixed_seed1_both_views_equal_the_queuestatus_difference() -> None:
    """QueueStatus before the traffic and after it: Completed and Abandoned moved by exactly our
    answered and our abandoned + timed out (Asterisk counts timeouts as abandons)."""
    first, last = _queue_params("mixed_seed1.ami")
    ours = {q["queue"]: q for q in snapshot("mixed_seed1.ami")["queues"]}
    for name in last:
        completed = int(last[name]["Completed"]) - int(first[name]["Completed"])
        abandoned = int(last[name]["Abandoned"]) - int(first[name]["Abandoned"])
        q = ours[name]
        # Asterisk's view, as we report it:
        assert (q["asterisk_completed"], q["asterisk_abandoned"]) == (completed, abandoned), name
        # Ours: the same calls, timeouts kept apart from the callers who hung up.
        assert q["answered"] == completed
        assert q["abandoned"] + q["timed_out"] == abandoned
    assert (ours["billing"]["abandoned"], ours["billing"]["timed_out"]) == (3, 1)
    # The abandon rates differ by that timeout: ours 3/4, Asterisk's 4/4.
    assert ours["billing"]["abandon_rate"] == 0.75


def test_mixed_seed1_service_levels_match_queuestatus() -> None:
    """Queues that started the period from zero: Asterisk's cumulative ServicelevelPerf/Perf2
    (percent) are ours over the period."""
    first, last = _queue_params("mixed_seed1.ami")
    ours = {q["queue"]: q for q in snapshot("mixed_seed1.ami")["queues"]}
    fresh = [n for n in last if first[n]["Completed"] == first[n]["Abandoned"] == "0"]
    assert sorted(fresh) == ["billing", "sales", "support"]
    for name in fresh:
        perf, perf2 = float(last[name]["ServicelevelPerf"]), float(last[name]["ServicelevelPerf2"])
        assert (ours[name]["servicelevel_perf"] or 0) * 100 == pytest.approx(perf, abs=0.05), name
        assert ours[name]["servicelevel_perf2"] * 100 == pytest.approx(perf2, abs=0.05), name
    # outbound had one call (answered within its 5 s) before the first snapshot: Asterisk's
    # 83.3 % = (1 + ours_num) / (1 + ours_den) with our 4 of 5 within T.
    out = ours["outbound"]
    assert out["servicelevel_perf2"] == 0.8
    asterisk_perf2 = float(last["outbound"]["ServicelevelPerf2"])
    assert asterisk_perf2 == pytest.approx((1 + 4) / (1 + 5) * 100, abs=0.05)


def test_mixed_seed1_ivr_and_outbound_match_the_plan() -> None:
    """The plan: [t, "in", caller, digits, stay_s, talk_s] / [t, "out", number, i]. The lab's IVR
    accepts 1-6, says a message on 3 then hangs up, refuses 9, and times out ~6 s after its
    prompt (inbound_ivr_timeout): a caller who stays less hangs up in the IVR."""
    plan = json.loads((CAPTURES / "mixed_seed1.plan.json").read_text())
    inbound = [s for s in plan if s[1] == "in"]
    digits = [s[3] for s in inbound]
    by_key: dict[str, int] = {}
    for d in digits:
        if d in ("1", "2", "3", "4", "5", "6"):
            by_key[d] = by_key.get(d, 0) + 1
    no_queue = [s for s in inbound if s[3] not in ("1", "2", "4", "5", "6")]
    gave_up = [s for s in no_queue if s[3] in ("", "9") and s[4] < 6]
    snap = snapshot("mixed_seed1.ami")
    assert ivr_counts(snap) == {
        "entries": len(inbound),
        "visits": len(inbound),
        "choices": sum(by_key.values()),
        "invalid": digits.count("9"),
        "timeouts": sum(1 for s in no_queue if s[3] in ("", "9")) - len(gave_up),
        "hangups": len(gave_up),
        "contained": len(no_queue),
        "by_key": by_key,
    }
    assert snap["ivr"]["totals"]["containment"] == round(len(no_queue) / len(inbound), 4)
    outbound = [s for s in plan if s[1] == "out"]
    answered = [s for s in outbound if s[2].endswith("1")]  # last digit 1 answers
    [c1, *rest] = sorted(snap["outbound"], key=lambda c: c["campaign"] != "c1")
    assert sum(c["attempts"] for c in snap["outbound"]) == len(outbound)
    assert (c1["campaign"], c1["connects"]) == ("c1", len(answered))
    assert all(c["connects"] == 0 for c in rest)


def test_replay_json_keeps_the_check_replay_keys() -> None:
    """`cti replay --json` (read by ../shared/tools/check_replay.py) uses the same dictionary."""
    doc = replay_files([CAPTURES / "mixed_seed1.ami"]).to_json()
    live = {q["queue"]: q for q in snapshot("mixed_seed1.ami")["queues"]}
    for name, q in doc["stats"]["queues"].items():
        for key in ("presented", "answered", "abandoned", "timed_out", "short_abandoned", "qs"):
            assert q[key] == live[name][key], (name, key)
