"""Call controls an agent applies to their own live call, as AMI actions: hang up, blind and
attended transfer (with the consultation's complete and cancel), DTMF.

Which channel is the agent's own is decided here, from Asterisk's own list of channels
(`CoreShowChannels`) and the agent's phones, never from a channel name the desktop sends: an
agent can only ever act on a channel of one of their own interfaces or devices.

Two kinds of phones, as the member interfaces name them:

- a device (`PJSIP/1001`): its channels are `PJSIP/1001-0000002a`; it sits in the caller's
  bridge itself, and every action is sent on it;
- a Local interface (`Local/agent1@agents/n`, the simulated PBX and sites that ring through a
  Local channel): its `;1` half is the queue member in the caller's bridge (transfers are sent
  on it, as in the captures `inbound_blind_transfer`, `inbound_attended_transfer`), its `;2`
  half is the phone (hang-up, DTMF, completing an attended transfer).

Where a transfer goes is a `TransferPlan`: the shipped dialplan's (`cti-agents`: colleagues by
extension, queues by 801..805, numbers in E.164) for devices, the Local interface's own context
for colleagues on Local interfaces.

This module knows AMI actions and channel names, nothing of HTTP (the web layer renders
`ControlRefused` from its `error_id` and `status`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import structlog

from cti.ami.actions import ActionError, ActionTimeout, LinkDown
from cti.ami.message import Message

log = structlog.get_logger(__name__)

TargetKind = Literal["agent", "queue", "number"]
LOCAL = re.compile(r"^Local/(?P<exten>[^@/]+)@(?P<context>[^/]+)(?:/n)?$")
QUEUE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DTMF = re.compile(r"^[0-9*#A-D]{1,32}$")
# Between two keyed digits: longer than a digit (100 ms), so Asterisk never defers one.
KEY_GAP_S = 0.25


class ControlRefused(Exception):
    """A control that cannot be done: no call of yours (404), Asterisk said no (409), the AMI link
    is down (503). Rendered by the web layer from `error_id` and `status`."""

    def __init__(self, message: str, error_id: str, status: int = 409, **details: Any) -> None:
        super().__init__(message)
        self.error_id, self.status, self.details = error_id, status, dict(details)


class AmiSender(Protocol):
    async def send(
        self, action: str, headers: Mapping[str, object] | None = None, /, **more: Any
    ) -> Message: ...
    async def send_list(
        self, action: str, headers: Mapping[str, object] | None = None, /, **more: Any
    ) -> tuple[Message, list[Message]]: ...


@dataclass(frozen=True)
class LiveChannel:
    """One channel as `CoreShowChannels` lists it."""

    name: str
    uniqueid: str
    linkedid: str
    bridge: str
    state: str
    application: str

    @classmethod
    def of(cls, item: Message) -> LiveChannel:
        return cls(
            name=item.get("Channel", ""),
            uniqueid=item.get("Uniqueid", ""),
            linkedid=item.get("Linkedid", ""),
            bridge=item.get("BridgeId", ""),
            state=item.get("ChannelStateDesc", ""),
            application=item.get("Application", ""),
        )


@dataclass(frozen=True)
class Phone:
    """What an agent owns on the PBX: its member interfaces and devices."""

    interfaces: tuple[str, ...]
    devices: tuple[str, ...] = ()

    def prefixes(self) -> list[str]:
        out = []
        for name in (*self.devices, *self.interfaces):
            local = LOCAL.match(name)
            if local:
                out.append(f"Local/{local['exten']}@{local['context']}-")
            elif name:
                out.append(f"{name}-")
        return out

    def owns(self, channel: str) -> bool:
        return any(channel.startswith(p) for p in self.prefixes())


@dataclass(frozen=True)
class AgentCall:
    """The agent's side of one live call: the channel in the caller's bridge (`member`) and
    the channel that is the phone (`phone`; the same channel for a device)."""

    linkedid: str
    member: LiveChannel
    phone: LiveChannel
    # Every channel of the call (same Linkedid), the agent's and the others'.
    channels: tuple[LiveChannel, ...] = ()

    @property
    def consulting(self) -> bool:
        """An attended transfer's consultation: the agent's member channel is bridged with
        someone else than the caller (a bridge no other channel of the first bridge is in)."""
        others = [c for c in self.channels if c.name not in (self.member.name, self.phone.name)]
        bridged = [c for c in others if c.bridge and c.bridge == self.member.bridge]
        return bool(bridged) and any(c.bridge and c.bridge != self.member.bridge for c in others)


def agent_call(
    channels: Iterable[LiveChannel], phone: Phone, linkedid: str | None = None
) -> AgentCall | None:
    """The agent's live call among Asterisk's channels: the one of `linkedid` when given, else
    the agent's call that is up (the newest when several)."""
    every = list(channels)
    own = [c for c in every if phone.owns(c.name) and (linkedid is None or c.linkedid == linkedid)]
    if not own:
        return None
    up = [c for c in own if c.state == "Up"] or own
    call_id = up[-1].linkedid
    mine = [c for c in own if c.linkedid == call_id]
    member = next((c for c in mine if c.name.endswith(";1")), None) or mine[-1]
    half = member.name[:-2] if member.name.endswith(";1") else None
    phone_channel = next((c for c in mine if half and c.name == f"{half};2"), member)
    return AgentCall(call_id, member, phone_channel, tuple(c for c in every if c.linkedid == call_id))


