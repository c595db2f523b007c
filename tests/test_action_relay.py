"""Agent actions relayed to the node that owns the server's stream (action_relay.py,
calls/action_wire.py; docs/scale-out.md, "Actions to the right PBX").

Against the real NATS on 127.0.0.1:4222, each test with an action prefix of its own: two relays
in this process, one owning the server (its "link" records what it is asked to send), the other
asking. The wire format alone, the routing by configured phones and the settings need no NATS.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cti.action_relay import ActionRelay, OwnerUnreachable, RoutedLink
from cti.ami.actions import ActionError, ActionTimeout, LinkDown
from cti.ami.message import Message
from cti.calls.action_wire import ActionReply, ActionRequest, WireError, wire_headers
from cti.calls.controls import ControlRefused, Phone, ami_guard
from cti.calls.pbxs import AmbiguousServer, Pbx, PbxMap
from cti.calls.tracker import CallTracker
from cti.config import AsteriskServer, BusSettings, ConfigError, load_settings
from test_bus_jetstream import NATS_URL, _nats_up
from test_daemon import until

needs_nats = pytest.mark.skipif(not _nats_up(), reason="no NATS server on 127.0.0.1:4222")
SERVER = AsteriskServer(name="paris", action_timeout_s=1.0)


@dataclass
class RecordingLink:
    """What an owner's AMI link is asked to send; answers as told."""

    server: AsteriskServer = SERVER
    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    fail: BaseException | None = None
    delay_s: float = 0.0

    async def send(self, action: str, headers: Mapping[str, Any] | None = None, /, **more: Any) -> Message:
        return (await self.send_list(action, headers, **more))[0]

    async def send_list(
        self, action: str, headers: Mapping[str, Any] | None = None, /, **more: Any
    ) -> tuple[Message, list[Message]]:
        self.sent.append((action, dict(headers or {})))
        await asyncio.sleep(self.delay_s)
        if self.fail is not None:
            raise self.fail
        items = [Message({"Event": "CoreShowChannel", "Channel": "PJSIP/1001-0000002a"})]
        return Message({"Response": "Success", "Message": f"{action} done"}), items


@dataclass
class Pair:
    owner: ActionRelay
    asker: ActionRelay
    link: RecordingLink
    owns: dict[str, bool]


@asynccontextmanager
async def relays(timeout_s: float = 1.0) -> AsyncIterator[Pair]:
    prefix = f"cti-test-actions-{uuid.uuid4().hex[:10]}"
    settings = BusSettings(nats_url=NATS_URL, action_prefix=prefix, timeout_s=timeout_s)
    link = RecordingLink()
    owns = {"owner": True, "asker": False}
    owner = ActionRelay(settings, "owner", lambda s: owns["owner"], {"paris": link})  # type: ignore[dict-item]
    asker = ActionRelay(settings, "asker", lambda s: owns["asker"], {"paris": RecordingLink()})  # type: ignore[dict-item]
    tasks = [asyncio.create_task(r.run()) for r in (owner, asker)]
    try:
        await until(lambda: "paris" in owner._subscriptions and asker._nc is not None, 10)
        yield Pair(owner, asker, link, owns)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(asyncio.CancelledError):
                await task


# ---------------------------------------------------------------------------------- the wire
def request(**change: Any) -> ActionRequest:
    base = ActionRequest(
        id="node-b-1",
        server="paris",
        action="Originate",
        headers=wire_headers({"Channel": "PJSIP/1001", "Timeout": 30000, "Variable": {"CTI_DIAL": "+33612"}}),
        listing=False,
        timeout_s=5.0,
        sent_at=time.time(),
        origin="node-b",
    )
    return ActionRequest(**{**base.__dict__, **change})


def test_a_request_and_a_reply_read_back_as_written() -> None:
    sent = request(headers=wire_headers({"A": None, "B": ["x", "y"], "C": 3}))
    assert ActionRequest.decode(sent.encode()) == sent
    assert sent.headers == {"A": None, "B": ["x", "y"], "C": "3"}
    reply = ActionReply("node-b-1", "ok", "", {"Response": "Success"}, [{"Event": "X"}])
    assert ActionReply.decode(reply.encode()) == reply


@pytest.mark.parametrize(
    "data,message",
    [
        (b"nope", "request: not JSON"),
        (b"[1]", "request: not a JSON object"),
        (b'{"v": 2}', "request: wire version 2, this node reads 1"),
        (request(id=7).encode(), "id: expected text, got 7"),  # type: ignore[arg-type]
        (request(listing="yes").encode(), "listing: expected true or false"),  # type: ignore[arg-type]
        (request(timeout_s=True).encode(), "timeout_s: expected a number"),
        (request(headers={"A": {"b": 1}}).encode(), "request: headers must map names"),  # type: ignore[dict-item]
    ],
)
def test_an_unreadable_request_says_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(WireError) as caught:
        ActionRequest.decode(data)
    assert str(caught.value).startswith(message), str(caught.value)


