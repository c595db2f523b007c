"""The tracker on transcripts recorded on the real-PBX tier (tests/captures/pbx/README.md),
checked against Asterisk's own queue_log of the same runs, and on the variants of them that
Asterisk's thread races produce."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cti.calls.queue_log import parse_lines
from cti.calls.records import CallRecord
from cti.replay import replay_files

PBX = Path(__file__).parent / "captures" / "pbx"
SCENARIOS = sorted(p.stem for p in PBX.glob("*.ami"))


def blocks(path: Path) -> list[str]:
    return path.read_bytes().decode("utf-8").split("\r\n\r\n")


def write(path: Path, parts: list[str]) -> Path:
    text = "\r\n\r\n".join(p for p in parts if p) + "\r\n\r\n"
    path.write_bytes(text.encode("utf-8"))
    return path


def customer_calls(path: Path) -> list[CallRecord]:
    result = replay_files([path])
    assert not result.open_calls
    return [r for r in result.records if r.direction != "internal"]


def truth(name: str) -> dict[str, dict[str, Any]]:
    """Per caller uniqueid: what app_queue logged."""
    calls: dict[str, dict[str, Any]] = {}
    path = PBX / f"{name}.queue_log"  # none for calls that never met a queue
    for e in parse_lines(path.read_text().splitlines() if path.is_file() else []):
        call = calls.setdefault(e.callid, {"queues": []})
        if e.verb == "ENTERQUEUE":
            call["queues"].append(e.queue)
        elif e.verb == "CONNECT" and "agent" not in call:  # the record's agent and wait: the first
            call.update(outcome="answered", agent=e.agent, wait=int(e.data(0) or 0))
        elif e.verb in ("COMPLETECALLER", "COMPLETEAGENT"):
            call.update(
                talk=int(e.data(1) or 0), completed="caller" if e.verb == "COMPLETECALLER" else "agent"
            )
        elif e.verb == "ABANDON":
            call.update(outcome="abandoned", wait=int(e.data(2) or 0))
        elif e.verb == "EXITWITHTIMEOUT":
            call.update(outcome="timeout", wait=int(e.data(2) or 0))
    return calls


@pytest.mark.parametrize("name", SCENARIOS)
def test_each_recorded_call_agrees_with_asterisks_queue_log(name: str) -> None:
    expected = truth(name)
    for record in customer_calls(PBX / f"{name}.ami"):
        if not record.segments:
            assert record.linkedid not in expected
            continue
        first = expected[record.linkedid]
        assert [s.queue for s in record.segments] == first["queues"], name
        assert record.outcome == first["outcome"], name
        assert record.wait_s is not None and abs(record.wait_s - first["wait"]) <= 1.01, name
        if first.get("agent"):
            assert record.agent == first["agent"]
        if "completed" in first and "BLINDTRANSFER" not in (PBX / f"{name}.queue_log").read_text():
            assert record.segments[-1].completed_by == first["completed"], name
            assert record.talk_s is not None and abs(record.talk_s - first["talk"]) <= 1.01, name


def test_feature_code_calls_are_internal() -> None:
    records = replay_files([PBX / "feature_codes.ami"]).records
    assert len(records) == 4
    assert {r.direction for r in records} == {"internal"} and {r.caller_raw for r in records} == {"1001"}
    assert {r.outcome for r in records} == {"no_queue"}


def test_attended_transfer_by_dtmf_names_the_colleagues_phone_not_the_local_channel() -> None:
    [call] = customer_calls(PBX / "attended_transfer_dtmf.ami")
    assert call.transfers == 1 and call.transferred_to == ["PJSIP/1004"]
    assert call.hangup_by == "agent" and call.agent == "Agent 1001"


def test_attended_transfer_without_a_target_channel_header_is_found_in_the_bridge(tmp_path: Path) -> None:
    # The same transfer as Asterisk reports it when the bridges merge (DestType: Bridge) and the
    # event names no TransferTarget* channel: only the bridge the caller is now in.
    parts = []
    for block in blocks(PBX / "attended_transfer_dtmf.ami"):
        if "Event: AttendedTransfer" in block:
            block = "\r\n".join(line for line in block.split("\r\n") if not line.startswith("TransferTarget"))
        parts.append(block)
    [call] = customer_calls(write(tmp_path / "bridge_merge.ami", parts))
    assert call.transferred_to == ["PJSIP/1004"]


def _dest_only_complete_after_hangups(source: Path, target: Path) -> Path:
    """Move AgentComplete after the last Hangup and keep only its Dest*/queue headers, as
    Asterisk sends it when the caller's channel snapshot is gone (seen with PJSIP phones)."""
    parts = blocks(source)
    [complete] = [b for b in parts if "Event: AgentComplete" in b]
    parts.remove(complete)
    kept = [
        line
        for line in complete.split("\r\n")
        if line.startswith(("Event", "Privilege", "Timestamp", "Dest", "Queue", "Interface", "MemberName"))
        or line.startswith(("HoldTime", "TalkTime", "Reason"))
    ]
    last_hangup = max(i for i, b in enumerate(parts) if "Event: Hangup" in b)
    parts.insert(last_hangup + 1, "\r\n".join(kept))
    return write(target, parts)


