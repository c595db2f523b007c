"""Queues and their members as app_queue keeps them: membership, pause, device status, statistics.

Member events (`QueueMemberStatus`, `QueueMemberAdded`, ...) and the queue devices
(`Queue:<q>`, `Queue:<q>_avail`, `Queue:<q>_pause_<interface>`) come from here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from cti.sim.channels import Channel
from cti.sim.config import AgentSpec, QueueSpec
from cti.sim.core import Core
from cti.sim.devstate import INUSE, NOT_INUSE, STATUS_CODE
from cti.sim.threads import Gate

MAX_QUEUE_BUCKETS = 53


def queue_hash(name: str) -> int:
    """ast_str_case_hash: app_queue keeps queues in a hash container of 53 buckets, so lists
    (QueueStatus, QueueSummary) come out in bucket order, not in configuration order."""
    value = 5381
    for char in name.lower():
        value = ((value * 33) & 0xFFFFFFFF) ^ ord(char)
    if value >= 1 << 31:
        value -= 1 << 32
    return abs(value) % MAX_QUEUE_BUCKETS


@dataclass(eq=False)
class Member:
    queue: str
    agent: AgentSpec
    membership: str  # static / dynamic
    penalty: int
    login_time: int
    name: str
    calls_taken: int = 0
    last_call: int = 0
    last_call_at: float = 0.0
    last_pause: int = 0
    status: int = 1  # device state code of the state interface
    paused: bool = False
    paused_reason: str = ""
    in_call: bool = False
    ringinuse: bool = False
    # Copied from the agent once: read on every availability check.
    interface: str = ""
    state_interface: str = ""

    def __post_init__(self) -> None:
        self.interface = self.agent.interface
        self.state_interface = self.agent.state_interface

    def headers(self) -> dict[str, object]:
        return {
            "Queue": self.queue,
            "MemberName": self.name,
            "Interface": self.interface,
            "StateInterface": self.state_interface,
            "Membership": self.membership,
            "Penalty": self.penalty,
            "CallsTaken": self.calls_taken,
            "LastCall": self.last_call,
            "LastPause": self.last_pause,
            "LoginTime": self.login_time,
            "InCall": int(self.in_call),
            "Status": self.status,
            "Paused": int(self.paused),
            "PausedReason": self.paused_reason,
            "Ringinuse": int(self.ringinuse),
            "Wrapuptime": 0,
        }


@dataclass(eq=False)
class Entry:
    """A caller waiting in a queue."""

    channel: Channel
    joined_at: float
    position: int
    gate: Gate | None = None
    ringing: bool = False
    linpos: int = 0
    linwrapped: bool = False


@dataclass
class Stats:
    completed: int = 0
    abandoned: int = 0
    completed_in_sl: int = 0
    abandoned_in_sl: int = 0
    holdtime: int = 0
    talktime: int = 0


@dataclass(eq=False)
class Queue:
    spec: QueueSpec
    members: list[Member] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    stats: Stats = field(default_factory=Stats)
    rrpos: int = 0
    wrapped: bool = False

    @property
    def name(self) -> str:
        return self.spec.name

    def member(self, interface: str) -> Member | None:
        return next((m for m in self.members if m.interface == interface), None)

    def record_hold(self, seconds: int) -> None:
        # app_queue keeps running averages weighted 3:1 towards the past.
        self.stats.holdtime = (self.stats.holdtime * 3 + seconds) >> 2

    def record_talk(self, seconds: int) -> None:
        self.stats.talktime = (self.stats.talktime * 3 + seconds) >> 2

    def servicelevel_perf(self) -> str:
        s = self.stats
        perf = 100.0 * s.completed_in_sl / s.completed if s.completed else 0.0
        total = s.completed + s.abandoned
        perf2 = 100.0 * (s.completed_in_sl + s.abandoned_in_sl) / total if total else 0.0
        return f"{perf:.1f}|{perf2:.1f}"


class Queues:
    """Every queue of the PBX, their members, and what app_queue publishes about them."""

    def __init__(self, core: Core, specs: tuple[QueueSpec, ...], agents: tuple[AgentSpec, ...]) -> None:
        self.core = core
        self.agents = {a.exten: a for a in agents}
        self.by_name: dict[str, Queue] = {}
        # Interfaces ringing for some caller (app_queue's pending members): never rung twice.
        self.pending: set[str] = set()
        boot = int(core.now)
        for spec in specs:
            queue = Queue(spec)
            for m in spec.members:
                agent = self.agents[m.agent]
                member = Member(spec.name, agent, "static", m.penalty, boot, agent.name)
                member.ringinuse = spec.ringinuse
                queue.members.append(member)
            self.by_name[spec.name] = queue
        core.devices.on_change = self.device_changed
        self._order: list[Queue] = sorted(self.by_name.values(), key=lambda q: queue_hash(q.name))
        self._by_device: dict[str, list[tuple[Queue, Member]]] = {}
        self._index()
        self.prime_devices()

    def _index(self) -> None:
        """Members by state interface: every device change looks them up."""
        self._by_device = {}
        for queue in self._order:
            for member in queue.members:
                self._by_device.setdefault(member.state_interface, []).append((queue, member))

    def prime_devices(self) -> None:
        """A PBX at rest: nobody waiting, every queue with someone available (no events for it)."""
        for queue in self.by_name.values():
            self.core.devices.prime(f"Queue:{queue.name}", NOT_INUSE)
            available = any(self.free(queue, m) for m in queue.members)
            self.core.devices.prime(f"Queue:{queue.name}_avail", NOT_INUSE if available else INUSE)

    def reset(self) -> None:
        """After a restart: static members logged in again, dynamic ones gone, counters at zero."""
        boot = int(self.core.now)
        self.pending.clear()
        for queue in self.by_name.values():
            queue.entries.clear()
            queue.stats = Stats()
            queue.rrpos = 0
            queue.members = [m for m in queue.members if m.membership == "static"]
        self._index()
        for queue in self.by_name.values():
            for m in queue.members:
                m.login_time, m.calls_taken, m.last_call, m.last_call_at = boot, 0, 0, 0.0
                m.last_pause, m.paused, m.paused_reason, m.in_call, m.status = 0, False, "", False, 1
        self.prime_devices()

    def __iter__(self) -> Iterator[Queue]:
        """Queues in Asterisk's listing order."""
        return iter(self._order)

    def get(self, name: str) -> Queue | None:
        return self.by_name.get(name)

    # ------------------------------------------------------------------ availability
    def available(self, queue: Queue, member: Member) -> bool:
        if member.paused or not member.interface.startswith("Local/"):
            # The simulator's agents are Local phones; a member added on another device
            # (PJSIP/1001) is listed, paused and removed like any other, but never rings.
            return False
        # With ringinuse=no, a busy member, or one already ringing for another caller, is skipped.
        if not member.ringinuse and (
            member.interface in self.pending
            or member.in_call
            or member.status not in (0, STATUS_CODE[NOT_INUSE])
        ):
            return False
        return not self.wrapping_up(queue, member)

    def wrapping_up(self, queue: Queue, member: Member) -> bool:
        # app_queue compares whole seconds: time(NULL) - wrapuptime < lastcall.
        wrapup = queue.spec.wrapuptime_s
        return bool(member.last_call and wrapup and int(self.core.now) - wrapup < member.last_call)

    def free(self, queue: Queue, member: Member) -> bool:
        """Counted as available for whose turn it is (is_member_available): idle by its device
        state, not paused, not in wrap-up. A member ringing for someone else still counts: a
        Local phone's device state never says ringing."""
        if member.paused:
            return False
        if not member.ringinuse and member.status not in (0, STATUS_CODE[NOT_INUSE]):
            return False
        return not self.wrapping_up(queue, member)

    def _avail_device(self, queue: Queue) -> None:
        state = NOT_INUSE if any(self.free(queue, m) for m in queue.members) else INUSE
        self.core.devices.set_cached(f"Queue:{queue.name}_avail", state)

    # ------------------------------------------------------------------ device state
    def device_changed(self, device: str, state: str) -> None:
        """app_queue's device_state_cb: update every member on that device, then the queue's
        availability device."""
        code = STATUS_CODE.get(state, 0)
        for queue, member in self._by_device.get(device, ()):
            if member.status != code:
                member.status = code
                self.publish(member, "QueueMemberStatus")
            self._avail_device(queue)

    def publish(self, member: Member, event: str) -> None:
        self.core.emit(event, values=member.headers())

    def caller_count_changed(self, queue: Queue) -> None:
        self.core.devices.set_cached(f"Queue:{queue.name}", "RINGING" if queue.entries else NOT_INUSE)

    # ------------------------------------------------------------------ membership (AMI actions)
    def add(
        self, queue: Queue, agent: AgentSpec, name: str, penalty: int, paused: bool, reason: str
    ) -> Member:
        member = Member(queue.name, agent, "dynamic", penalty, int(self.core.now), name or agent.name)
        member.ringinuse = queue.spec.ringinuse
        member.paused, member.paused_reason = paused, reason if paused else ""
        member.status = STATUS_CODE[self.core.devices.local_state(agent.state_interface)]
        queue.members.append(member)
        self._index()
        self._pause_device(member)
        self.publish(member, "QueueMemberAdded")
        return member

    def remove(self, queue: Queue, member: Member) -> None:
        queue.members.remove(member)
        self._index()
        self.publish(member, "QueueMemberRemoved")
        if member.paused:
            self.core.devices.set_cached(f"Queue:{queue.name}_pause_{member.interface}", NOT_INUSE)

    def pause(self, member: Member, paused: bool, reason: str) -> None:
        member.paused = paused
        member.paused_reason = reason if paused else ""
        if paused:
            member.last_pause = int(self.core.now)
        self._pause_device(member)
        self.publish(member, "QueueMemberPause")

    def _pause_device(self, member: Member) -> None:
        state = INUSE if member.paused else NOT_INUSE
        self.core.devices.set_cached(f"Queue:{member.queue}_pause_{member.interface}", state)

    def members_of(self, interface: str) -> list[Member]:
        return [m for q in self for m in q.members if m.interface == interface]