def test_an_unknown_outcome_is_unreadable() -> None:
    with pytest.raises(WireError, match="unknown outcome 'maybe'"):
        ActionReply.decode(b'{"v": 1, "id": "x", "outcome": "maybe", "message": ""}')


# ------------------------------------------------------------------------- routing and settings
def test_configured_phones_route_where_the_trackers_know_nothing() -> None:
    """A node that owns no stream tracks nothing: the `phones` patterns say where a phone is."""
    paris, lyon = CallTracker("paris", "FR", 2.0), CallTracker("lyon", "FR", 2.0)
    pbxs = PbxMap(
        [
            Pbx("paris", "link-paris", paris, ("PJSIP/1*", "Local/*@paris-agents/n")),
            Pbx("lyon", "link-lyon", lyon, ("PJSIP/2*",)),
        ]
    )
    assert pbxs.for_phone(Phone(("PJSIP/2001",))).name == "lyon"
    assert pbxs.for_phone(Phone(("Local/agent1@paris-agents/n",))).name == "paris"
    assert pbxs.for_phone(Phone((), ("PJSIP/1042",))).name == "paris"
    with pytest.raises(AmbiguousServer):
        pbxs.for_phone(Phone(("PJSIP/1001",), ("PJSIP/2001",)))
    with pytest.raises(ControlRefused) as caught:
        pbxs.for_phone(Phone(("PJSIP/3001",)))
    assert caught.value.error_id == "unknown-server"


def test_the_action_prefix_stays_out_of_the_stream() -> None:
    assert load_settings(None, {"CTI_BUS_ACTION_PREFIX": "site.actions"}).bus.action_prefix == "site.actions"
    for prefix in ("cti.events", "cti.events.actions"):
        with pytest.raises(ConfigError, match=re.escape("under subject_prefix 'cti.events'")):
            load_settings(None, {"CTI_BUS_ACTION_PREFIX": prefix})
    phones = load_settings(None, {"CTI_AMI_PHONES": "PJSIP/1*, Local/*@agents/n"}).asterisk[0].phones
    assert phones == ("PJSIP/1*", "Local/*@agents/n")


async def test_without_a_relay_the_link_is_used_as_before() -> None:
    link = RecordingLink()
    routed = RoutedLink(link, None)  # type: ignore[arg-type]
    assert (await routed.send("QueuePause", {"Interface": "PJSIP/1001"}))["Response"] == "Success"
    assert link.sent == [("QueuePause", {"Interface": "PJSIP/1001"})]


# ------------------------------------------------------------------------------ over NATS
@needs_nats
async def test_an_action_goes_to_the_owner_once_and_its_answer_comes_back() -> None:
    async with relays() as pair:
        asker_link = RoutedLink(pair.asker.links["paris"], pair.asker)
        reply = await asker_link.send(
            "Originate",
            {"Channel": "PJSIP/1001", "Variable": {"CTI_DIAL": "+33612345678"}, "ActionID": "a-1"},
        )
        assert reply["Message"] == "Originate done"
        _, items = await asker_link.send_list("CoreShowChannels")
        assert [i["Channel"] for i in items] == ["PJSIP/1001-0000002a"]
        assert pair.link.sent == [
            (
                "Originate",
                {"Channel": "PJSIP/1001", "Variable": {"CTI_DIAL": "+33612345678"}, "ActionID": "a-1"},
            ),
            ("CoreShowChannels", {}),
        ]
        assert pair.asker.links["paris"].sent == []  # type: ignore[attr-defined]
        assert (pair.owner.served, pair.asker.forwarded) == (2, 2)


@needs_nats
async def test_the_owners_refusals_come_back_as_the_link_would_raise_them() -> None:
    async with relays() as pair:
        asker = RoutedLink(pair.asker.links["paris"], pair.asker)
        cases: list[tuple[BaseException, type[BaseException], str]] = [
            (ActionError("Hangup", "No such channel"), ActionError, "No such channel"),
            (ActionTimeout("Hangup: no answer within 1s"), ActionTimeout, "no answer"),
            (LinkDown("Hangup: AMI link to paris is not up"), LinkDown, "not up"),
        ]
        for fail, kind, text in cases:
            pair.link.fail = fail
            with pytest.raises(kind, match=text) as caught:
                await asker.send("Hangup", {"Channel": "PJSIP/1001-01"})
            assert not isinstance(caught.value, OwnerUnreachable)
        pair.link.fail = None
        with pytest.raises(ActionError, match="'Command' is not relayed"):
            await asker.send("Command", {"Command": "core stop now"})
        assert [a for a, _ in pair.link.sent] == ["Hangup"] * 3  # never the Command
        # What the web layer answers for each.
        refusal = await _refused(
            asker.send("Hangup", {"Channel": "x"}), ActionError("Hangup", "No such channel"), pair
        )
        assert (refusal.status, refusal.error_id) == (409, "no-live-call")