def test_agent_complete_after_the_hangups_with_only_dest_headers_still_says_who_ended(tmp_path: Path) -> None:
    plain = customer_calls(PBX / "ring_all.ami")
    late = customer_calls(_dest_only_complete_after_hangups(PBX / "ring_all.ami", tmp_path / "late.ami"))
    assert [c.segments[-1].completed_by for c in plain] == ["caller"]
    assert [c.segments[-1].completed_by for c in late] == ["caller"]
    assert late[0].talk_s == pytest.approx(plain[0].talk_s, abs=1.01)
    assert late[0].hangup_by == "caller"


def test_ring_no_answer_auto_pauses_the_agent_in_all_queues() -> None:
    paused: dict[str, str | None] = {}
    from cti.calls.events import AgentStateChanged

    def seen(event: object) -> None:
        if isinstance(event, AgentStateChanged) and event.interface == "PJSIP/1001" and event.paused:
            paused[event.queue] = event.paused_reason

    replay_files([PBX / "ring_no_answer.ami"], on_event=seen)
    assert paused == {"support": "Auto-Pause", "hotline": "Auto-Pause"}


@pytest.mark.parametrize("who", ["agent", "caller"])
def test_an_outbound_call_put_through_by_dial_is_answered_and_knows_who_hung_up(who: str) -> None:
    # Originate Local/+33612345678@cti-dialer-out into cti-agents,1001: the callee answers
    # through the trunk, then Dial() rings the agent's phone, outside any queue. Before, the
    # call had no answered_at, no talk time, and "system" hung up whoever did.
    [call] = replay_files([PBX / f"outbound_dial_{who}_hangs_up.ami"]).records
    assert (call.direction, call.outcome, call.called) == ("outbound", "outbound_answered", "+33612345678")
    assert call.answered_at is not None and call.hangup_by == who
    assert call.talk_s == pytest.approx(3.5, abs=1.0)


def test_an_originate_response_ahead_of_its_newchannel_is_held_not_a_second_call(tmp_path: Path) -> None:
    # Asterisk's threads race: the OriginateResponse (Success, Reason 4, Uniqueid X) can reach
    # the client before the Newchannel of X, in the same millisecond. The recorded transcript,
    # with that response moved ahead of the Newchannel it names.
    parts = blocks(PBX / "outbound_dial_agent_hangs_up.ami")
    [response] = [b for b in parts if "Event: OriginateResponse" in b]
    uid = next(line.split(": ", 1)[1] for line in response.split("\r\n") if line.startswith("Uniqueid: "))
    parts.remove(response)
    first = next(i for i, b in enumerate(parts) if "Event: Newchannel" in b and f"Uniqueid: {uid}" in b)
    parts.insert(first, response)
    records = replay_files([write(tmp_path / "early.ami", parts)]).records
    [call] = records
    assert call.linkedid == uid and call.originate_reason == 4 and call.originate_action_id == "tier-1"
    assert (call.outcome, call.called, call.hangup_by) == ("outbound_answered", "+33612345678", "agent")