@dataclass(frozen=True)
class TransferPlan:
    """Where a transfer target is in the dialplan. Defaults: the shipped `cti-agents` context."""

    context: str = "cti-agents"
    queue_extens: Mapping[str, str] = field(
        default_factory=lambda: {
            "support": "801",
            "sales": "802",
            "billing": "803",
            "hotline": "804",
            "escalation": "805",
        }
    )
    # Colleagues and queues for agents on Local interfaces (the simulated PBX's `agents` and
    # `to-queue` contexts): a Local interface names its own context.
    local_queue_context: str = "to-queue"
    atxfer_code: str = "*2"  # features.conf `atxfer`

    def agent(self, colleague: Phone) -> tuple[str, str]:
        for name in (*colleague.devices, *colleague.interfaces):
            local = LOCAL.match(name)
            if local:
                return local["context"], local["exten"]
            tech, _, resource = name.partition("/")
            if tech == "PJSIP" and resource:
                return self.context, resource
        raise ControlRefused("this colleague has no phone to transfer to", "no-such-target", 404)

    def queue(self, queue: str, phone: Phone) -> tuple[str, str]:
        if not QUEUE_NAME.match(queue):
            raise ControlRefused(f"no such queue: {queue!r}", "no-such-target", 404)
        if any(LOCAL.match(i) for i in phone.interfaces) and not phone.devices:
            return self.local_queue_context, queue
        exten = self.queue_extens.get(queue)
        if exten is None:
            raise ControlRefused(f"no transfer extension for queue {queue!r}", "no-such-target", 404)
        return self.context, exten

    def number(self, e164: str, phone: Phone) -> tuple[str, str]:
        # A French number as the agents' context dials it (0ZXXXXXXXX: it can be keyed, a `+`
        # cannot); others in E.164. The simulated PBX's fake PSTN answers national numbers.
        national = "0" + e164[3:] if e164.startswith("+33") and len(e164) == 12 else e164
        if any(LOCAL.match(i) for i in phone.interfaces) and not phone.devices:
            return "fake-pstn", national
        return self.context, national


