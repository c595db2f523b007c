"""Pop routing replayed from real captures: ring-all, abandons, transfers, privacy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cti.calls.events import CallStarted, Event
from cti.replay import replay_files
from cti.screenpop.router import PopRouter

CAPTURES = Path(__file__).resolve().parent / "captures" / "lab"
pytestmark = pytest.mark.skipif(not CAPTURES.is_dir(), reason="tests/captures/lab is missing")

USERS = {
    "Local/agent1@agents/n": "alice",
    "Local/agent2@agents/n": "bob",
    "Local/agent3@agents/n": "chloe",
    "Local/agent4@agents/n": "driss",
    "Local/agent6@agents/n": "fatima",
    "Local/2003@agents": "chloe",  # chloe's phone, dialed directly in the attended transfer
}


def route(capture: str) -> list[tuple[str, str, dict[str, Any]]]:
    router = PopRouter(USERS.get)
    out: list[tuple[str, str, dict[str, Any]]] = []

    def on_event(event: Event) -> None:
        for user, msg in router.feed(event):
            out.append((user, msg["type"], msg))

    replay_files([CAPTURES / f"{capture}.ami"], on_event=on_event)
    assert router.calls == {} and router.current == {}  # nothing left behind
    return out


def test_ringall_answered_pops_three_then_withdraws_the_two_losers() -> None:
    out = route("inbound_ringall_answered")
    assert [(u, t) for u, t, _ in out] == [
        ("driss", "pop"),
        ("chloe", "pop"),
        ("alice", "pop"),
        ("driss", "pop.withdraw"),
        ("alice", "pop.withdraw"),
        ("chloe", "pop.answered"),
        ("chloe", "pop.ended"),
    ]
    pop = out[0][2]["pop"]
    assert pop["caller"] == {
        "raw": "+33478123456",
        "e164": "+33478123456",
        "name": "Boulangerie Riviere",
        "withheld": False,
    }
    assert pop["queue"] == "hotline" and pop["ivr_path"] == ["main:enter=enter", "main:choice=5"]
    assert {m["reason"] for _, t, m in out if t == "pop.withdraw"} == {"answered_elsewhere"}
    # Every frame names its call by server and linkedid: two PBXs may name calls alike.
    ends = [m for _, t, m in out if t in ("pop.withdraw", "pop.ended")]
    assert {(m["server"], m["linkedid"]) for m in ends} == {(pop["server"], pop["linkedid"])}


def test_ringall_abandon_withdraws_every_pop() -> None:
    out = route("inbound_ringall_abandoned")
    assert sorted((u, t) for u, t, _ in out) == [
        ("bob", "pop"),
        ("bob", "pop.withdraw"),
        ("fatima", "pop"),
        ("fatima", "pop.withdraw"),
    ]
    assert {m["reason"] for _, t, m in out if t == "pop.withdraw"} == {"caller_left"}


def test_ring_no_answer_moves_the_pop_to_the_next_agent() -> None:
    out = route("inbound_ringnoanswer")
    assert [(u, t) for u, t, _ in out] == [
        ("bob", "pop"),
        ("bob", "pop.withdraw"),
        ("chloe", "pop"),
        ("chloe", "pop.answered"),
        ("chloe", "pop.ended"),
    ]


def test_blind_transfer_pops_at_the_new_agent_with_the_same_call() -> None:
    out = route("inbound_blind_transfer")
    assert [(u, t) for u, t, _ in out] == [
        ("driss", "pop"),
        ("driss", "pop.answered"),
        ("driss", "pop.transferred"),
        ("bob", "pop"),
        ("bob", "pop.withdraw"),
        ("chloe", "pop"),
        ("chloe", "pop.answered"),
        ("chloe", "pop.ended"),
    ]
    linkedids = {m.get("linkedid") or m["pop"]["linkedid"] for _, _, m in out}
    assert linkedids == {"1795390574.586"}


def test_attended_transfer_hands_the_pop_to_the_colleague_outside_any_queue() -> None:
    out = route("inbound_attended_transfer")
    assert [(u, t) for u, t, _ in out] == [
        ("driss", "pop"),
        ("driss", "pop.answered"),
        ("driss", "pop.transferred"),
        ("chloe", "pop.answered"),
        ("chloe", "pop.ended"),
    ]


def test_withheld_caller_is_flagged_and_unknown_interfaces_are_ignored() -> None:
    router = PopRouter({"Local/agent2@agents/n": "bob"}.get)
    out: list[tuple[str, dict[str, Any]]] = []
    replay_files([CAPTURES / "inbound_queue_timeout.ami"], on_event=lambda e: out.extend(router.feed(e)))
    assert {u for u, _ in out} == {"bob"}
    router = PopRouter({}.get)
    replay_files([CAPTURES / "inbound_answered.ami"], on_event=lambda e: out.extend(router.feed(e)))
    assert router.unknown_interfaces == {"Local/agent1@agents/n"}


def test_an_agent_only_ever_gets_their_own_pops() -> None:
    router = PopRouter(USERS.get)
    seen: dict[str, set[str]] = {}
    ringing_for: dict[str, set[str]] = {}

    def on_event(event: Event) -> None:
        if event.kind == "agent_ringing":
            ringing_for.setdefault(USERS[event.interface], set()).add(event.linkedid)  # type: ignore[attr-defined]
        for user, msg in router.feed(event):
            if msg["type"] == "pop":
                seen.setdefault(user, set()).add(msg["pop"]["linkedid"])

    replay_files([CAPTURES / "mixed_seed1.ami"], on_event=on_event)
    assert seen == ringing_for


def test_national_caller_ids_are_read_in_the_configured_region() -> None:
    # A Moroccan centre: 06… is a Moroccan mobile, not a French one.
    for region, e164 in (("MA", "+212612345678"), ("FR", "+33612345678")):
        router = PopRouter(USERS.get, region)
        router.feed(CallStarted("pbx", 1.0, "9.1", "inbound", "0612345678", None))
        assert router.calls["pbx", "9.1"].to_json(1.0)["caller"]["e164"] == e164


def test_two_pbxs_naming_two_calls_alike_keep_their_own_pops() -> None:
    """Linkedids are unique within one Asterisk only: one daemon hearing two PBXs keeps their
    calls apart by server (the end of pbx1's call withdraws nothing of pbx2's)."""
    from cti.calls.events import AgentRinging, CallEnded
    from cti.calls.records import CallRecord

    users = {"PJSIP/1001": "alice", "PJSIP/2001": "bob"}
    router = PopRouter(users.get)
    for server, caller, interface in (
        ("pbx1", "0612345678", "PJSIP/1001"),
        ("pbx2", "0698765432", "PJSIP/2001"),
    ):
        router.feed(CallStarted(server, 1.0, "1796617102.12", "inbound", caller, None))
        router.feed(
            AgentRinging(
                server, 2.0, "1796617102.12", "support", None, interface, f"{interface}-1", caller, None
            )
        )
    assert router.pop_for("alice", 3.0)["pop"]["caller"]["raw"] == "0612345678"  # type: ignore[index]
    assert router.pop_for("bob", 3.0)["pop"]["caller"]["raw"] == "0698765432"  # type: ignore[index]
    record = CallRecord("pbx1", "1796617102.12", "inbound", 1.0, 4.0)
    out = router.feed(CallEnded("pbx1", 4.0, "1796617102.12", record))
    assert [user for user, _ in out] == ["alice"]
    assert router.pop_for("alice", 5.0) is None
    assert router.pop_for("bob", 5.0) is not None and ("pbx2", "1796617102.12") in router.calls