def test_an_originate_response_whose_channel_never_comes_is_still_recorded(tmp_path: Path) -> None:
    # Only the response (its channel's events lost): after the grace period it is a record of
    # its own, as a failed Originate's always was.
    parts = blocks(PBX / "outbound_dial_agent_hangs_up.ami")
    [response] = [b for b in parts if "Event: OriginateResponse" in b]
    records = replay_files([write(tmp_path / "lonely.ami", [parts[0], response])]).records
    [call] = records
    assert call.direction == "outbound" and call.originate_reason == 4 and call.called == "+33612345678"


def test_traffic_without_timestamps_keeps_asterisks_own_durations(tmp_path: Path) -> None:
    # manager.conf `timestampevents = no` is Asterisk's default: many sites send no Timestamp.
    # The recorded ring-all call, with every Timestamp header removed.
    parts = [
        "\r\n".join(line for line in block.split("\r\n") if not line.startswith("Timestamp: "))
        for block in blocks(PBX / "ring_all.ami")
    ]
    result = replay_files([write(tmp_path / "untimed.ami", parts)])
    [call] = [r for r in result.records if r.direction != "internal"]
    expected = truth("ring_all")[call.linkedid]
    # Before: every time was 0, so talk_s was 0 (overwriting AgentComplete's TalkTime).
    assert call.talk_s == expected["talk"] and call.wait_s == expected["wait"]
    assert call.segments[0].completed_by == "caller" and call.hangup_by == "caller"
    doc = result.to_json()
    assert doc["stats"]["times_absolute"] is False
    [shown] = [c for c in doc["calls"] if c["linkedid"] == call.linkedid]
    assert (shown["started_at"], shown["ended_at"], shown["answered_at"]) == (None, None, None)
    assert shown["talk_s"] == expected["talk"]
    assert replay_files([PBX / "ring_all.ami"]).to_json()["stats"]["times_absolute"] is True


def _another_sites_ivr(block: str) -> str:
    """The same IVR events in another site's words: `Step: prompt` + `Try: 1`, `Choice:
    invalid`, `Choice: timeout` (the wording reported from a second Asterisk 22 site)."""
    if "UserEvent: IVR" not in block:
        return block
    out = []
    for line in block.split("\r\n"):
        if line == "Step: enter":
            out += ["Step: prompt", "Try: 1"]
        elif line.startswith("Invalid: "):
            out.append("Choice: invalid")
        elif line == "Timeout: yes":
            out.append("Choice: timeout")
        else:
            out.append(line)
    return "\r\n".join(out)


def test_another_sites_ivr_words_count_invalid_keys_and_silences(tmp_path: Path) -> None:
    ours = replay_files([PBX / "ivr_invalid_timeout_fallback.ami"]).to_json()["stats"]["ivr"]
    parts = [_another_sites_ivr(b) for b in blocks(PBX / "ivr_invalid_timeout_fallback.ami")]
    theirs = replay_files([write(tmp_path / "their_words.ami", parts)]).to_json()["stats"]["ivr"]
    # Before: two choices named "invalid" and one named "timeout", and no invalid or timeout.
    assert theirs["menus"]["main"] == ours["menus"]["main"]
    assert (theirs["menus"]["main"]["invalid"], theirs["menus"]["main"]["timeout"]) == (2, 1)
    assert theirs["menus"]["main"]["choices"] == {}


def test_ivr_vocabulary_is_a_setting() -> None:
    from cti.calls.ivr import IvrVocabulary

    words = IvrVocabulary.from_lists("SVI", invalid_words=["erreur"], timeout_words=["sans_saisie"])
    assert words.classify({"Choix": "1", "Choice": "erreur"}) == ("invalid", "")
    assert words.classify({"Choice": "sans_saisie"}) == ("timeout", "yes")
    assert words.classify({"Choice": "invalid"}) == ("choice", "invalid")  # not their word
    assert words.classify({"Step": "prompt", "Try": "2"}) == ("step", "reprompt")
    assert words.classify({"Node": "accueil", "Step": "prompt"}) == ("enter", "enter")
    assert words.menu({"Node": "accueil"}) == "accueil"