class CallControls:
    """The controls of one AMI server, for the agent's own call."""

    def __init__(self, link: AmiSender, plan: TransferPlan | None = None) -> None:
        self.link = link
        self.plan = plan or TransferPlan()

    async def find(self, phone: Phone, linkedid: str | None = None) -> AgentCall:
        """The agent's live call, asked of Asterisk now (404 `no-live-call` when there is none)."""
        if not phone.prefixes():
            raise ControlRefused("no phone is configured for you", "no-interface", 409)
        _, items = await ami_guard(self.link.send_list("CoreShowChannels"), "no-live-call")
        call = agent_call((LiveChannel.of(m) for m in items), phone, linkedid)
        if call is None:
            raise ControlRefused("you have no call in progress", "no-live-call", 404)
        return call

    async def hangup(self, call: AgentCall) -> None:
        await self._send("Hangup", {"Channel": call.phone.name, "Cause": 16}, "no-live-call")

    async def blind_transfer(self, call: AgentCall, context: str, exten: str) -> None:
        headers = {"Channel": call.member.name, "Context": context, "Exten": exten}
        await self._send("BlindTransfer", headers, "transfer-refused")

    async def attended_transfer(self, call: AgentCall, context: str, exten: str) -> None:
        """The consultation leg: the caller waits (on hold music) while the agent talks to the
        target; `complete` hands the caller over, `cancel` brings the agent back.

        A Local interface gets the `Atxfer` action (as in the capture and the simulated PBX). A
        device gets the same feature keyed on its channel one digit at a time: Asterisk 22's
        Atxfer queues every digit at once, as DTMF ends without a beginning; on a PJSIP channel
        the transfer prompt swallows the first and holds the others back until the digit
        timeout ("Unable to acquire target extension", seen on the real-PBX tier)."""
        if call.member.name.endswith(";1"):
            headers = {"Channel": call.member.name, "Context": context, "Exten": exten}
            await self._send("Atxfer", headers, "transfer-refused")
            return
        if not DTMF.match(exten):
            raise ControlRefused(f"{exten!r} cannot be keyed", "no-such-target", 404)
        channel = call.member.name
        await self._send(
            "Setvar",
            {"Channel": channel, "Variable": "TRANSFER_CONTEXT", "Value": context},
            "transfer-refused",
        )
        for digit in self.plan.atxfer_code + exten:
            await self._send(
                "PlayDTMF",
                {"Channel": channel, "Digit": digit, "Duration": 100, "Receive": "true"},
                "transfer-refused",
            )
            await asyncio.sleep(KEY_GAP_S)

    async def complete_transfer(self, call: AgentCall) -> None:
        """The transferer leaves: Asterisk bridges the caller with the target."""
        await self._send("Hangup", {"Channel": call.phone.name, "Cause": 16}, "transfer-refused")

    async def cancel_transfer(self, call: AgentCall) -> None:
        await self._send("CancelAtxfer", {"Channel": call.member.name}, "transfer-refused")

    async def dtmf(self, call: AgentCall, digits: str) -> None:
        """Digits as if keyed on the agent's phone (`Receive`): they reach whoever the agent
        talks to (a supplier's IVR), through the bridge."""
        if not DTMF.match(digits):
            raise ControlRefused("DTMF digits are 0-9, *, #, A-D", "bad-field", 400, field="digits")
        for digit in digits:
            headers = {"Channel": call.phone.name, "Digit": digit, "Duration": 100, "Receive": "true"}
            await self._send("PlayDTMF", headers, "dtmf-refused")

    async def _send(self, action: str, headers: Mapping[str, object], refused: str) -> Message:
        reply: Message = await ami_guard(self.link.send(action, headers), refused)
        log.info("call control", action=action, channel=headers.get("Channel"))
        return reply


async def ami_guard(pending: Any, refused: str) -> Any:
    """An action's answer; Asterisk's refusal is a 409 `refused`, a link down a 503."""
    try:
        return await pending
    except ActionError as exc:
        raise ControlRefused(exc.message, refused, 409, reason=exc.message) from None
    except (LinkDown, ActionTimeout) as exc:  # the relay's OwnerUnreachable says so by its id
        error_id = getattr(exc, "error_id", "ami-unavailable")
        raise ControlRefused(str(exc) or "AMI link unavailable", error_id, 503) from None