async def _refused(pending: Any, fail: BaseException, pair: Pair) -> ControlRefused:
    pair.link.fail = fail
    try:
        await ami_guard(pending, "no-live-call")
    except ControlRefused as exc:
        return exc
    raise AssertionError("not refused")


@needs_nats
async def test_a_request_id_seen_again_is_answered_without_sending_twice() -> None:
    async with relays() as pair:
        pair.link.delay_s = 0.3
        first = request(action="QueuePause", headers={"Interface": "PJSIP/1001", "Paused": "true"})
        replies = await asyncio.gather(pair.owner.execute(first), pair.owner.execute(first))
        again = await pair.owner.execute(first)
        assert {r.outcome for r in (*replies, again)} == {"ok"}
        assert [a for a, _ in pair.link.sent] == ["QueuePause"]
        assert pair.owner.repeats == 2


@needs_nats
async def test_a_request_that_reaches_the_owner_too_late_is_not_sent() -> None:
    """The owner frozen with requests waiting: thawed, it does not do what was answered 503."""
    async with relays(timeout_s=1.0) as pair:
        late = request(action="QueuePause", sent_at=time.time() - 5)
        reply = await pair.owner.execute(late)
        assert reply.outcome == "expired" and pair.link.sent == []


@needs_nats
async def test_no_owner_is_a_503_owner_unreachable_in_bounded_time() -> None:
    async with relays(timeout_s=0.5) as pair:
        pair.owns["owner"] = False  # it lets go: unsubscribed within SYNC_S
        await until(lambda: "paris" not in pair.owner._subscriptions, 5)
        asker = RoutedLink(pair.asker.links["paris"], pair.asker)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ControlRefused) as caught:
            await ami_guard(asker.send("QueuePause", {"Interface": "PJSIP/1001"}), "pause-refused")
        # The action's timeout (1 s) plus [bus] timeout_s (0.5 s), and some slack for a busy box.
        assert loop.time() - started < 10
        assert (caught.value.status, caught.value.error_id) == (503, "owner-unreachable")
        assert "no node owns" in str(caught.value)
        assert pair.link.sent == [] and pair.asker.unreachable == 1


@needs_nats
async def test_a_takeover_during_the_wait_is_still_served() -> None:
    """Nobody owns the stream when the action is asked; the owner takes it within the wait."""
    async with relays(timeout_s=2.0) as pair:
        pair.owns["owner"] = False
        await until(lambda: "paris" not in pair.owner._subscriptions, 5)
        asker = RoutedLink(pair.asker.links["paris"], pair.asker)
        pending = asyncio.create_task(asker.send("QueuePause", {"Interface": "PJSIP/1001"}))
        await asyncio.sleep(0.5)
        pair.owns["owner"] = True
        assert (await pending)["Response"] == "Success"
        assert [a for a, _ in pair.link.sent] == ["QueuePause"]


@needs_nats
async def test_a_node_that_owns_the_stream_sends_on_its_own_link() -> None:
    async with relays() as pair:
        pair.owns["asker"] = True
        asker = RoutedLink(pair.asker.links["paris"], pair.asker)
        await asker.send("QueuePause", {"Interface": "PJSIP/1001"})
        assert pair.asker.links["paris"].sent == [("QueuePause", {"Interface": "PJSIP/1001"})]  # type: ignore[attr-defined]
        assert pair.link.sent == [] and pair.asker.forwarded == 0


def test_config_check_warns_of_several_servers_without_phones(tmp_path: Path) -> None:
    from cti.config_commands import review

    path = tmp_path / "cti.toml"
    path.write_text(
        '[ha]\nenabled = true\n[database]\nurl = "postgresql+asyncpg://cti@db/cti"\n'
        '[[asterisk]]\nname = "paris"\nphones = ["PJSIP/1*"]\n[[asterisk]]\nname = "lyon"\n'
    )
    said = {f.setting: f.text for f in review(load_settings(path, {}))}
    assert "asterisk[lyon].phones" in said and "409 unknown-server" in said["asterisk[lyon].phones"]
    assert "asterisk[paris].phones" not in said
    path.write_text('[ha]\nenabled = true\n[database]\nurl = "postgresql+asyncpg://cti@db/cti"\n')
    assert not [f for f in review(load_settings(path, {})) if f.setting.endswith(".phones")]