def test_a_recording_that_starts_mid_call_adopts_what_its_lists_say_is_up(tmp_path: Path) -> None:
    # mid_call_connection: a client logs in while a caller talks to agent 1001 and asks
    # CoreShowChannels and QueueStatus at once. Cut right after the lists, before any event
    # of the call: the replay still knows the call is there (before: 0 calls).
    parts = blocks(PBX / "mid_call_connection.ami")
    end = next(i for i, b in enumerate(parts) if "Event: QueueStatusComplete" in b)
    result = replay_files([write(tmp_path / "lists_only.ami", parts[: end + 1])])
    assert not result.records
    [call] = result.open_calls
    assert call.caller_raw == "0612345678"
    # The whole recording: the same call, ended, with Asterisk's own figures.
    [whole] = replay_files([PBX / "mid_call_connection.ami"]).records
    assert whole.linkedid == call.linkedid and whole.outcome == "answered" and whole.agent == "Agent 1001"


def test_a_call_whose_hangups_never_came_is_closed_by_the_reconcile() -> None:
    from cti.calls.events import CallEnded
    from cti.calls.tracker import CallTracker

    # The recorded ring-all call, up to the agent's answer only: its hangups were lost.
    parts = blocks(PBX / "ring_all.ami")
    cut = next(i for i, b in enumerate(parts) if "Event: AgentConnect" in b)
    tracker = CallTracker("pbx1")
    from cti.ami.parser import AmiParser

    for message in AmiParser().feed(("\r\n\r\n".join(parts[: cut + 1]) + "\r\n\r\n").encode()):
        tracker.feed(message)
    [open_call] = [r for r in tracker.open_calls() if r.direction == "inbound"]
    # CoreShowChannels lists none of its channels any more.
    gone = tracker.calls_gone([], tracker.last_event_at)
    assert [r.linkedid for r in gone] == [open_call.linkedid]
    events = tracker.resync([], [], tracker.last_event_at + 300, closed_by="reconcile")
    [ended] = [
        e.record for e in events if isinstance(e, CallEnded) and e.record.linkedid == open_call.linkedid
    ]
    assert ended.closed_by == "reconcile" and tracker.calls.get(open_call.linkedid) is None


def test_live_calls_are_capped_oldest_first() -> None:
    from cti.ami.message import Message
    from cti.calls.events import CallEnded
    from cti.calls.tracker import CallTracker

    tracker = CallTracker("pbx1", max_calls=1000)
    ended = []
    for n in range(5000):  # a million in production: every one without its hangup
        uid = f"1796000000.{n}"
        for event in tracker.feed(
            Message(Event="Newchannel", Uniqueid=uid, Linkedid=uid, Channel=f"PJSIP/trunk-{n:08x}"),
            1796000000.0 + n,
        ):
            if isinstance(event, CallEnded):
                ended.append(event.record)
    assert len(tracker.calls) == 1000 and len(tracker.channels) == 1000
    assert len(ended) == 4000 and ended[0].linkedid == "1796000000.0"
    assert {r.closed_by for r in ended} == {"evicted"} and tracker.evicted == 4000


def test_older_asterisks_pause_event_name_and_reason_header(tmp_path: Path) -> None:
    # Asterisk up to 11 sent QueueMemberPaused with Reason:; 12.2 renamed it QueueMemberPause
    # and 13 added PausedReason (16 sends both). The recorded *432 pause in the old form.
    from cti.calls.events import AgentStateChanged

    parts = []
    for block in blocks(PBX / "feature_codes.ami"):
        if "Event: QueueMemberPause\r\n" in block:
            block = block.replace("Event: QueueMemberPause\r\n", "Event: QueueMemberPaused\r\n")
            block = block.replace("PausedReason: ", "Reason: ")
        parts.append(block)
    reasons: set[str | None] = set()

    def seen(event: object) -> None:
        if isinstance(event, AgentStateChanged) and event.paused:
            reasons.add(event.paused_reason)

    replay_files([write(tmp_path / "old_pause.ami", parts)], on_event=seen)
    assert reasons == {"lunch"}
