"""What a supervisor does to an agent from the floor, as AMI actions: listen to, whisper to or
barge into the agent's call from the supervisor's own phone (an Originate of the supervisor's
phone into ChanSpy), force a break, log the agent out of their queues.

ChanSpy options: `q` quiet (no beep, no name announced), `w` whisper (the agent hears the
supervisor, the customer does not), `B` barge (both hear, a three-way call); `E` ends the spy
when the spied channel hangs up. The spied channels are the agent's phone's: a channel-name
prefix built from the member interface (`PJSIP/1001` → `PJSIP/1001-`), never a name sent by the
page.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import structlog

from cti.ami.message import Message
from cti.calls.controls import LOCAL, AmiSender, ControlRefused, ami_guard

log = structlog.get_logger(__name__)

SpyMode = Literal["listen", "whisper", "barge"]
SPY_OPTIONS: Mapping[SpyMode, str] = {"listen": "qE", "whisper": "qwE", "barge": "qBE"}


def spy_prefix(interface: str) -> str:
    """The channel-name prefix of a member interface's calls."""
    local = LOCAL.match(interface)
    if local:
        return f"Local/{local['exten']}@{local['context']}-"
    tech, _, resource = interface.partition("/")
    if not tech or not resource or "," in interface or "-" in resource:
        raise ControlRefused(f"not an agent's phone: {interface!r}", "no-such-agent", 404)
    return f"{interface}-"


class Supervision:
    def __init__(self, link: AmiSender) -> None:
        self.link = link

    async def spy(self, supervisor_device: str, interface: str, mode: SpyMode, action_id: str) -> None:
        """The supervisor's phone rings; once answered it spies on the agent's call."""
        headers: dict[str, object] = {
            "Channel": supervisor_device,
            "Application": "ChanSpy",
            "Data": f"{spy_prefix(interface)},{SPY_OPTIONS[mode]}",
            "CallerID": f"Ecoute <{mode}>",
            "Async": "true",
            "Timeout": 30_000,
            "ActionID": action_id,
        }
        await self._send("Originate", headers, "spy-refused")

    async def pause(self, interface: str, paused: bool, reason: str | None) -> None:
        headers = {"Interface": interface, "Paused": "true" if paused else "false", "Reason": reason}
        await self._send("QueuePause", headers, "pause-refused")

    async def log_out(self, interface: str) -> list[str]:
        """Remove the member from every queue it is in; the queues it left."""
        _, items = await ami_guard(self.link.send_list("QueueStatus", {"Member": interface}), "queue-refused")
        queues = sorted({m.get("Queue", "") for m in items if m.get("Event") == "QueueMember"} - {""})
        for queue in queues:
            await self._send("QueueRemove", {"Queue": queue, "Interface": interface}, "queue-refused")
        return queues

    async def _send(self, action: str, headers: Mapping[str, object], refused: str) -> Message:
        reply: Message = await ami_guard(self.link.send(action, headers), refused)
        log.info("supervisor action", action=action, target=headers.get("Interface") or headers.get("Data"))
        return reply
