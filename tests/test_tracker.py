"""Tracker behaviour beyond the straight replays: domain event sequences, resync, bad input, memory."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from cti.ami.message import Message
from cti.ami.parser import AmiParser
from cti.calls import events as ev
from cti.calls.queue_log import parse_lines
from cti.calls.records import CallRecord
from cti.calls.tracker import CallTracker

CAPTURES = Path(__file__).resolve().parent / "captures" / "lab"
pytestmark = pytest.mark.skipif(not CAPTURES.is_dir(), reason="tests/captures/lab is missing")


def messages(name: str) -> list[Message]:
    parser = AmiParser()
    return parser.feed((CAPTURES / f"{name}.ami").read_bytes())


def run(tracker: CallTracker, msgs: list[Message]) -> list[ev.Event]:
    out: list[ev.Event] = []
    for m in msgs:
        out.extend(tracker.feed(m))
    return out


def kinds(events: list[ev.Event], *wanted: type[ev.Event]) -> list[str]:
    return [e.kind for e in events if isinstance(e, wanted)] if wanted else [e.kind for e in events]


def test_answered_call_emits_the_domain_story_in_order() -> None:
    events = run(CallTracker(), messages("inbound_answered"))
    story = [e.kind for e in events if not isinstance(e, ev.CallerIdentified | ev.AgentStateChanged)]
    assert story == [
        "call_started",
        "originate_result",
        "ivr_step",
        "ivr_step",
        "queue_joined",
        "agent_ringing",
        "queue_left",
        "call_answered",
        "agent_completed",
        "call_ended",
    ]
    ringing = next(e for e in events if isinstance(e, ev.AgentRinging))
    assert (ringing.queue, ringing.agent, ringing.interface) == ("support", "Agent1", "Local/agent1@agents/n")
    assert ringing.caller_e164 == "+33612345678"


def test_ringall_losers_get_ring_stopped_answered_elsewhere() -> None:
    events = run(CallTracker(), messages("inbound_ringall_answered"))
    rang = {e.agent for e in events if isinstance(e, ev.AgentRinging)}
    assert rang == {"Agent1", "Agent3", "Agent4"}
    stopped = {e.agent: e.reason for e in events if isinstance(e, ev.AgentRingStopped)}
    assert stopped == {"Agent1": "answered_elsewhere", "Agent4": "answered_elsewhere"}
    answered = [e for e in events if isinstance(e, ev.CallAnswered)]
    assert [a.agent for a in answered] == ["Agent3"]


def test_ringall_abandon_stops_every_ringing_agent_as_caller_left() -> None:
    events = run(CallTracker(), messages("inbound_ringall_abandoned"))
    stopped = sorted((e.agent, e.reason) for e in events if isinstance(e, ev.AgentRingStopped))
    assert stopped == [("Agent2", "caller_left"), ("Agent6", "caller_left")]
    assert kinds(events, ev.CallAbandoned) == ["call_abandoned"]


def test_queue_timeout_is_not_an_abandon() -> None:
    events = run(CallTracker(), messages("inbound_queue_timeout"))
    assert kinds(events, ev.CallAbandoned) == []
    timeouts = [e for e in events if isinstance(e, ev.QueueTimedOut)]
    assert [(t.queue, t.status) for t in timeouts] == [("billing", "timeout")]
    no_answer = [e for e in events if isinstance(e, ev.AgentRingStopped) and e.reason == "no_answer"]
    assert [round(e.ring_s or 0) for e in no_answer] == [6, 3]  # RingTime is in milliseconds


def test_transfers_keep_one_call_identity() -> None:
    for name, kind in (("inbound_blind_transfer", "blind"), ("inbound_attended_transfer", "attended")):
        events = run(CallTracker(), messages(name))
        transfers = [e for e in events if isinstance(e, ev.CallTransferred)]
        assert [(t.transfer, t.from_agent) for t in transfers] == [(kind, "Agent4")]
        ended = [e for e in events if isinstance(e, ev.CallEnded)]
        assert len(ended) == 1 and ended[0].linkedid == transfers[0].linkedid


def test_memory_is_bounded_finished_calls_leave_the_tracker() -> None:
    tracker = CallTracker()
    ended = run(tracker, messages("mixed_seed1"))
    assert len([e for e in ended if isinstance(e, ev.CallEnded)]) == 40
    assert tracker.calls == {} and tracker.channels == {}


def _until(msgs: list[Message], event: str, uid_prefix: str = "") -> tuple[list[Message], list[Message]]:
    for i, m in enumerate(msgs):
        if m.get("Event") == event and m.get("Channel", "").startswith(uid_prefix):
            return msgs[: i + 1], msgs[i + 1 :]
    raise AssertionError(event)


def test_call_that_ended_during_the_gap_is_closed_and_marked_resync() -> None:
    tracker = CallTracker()
    before, _after = _until(messages("inbound_answered"), "AgentCalled")
    run(tracker, before)
    assert len(tracker.calls) == 1
    events = tracker.resync([], [], at=1795389630.0)
    ended = [e for e in events if isinstance(e, ev.CallEnded)]
    assert len(ended) == 1
    record = ended[0].record
    assert record.closed_by == "resync"
    assert record.segments[0].outcome == "unknown"
    assert tracker.calls == {}


def test_queue_log_gives_the_gap_call_its_true_outcome() -> None:
    tracker = CallTracker()
    before, _after = _until(messages("inbound_answered"), "AgentCalled")
    run(tracker, before)
    # What Asterisk writes for this call (callid = the queue channel's uniqueid, ;2 half).
    lines = [
        "1795389613|1795389610.9|support|Agent1|CONNECT|2|1795389611.10|2",
        "1795389619|1795389610.9|support|Agent1|COMPLETEAGENT|2|6|1",
    ]
    events = tracker.resync([], [], at=1795389630.0, queue_log=parse_lines(lines))
    record = next(e for e in events if isinstance(e, ev.CallEnded)).record
    assert record.closed_by == "queue_log"
    assert (record.outcome, record.agent, record.wait_s, record.hangup_by) == (
        "answered",
        "Agent1",
        2.0,
        "agent",
    )
    assert record.talk_s is not None and abs(record.talk_s - 6) <= 1


def test_first_connect_adopts_a_call_in_progress_without_duplicating_it() -> None:
    """reconnect_part2 alone: the daemon starts while a call is in conversation."""
    msgs = messages("reconnect_part2")
    lists: dict[str, list[Message]] = {}
    live: list[Message] = []
    for m in msgs:
        aid = m.get("ActionID", "")
        if aid.startswith(("coreshowchannels", "queuestatus")) and "Event" in m:
            lists.setdefault(aid.split("-")[0], []).append(m)
        elif "Event" in m:
            live.append(m)
    tracker = CallTracker()
    events = tracker.resync(lists["coreshowchannels"], lists["queuestatus"], at=1795389597.0)
    assert len(tracker.calls) == 1
    assert kinds(events, ev.CallStarted) == ["call_started"]
    members = [e for e in events if isinstance(e, ev.AgentStateChanged)]
    assert {m.queue for m in members} == {"billing", "outbound", "support", "sales"}
    events = run(tracker, live)
    ended = [e for e in events if isinstance(e, ev.CallEnded)]
    assert len(ended) == 1
    r = ended[0].record
    assert (r.linkedid, r.outcome, r.agent, r.closed_by) == ("1795389589.4", "answered", "Agent4", "events")
    assert r.talk_s is not None and abs(r.talk_s - 12) <= 1
    assert kinds(events, ev.CallStarted) == []


def test_channel_born_after_the_snapshot_is_not_closed_by_it() -> None:
    tracker = CallTracker()
    before, _ = _until(messages("inbound_answered"), "QueueCallerJoin")
    run(tracker, before)
    snapshot_at = 1795389611.0  # before the agent channels were created (…611.429)
    agent, _ = _until(messages("inbound_answered"), "AgentCalled")
    run(tracker, agent[len(before) :])
    caller_channels = [
        Message(Event="CoreShowChannel", Uniqueid=u, Linkedid="1795389610.8", Channel=c)
        for u, c in (("1795389610.8", "Local/s@ivr-00000004;1"), ("1795389610.9", "Local/s@ivr-00000004;2"))
    ]
    tracker.resync(caller_channels, [], at=1795389612.0, snapshot_at=snapshot_at)
    call = tracker.calls["1795389610.8"]
    assert len(call.channels) == 4  # both caller halves, and the agent pair born after the snapshot


@pytest.mark.parametrize(
    "raw,e164",
    [
        ("anonymous", None),
        ("", None),
        ("+", None),
        ("0612345678", "+33612345678"),
        ("+212661234567", "+212661234567"),
        ("00212661234567", "+212661234567"),
        ("12", None),
        ("<unknown>", None),
        ("Zoë", None),
    ],
)
def test_odd_caller_ids_never_crash_and_normalise(raw: str, e164: str | None) -> None:
    tracker = CallTracker()
    events = tracker.feed(
        Message(
            Event="Newchannel",
            Uniqueid="1.1",
            Linkedid="1.1",
            Channel="PJSIP/trunk-00000001",
            CallerIDNum=raw,
            Timestamp="1.0",
        )
    )
    events += tracker.feed(
        Message(
            Event="Hangup",
            Uniqueid="1.1",
            Linkedid="1.1",
            Channel="PJSIP/trunk-00000001",
            Cause="16",
            Timestamp="2.0",
        )
    )
    record = next(e for e in events if isinstance(e, ev.CallEnded)).record
    assert record.caller_e164 == e164


def test_garbage_and_shuffled_traffic_never_raises() -> None:
    rng = random.Random(7)
    base = messages("mixed_seed1")
    bad = [
        Message(),
        Message(Event="AgentConnect"),
        Message(Event="Hangup", Uniqueid="x"),
        Message(Event="QueueCallerJoin", Uniqueid="y", Linkedid="y", Position="abc", Count="?"),
        Message(Event="AgentComplete", Uniqueid="z", Linkedid="z", TalkTime="NaNx", HoldTime=""),
        Message(Event="OriginateResponse", Reason="zz", Channel=""),
        Message(Event="UserEvent", UserEvent="IVR"),
        Message(Event="QueueMemberStatus"),
        Message(Event="Newchannel", Uniqueid="q", Timestamp="bad"),
    ]
    for _ in range(3):
        msgs = base[:]
        rng.shuffle(msgs)
        msgs[::50] = [rng.choice(bad) for _ in msgs[::50]]
        tracker = CallTracker()
        run(tracker, msgs)
        tracker.close_all(2e9, "shutdown")
        tracker.flush()
        assert tracker.calls == {}


def test_shutdown_event_closes_calls_as_cut_by_the_pbx() -> None:
    tracker = CallTracker()
    before, _ = _until(messages("inbound_answered"), "AgentConnect")
    run(tracker, before)
    events = tracker.feed(
        Message(Event="Shutdown", Shutdown="Cleanly", Restart="True", Timestamp="1795389615.0")
    )
    record = next(e for e in events if isinstance(e, ev.CallEnded)).record
    assert (record.outcome, record.hangup_by, record.closed_by) == ("answered", "pbx", "pbx_restart")


def test_originate_response_after_the_hangups_still_decides_the_outcome() -> None:
    msgs = messages("outbound_busy")
    response = next(m for m in msgs if m.get("Event") == "OriginateResponse")
    reordered = [m for m in msgs if m is not response] + [response]
    tracker = CallTracker()
    events = run(tracker, reordered)
    record = next(e for e in events if isinstance(e, ev.CallEnded)).record
    assert record.outcome == "outbound_busy"


def test_originate_response_that_never_comes_closes_after_the_grace() -> None:
    msgs = [m for m in messages("outbound_noanswer") if m.get("Event") != "OriginateResponse"]
    tracker = CallTracker(originate_grace_s=10)
    assert not [e for e in run(tracker, msgs) if isinstance(e, ev.CallEnded)]
    last = tracker.last_event_at
    assert tracker.tick(last + 5) == []
    record = next(e for e in tracker.tick(last + 11) if isinstance(e, ev.CallEnded)).record
    assert record.outcome == "outbound_unknown"


def test_failed_originate_with_no_channel_is_still_recorded() -> None:
    tracker = CallTracker()
    events = tracker.feed(
        Message(
            Event="OriginateResponse",
            Response="Failure",
            Channel="PJSIP/0612345678@trunk",
            Uniqueid="<unknown>",
            Reason="0",
            ActionID="dial-9",
            Timestamp="5.0",
        )
    )
    record = next(e for e in events if isinstance(e, ev.CallEnded)).record
    assert (record.outcome, record.called, record.originate_action_id) == (
        "outbound_failed",
        "0612345678",
        "dial-9",
    )


def test_calls_open_at_daemon_stop_are_restored_and_adopted_after_restart() -> None:
    """Daemon stopped mid-call (after the IVR, agent ringing); restarted while the call goes on."""
    first = CallTracker()
    before, _ = _until(messages("reconnect_part1"), "AgentCalled")
    run(first, before)
    open_records = first.open_calls()
    assert len(open_records) == 1

    second = CallTracker()
    second.restore(open_records)
    lists: dict[str, list[Message]] = {}
    live: list[Message] = []
    for m in messages("reconnect_part2"):
        aid = m.get("ActionID", "")
        if aid.startswith(("coreshowchannels", "queuestatus")) and "Event" in m:
            lists.setdefault(aid.split("-")[0], []).append(m)
        elif "Event" in m:
            live.append(m)
    events = second.resync(lists["coreshowchannels"], lists["queuestatus"], at=1795389597.0)
    assert kinds(events, ev.CallStarted) == []  # not a new call: the restored one
    events = run(second, live)
    record = next(e for e in events if isinstance(e, ev.CallEnded)).record
    assert record.ivr_path[-1].value == "1"  # what was seen before the restart is kept
    assert (record.outcome, record.agent, record.closed_by) == ("answered", "Agent4", "events")


def test_restored_call_that_ended_while_down_is_closed_by_the_resync() -> None:
    first = CallTracker()
    before, _ = _until(messages("inbound_answered"), "AgentCalled")
    run(first, before)
    second = CallTracker()
    second.restore(first.open_calls())
    events = second.resync([], [], at=1795389700.0)
    record = next(e for e in events if isinstance(e, ev.CallEnded)).record
    assert record.closed_by == "resync" and record.linkedid == "1795389610.8"


# ---------------------------------------------------------------- originate paths on a real PBX
# Transcripts trimmed from real Asterisk 22.10.1 traffic (the tier's lab: shipped dialplans, SIPp
# phones and PSTN): the headers the tracker reads, the timestamps as they were.
def _click_to_call(*, customer: str = "ANSWER", first_to_hang_up: str = "customer") -> list[Message]:
    """POST /api/agent/call: Originate PJSIP/1001 into cti-click-to-call (CTI_DIAL=+33612345678);
    the agent answers after 3 s, then their phone dials the customer through the trunk."""
    agent = {"Channel": "PJSIP/1001-00000001", "Uniqueid": "1796590173.1", "Linkedid": "1796590173.1"}
    trunk = {"Channel": "PJSIP/trunk-00000002", "Uniqueid": "1796590176.2", "Linkedid": "1796590173.1"}
    dest = {"DestChannel": trunk["Channel"], "DestUniqueid": trunk["Uniqueid"], "DestAccountCode": ""}
    msgs = [
        Message(Event="Newchannel", **agent, CallerIDNum="1001", Exten="s", Timestamp="1796590173.160115"),
        Message(Event="DialBegin", DestChannel=agent["Channel"], DestUniqueid=agent["Uniqueid"],
                DestLinkedid=agent["Linkedid"], DestAccountCode="", DialString="1001",
                Timestamp="1796590173.160996"),
        Message(Event="DialEnd", DestChannel=agent["Channel"], DestUniqueid=agent["Uniqueid"],
                DialStatus="ANSWER", Timestamp="1796590176.167872"),
        Message(Event="OriginateResponse", ActionID="cti-click-abc", Response="Success",
                Channel=agent["Channel"], Context="cti-click-to-call", Exten="s", Reason="4",
                Uniqueid=agent["Uniqueid"], CallerIDNum="<unknown>", Timestamp="1796590176.167907"),
        Message(Event="Newchannel", **trunk, CallerIDNum="<unknown>", Exten="s",
                Timestamp="1796590176.168688"),
        Message(Event="NewCallerid", **trunk, CallerIDNum="+33187654321", Timestamp="1796590176.168925"),
        Message(Event="DialBegin", **agent, **dest, DialString="+33612345678@trunk",
                Timestamp="1796590176.170580"),
    ]  # fmt: skip
    if customer != "ANSWER":  # busy: the dialplan hangs the agent's phone up
        return [
            *msgs,
            Message(Event="Hangup", **trunk, Cause="17", Timestamp="1796590177.18"),
            Message(Event="DialEnd", **agent, **dest, DialStatus=customer, Timestamp="1796590177.183395"),
            Message(Event="SoftHangupRequest", **agent, Cause="16", Timestamp="1796590177.19"),
            Message(Event="Hangup", **agent, Cause="16", Timestamp="1796590177.20"),
        ]
    msgs += [
        Message(Event="DialEnd", **agent, **dest, DialStatus="ANSWER", Timestamp="1796590177.183395"),
        Message(Event="BridgeEnter", **trunk, Timestamp="1796590177.183808"),
        Message(Event="BridgeEnter", **agent, Timestamp="1796590177.183926"),
    ]
    first, second = (trunk, agent) if first_to_hang_up == "customer" else (agent, trunk)
    return [
        *msgs,
        Message(Event="HangupRequest", **first, Cause="16", Timestamp="1796590183.523799"),
        Message(Event="Hangup", **first, Cause="16", Timestamp="1796590183.524282"),
        Message(Event="SoftHangupRequest", **second, Cause="16", Timestamp="1796590183.524469"),
        Message(Event="Hangup", **second, Cause="16", Timestamp="1796590183.524998"),
    ]


def _ended(msgs: list[Message]) -> CallRecord:
    events = run(CallTracker(), msgs)
    [record] = [e.record for e in events if isinstance(e, ev.CallEnded)]
    return record


def test_click_to_call_records_the_customer_called_and_the_conversation_with_them() -> None:
    record = _ended(_click_to_call())
    # The agent's phone is the originated leg: the number called is the one it dialled, the
    # answer is the customer's (not the agent's, 1 s earlier), and the customer hung up.
    assert (record.direction, record.called) == ("outbound", "+33612345678")
    assert record.outcome == "outbound_answered"
    assert record.answered_at == 1796590177.183395
    assert record.talk_s == round(1796590183.523799 - 1796590177.183395, 3)
    assert (record.hangup_by, record.agent_interface) == ("caller", "PJSIP/1001")
    assert (record.originate_action_id, record.campaign) == ("cti-click-abc", None)


def test_click_to_call_the_agent_hangs_up_first() -> None:
    record = _ended(_click_to_call(first_to_hang_up="agent"))
    assert (record.hangup_by, record.called) == ("agent", "+33612345678")


def test_click_to_call_to_a_busy_customer() -> None:
    record = _ended(_click_to_call(customer="BUSY"))
    assert (record.outcome, record.called, record.answered_at, record.talk_s) == (
        "outbound_busy", "+33612345678", None, None,
    )  # fmt: skip
    assert record.hangup_by == "caller"


def test_click_to_call_the_agent_does_not_pick_up() -> None:
    msgs = [
        *_click_to_call()[:2],
        Message(Event="Hangup", Channel="PJSIP/1001-00000001", Uniqueid="1796590173.1",
                Linkedid="1796590173.1", Cause="19", Timestamp="1796590203.2"),
        Message(Event="OriginateResponse", ActionID="cti-click-abc", Response="Failure",
                Channel="PJSIP/1001", Reason="3", Uniqueid="<unknown>", Timestamp="1796590203.3"),
    ]  # fmt: skip
    record = _ended(msgs)
    # Nobody was called: not the agent's own extension.
    assert (record.outcome, record.called, record.hangup_by) == ("outbound_no_answer", None, "system")


def _campaign_attempt(reason: str) -> list[Message]:
    """The dialer's Originate (Account cti-campaign:relance) to a callee who does not answer:
    Asterisk names the campaign in DestAccountCode before anything else happens."""
    half1 = {"Channel": "Local/+33612345678@cti-dialer-out-00000000;1", "Uniqueid": "1796590124.1",
             "Linkedid": "1796590124.1", "AccountCode": "cti-campaign:relance"}  # fmt: skip
    half2 = {**half1, "Channel": "Local/+33612345678@cti-dialer-out-00000000;2", "Uniqueid": "1796590124.2"}
    return [
        Message(Event="Newchannel", **{**half1, "AccountCode": ""}, CallerIDNum="<unknown>",
                Exten="+33612345678", Timestamp="1796590124.398989"),
        Message(Event="Newchannel", **{**half2, "AccountCode": ""}, CallerIDNum="<unknown>",
                Exten="+33612345678", Timestamp="1796590124.399026"),
        Message(Event="NewCallerid", **half1, CallerIDNum="+33187654321", Timestamp="1796590124.399100"),
        Message(Event="DialBegin", DestChannel=half1["Channel"], DestUniqueid=half1["Uniqueid"],
                DestLinkedid=half1["Linkedid"], DestAccountCode="cti-campaign:relance",
                DialString="+33612345678@cti-dialer-out", Timestamp="1796590124.399569"),
        Message(Event="Hangup", **half2, Cause="17", Timestamp="1796590126.40"),
        Message(Event="Hangup", **half1, Cause="17", Timestamp="1796590126.41"),
        Message(Event="OriginateResponse", ActionID="cti-dialer-1-1-abc", Response="Failure",
                Channel="Local/+33612345678@cti-dialer-out", Context="cti-dialer-connect", Exten="s",
                Reason=reason, Uniqueid="<unknown>", Timestamp="1796590126.42"),
    ]  # fmt: skip


@pytest.mark.parametrize(("reason", "outcome"), [("5", "busy"), ("3", "no_answer"), ("8", "congestion")])
def test_campaign_attempt_nobody_answered_is_filed_under_its_campaign(reason: str, outcome: str) -> None:
    record = _ended(_campaign_attempt(reason))
    assert (record.campaign, record.contact, record.called) == ("relance", None, "+33612345678")
    assert (record.outcome, record.direction) == (f"outbound_{outcome}", "outbound")
    assert record.caller_raw == "+33187654321"  # the campaign's caller ID


def test_an_accountcode_that_is_not_the_dialers_names_no_campaign() -> None:
    msgs = [
        Message({**m, "DestAccountCode": "site-billing-42"}) if m.get("Event") == "DialBegin" else m
        for m in _campaign_attempt("5")
    ]
    assert _ended(msgs).campaign is None


def test_a_gap_call_closed_from_queue_log_ends_when_queue_log_says_not_at_the_resync() -> None:
    tracker = CallTracker()
    before, _after = _until(messages("inbound_answered"), "AgentCalled")
    run(tracker, before)
    lines = [
        "1795389613|1795389610.9|support|Agent1|CONNECT|2|1795389611.10|2",
        "1795389619|1795389610.9|support|Agent1|COMPLETEAGENT|2|6|1",
    ]
    # The link came back 11 s after the agent hung up.
    events = tracker.resync([], [], at=1795389630.0, queue_log=parse_lines(lines))
    record = next(e for e in events if isinstance(e, ev.CallEnded)).record
    assert record.ended_at == 1795389619.0
    assert record.talk_s == 6.0
