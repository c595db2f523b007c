"""Channels and bridges of the simulated PBX, and the snapshot blocks Asterisk stamps on events."""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cti.sim.threads import Thread

DOWN, RING, RINGING, UP, BUSY = 0, 4, 5, 6, 7
STATE_DESC = {DOWN: "Down", RING: "Ring", RINGING: "Ringing", UP: "Up", BUSY: "Busy"}
UNKNOWN = "<unknown>"
CAUSE_TEXT = {
    0: "Unknown",
    16: "Normal Clearing",
    17: "User busy",
    19: "User alerting, no answer",
    26: "Answered elsewhere",
    34: "Circuit/channel congestion",
}


def _text(value: str) -> str:
    # Caller names come from outside (an Originate, a trunk): never let one span lines.
    return value.replace("\r", " ").replace("\n", " ") if "\r" in value or "\n" in value else value


class Ids:
    """Asterisk's identifiers: uniqueids `<epoch>.<n>` from one global counter, Local channel
    sequence numbers (8 hex digits), bridge UUIDs (from the seeded generator, for repeatable runs)."""

    def __init__(self, rng: random.Random, first_uniqueid: int = 0, first_local: int = 0) -> None:
        self._rng = rng
        self._uid = itertools.count(first_uniqueid)
        self._local = itertools.count(first_local)

    def uniqueid(self, now: float) -> str:
        return f"{int(now)}.{next(self._uid)}"

    def local_seq(self) -> str:
        return f"{next(self._local):08x}"

    def bridge_id(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))


@dataclass(eq=False)
class Channel:
    name: str
    uniqueid: str
    linkedid: str
    context: str
    exten: str
    created_at: float
    state: int = DOWN
    priority: int = 1
    caller_num: str | None = None
    caller_name: str | None = None
    connected_num: str | None = None
    connected_name: str | None = None
    language: str = "en"
    account_code: str = ""
    # What `CoreShowChannels` and `Status` report: the application running now and its data.
    application: str = ""
    app_data: str = ""
    variables: dict[str, str] = field(default_factory=dict)
    # The other half of a Local channel pair.
    peer: Channel | None = None
    bridge: Bridge | None = None
    thread: Thread | None = None
    # A channel that runs no dialplan (a dialed leg) is driven by an owner (the Originate, the
    # Queue ringing a member): told when the channel is asked to hang up, or when it answers.
    owner: Callable[[Channel], None] | None = None
    on_answer: Callable[[Channel], None] | None = None
    # Told of the far half's progress (`busy`, `congestion`), like a Local `;1` reading control frames.
    on_control: Callable[[str], None] | None = None
    hangup_cause: int = 0
    hangup_requested: bool = False
    # A soft hangup (PBX shutdown, AMI Hangup) is under way.
    soft_hangup: bool = False
    # The `;1` half whose own end waits for this `;2` to be gone.
    follower: Channel | None = None
    # Its caller ID changed (a transfer) and Asterisk says so only when it hangs up.
    late_callerid: bool = False
    gone: bool = False
    # Device name for device state (`Local/agent1@agents`), None for devices we do not track.
    device: str | None = None
    _blocks: dict[str, str] = field(default_factory=dict, repr=False)

    def touch(self) -> None:
        """The snapshot changed: rendered blocks are stale."""
        self._blocks.clear()

    def block(self, prefix: str) -> str:
        cached = self._blocks.get(prefix)
        if cached is not None:
            return cached
        p = prefix
        text = (
            f"{p}Channel: {self.name}\r\n{p}ChannelState: {self.state}\r\n"
            f"{p}ChannelStateDesc: {STATE_DESC.get(self.state, 'Unknown')}\r\n"
            f"{p}CallerIDNum: {_text(self.caller_num or UNKNOWN)}\r\n"
            f"{p}CallerIDName: {_text(self.caller_name or UNKNOWN)}\r\n"
            f"{p}ConnectedLineNum: {_text(self.connected_num or UNKNOWN)}\r\n"
            f"{p}ConnectedLineName: {_text(self.connected_name or UNKNOWN)}\r\n"
            f"{p}Language: {self.language}\r\n{p}AccountCode: {self.account_code}\r\n"
            f"{p}Context: {self.context}\r\n{p}Exten: {self.exten}\r\n{p}Priority: {self.priority}\r\n"
            f"{p}Uniqueid: {self.uniqueid}\r\n{p}Linkedid: {self.linkedid}"
        )
        self._blocks[prefix] = text
        return text

    @property
    def alive(self) -> bool:
        return not self.gone

    @property
    def inheritable(self) -> list[tuple[str, str]]:
        """Variables a dialed channel inherits (`__NAME`), in the order they were set."""
        return [(k, v) for k, v in self.variables.items() if k.startswith("__")]

    def callerid_all(self) -> str:
        """`${CALLERID(all)}`: `"Name" <number>`."""
        return f'"{self.caller_name or ""}" <{self.caller_num or ""}>'


@dataclass(eq=False)
class Bridge:
    uniqueid: str
    channels: list[Channel] = field(default_factory=list)
    _blocks: dict[str, str] = field(default_factory=dict, repr=False)

    def block(self, prefix: str) -> str:
        key = f"{prefix}:{len(self.channels)}"
        cached = self._blocks.get(key)
        if cached is None:
            cached = (
                f"{prefix}BridgeUniqueid: {self.uniqueid}\r\n{prefix}BridgeType: basic\r\n"
                f"{prefix}BridgeTechnology: simple_bridge\r\n{prefix}BridgeCreator: <unknown>\r\n"
                f"{prefix}BridgeName: <unknown>\r\n{prefix}BridgeNumChannels: {len(self.channels)}\r\n"
                f"{prefix}BridgeVideoSourceMode: none"
            )
            self._blocks[key] = cached
        return cached
