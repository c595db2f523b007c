"""Typed helpers for the AMI actions the daemon sends on behalf of agents and the dialer."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol

from cti.ami.message import Message


class ActionSender(Protocol):
    async def send(
        self, action: str, headers: Mapping[str, object] | None = None, /, **more: Any
    ) -> Message: ...


async def queue_add(
    link: ActionSender,
    queue: str,
    interface: str,
    member_name: str,
    state_interface: str | None = None,
    penalty: int = 0,
) -> Message:
    return await link.send(
        "QueueAdd",
        {
            "Queue": queue,
            "Interface": interface,
            "MemberName": member_name,
            "StateInterface": state_interface,
            "Penalty": penalty,
            "Paused": "false",
        },
    )


async def queue_remove(link: ActionSender, queue: str, interface: str) -> Message:
    return await link.send("QueueRemove", {"Queue": queue, "Interface": interface})


async def queue_pause(
    link: ActionSender, interface: str, paused: bool, reason: str | None = None, queue: str | None = None
) -> Message:
    """Without `queue`, Asterisk pauses the member in every queue (what a break means)."""
    return await link.send(
        "QueuePause",
        {"Interface": interface, "Paused": "true" if paused else "false", "Reason": reason, "Queue": queue},
    )


async def originate(
    link: ActionSender,
    channel: str,
    context: str,
    exten: str = "s",
    *,
    variables: Mapping[str, str] | None = None,
    caller_id: str | None = None,
    timeout_ms: int = 30_000,
    action_id: str | None = None,
) -> Message:
    """An Async Originate: the outcome comes later as an OriginateResponse event."""
    headers: dict[str, object] = {
        "Channel": channel,
        "Context": context,
        "Exten": exten,
        "Priority": 1,
        "Async": "true",
        "Timeout": timeout_ms,
        "CallerID": caller_id,
        "Variable": dict(variables or {}),
    }
    if action_id is not None:
        headers["ActionID"] = action_id
    return await link.send("Originate", headers)


async def hangup_device(link: ActionSender, device: str) -> Message:
    """Hang up every channel of a device (`PJSIP/1001` → channels `PJSIP/1001-…`; a Local
    interface `Local/agent1@agents/n` → `Local/agent1@agents-…;1` and `;2`)."""
    local = re.match(r"^(Local/[^@/]+@[^/]+)/n$", device)
    channels = local.group(1) if local else device
    return await link.send("Hangup", {"Channel": f"/^{re.escape(channels)}-/", "Cause": 16})
