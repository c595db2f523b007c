"""The Queue() application on a caller's channel: join, ring members, connect, and every way out.

Written after app_queue's own loop (queue_exec → try_calling → wait_for_answer → bridge) and the
event sequences of the real captures: which events each step sends, in which order, on which
channel. Ring strategies: ringall (every available member at once), linear (members in order, from
the caller's own position), rrmemory (round robin remembered by the queue).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from cti.sim.channels import Bridge, Channel
from cti.sim.core import Core
from cti.sim.queues import Entry, Member, Queue, Queues
from cti.sim.threads import Gate, HungUp, Program

QueueResult = Generator[Any, Any, str]
# Starts the program of an agent's phone (the `;2` half ringing in [agents]).
AgentProgram = Callable[[Channel, Member], Program]

RESULT_HANGUP = "HANGUP"  # the conversation is over: Queue() returns -1, the dialplan stops
RESULT_TIMEOUT = "TIMEOUT"
RECHECK_S = 1.0
GOTO = "GOTO:"  # GOTO:<context>:<exten>: the caller was sent elsewhere (a blind transfer)


@dataclass(eq=False)
class Ring:
    member: Member
    leg: Channel  # the dialed `;1`, owned by the queue
    phone: Channel  # the `;2`, running the agent's [agents] extension
    started: float


@dataclass(eq=False)
class Conversation:
    queue: Queue
    entry: Entry
    ring: Ring
    bridge: Bridge
    connected_at: float
    ended: Gate = field(default_factory=Gate)
    reason: str = ""
    # Who the caller talks to now: the agent's leg, or the target of an attended transfer.
    partner: Channel | None = None

    @property
    def peer(self) -> Channel:
        return self.partner or self.ring.leg


class QueueApp:
    """Runs Queue() for callers. `listeners` get the ground-truth facts (see truth.py)."""

    def __init__(self, core: Core, queues: Queues, agent_program: AgentProgram) -> None:
        self.core = core
        self.queues = queues
        self.agent_program = agent_program
        self.on_join: list[Callable[[Channel, Queue], None]] = []
        self.on_connect: list[Callable[[Channel, Queue, Member, float], None]] = []
        self.on_complete: list[Callable[[Channel, Queue, Member, str], None]] = []
        self.on_leave: list[Callable[[Channel, Queue, str, float], None]] = []
        # The caller's conversation is over (after a transfer it outlives the queue segment).
        self.on_conversation_over: list[Callable[[Channel], None]] = []
        self.conversations: dict[str, Conversation] = {}  # by caller uniqueid

    # ------------------------------------------------------------------ entry point
    def run(self, channel: Channel, queue: Queue, timeout_s: int) -> QueueResult:
        core = self.core
        for name in (
            "ANSWEREDTIME",
            "ANSWEREDTIME_MS",
            "DIALEDTIME",
            "DIALEDTIME_MS",
            "QUEUEWAIT",
            "QUEUEWAIT_MS",
        ):
            core.set_var(channel, name, "")
        entry = self._join(channel, queue)
        # app_queue counts the timeout in whole seconds of time(NULL).
        expire = float(int(entry.joined_at) + timeout_s) if timeout_s > 0 else None
        rings: list[Ring] = []
        try:
            result = yield from self._serve(entry, queue, expire, rings)
        except HungUp:
            self._abandon(entry, queue, rings)
            return RESULT_HANGUP
        return result

    def _join(self, channel: Channel, queue: Queue) -> Entry:
        entry = Entry(channel, self.core.now, len(queue.entries) + 1)
        queue.entries.append(entry)
        self.queues.caller_count_changed(queue)
        self.core.emit(
            "QueueCallerJoin",
            {"@": channel},
            {"Queue": queue.name, "Position": entry.position, "Count": len(queue.entries)},
        )
        for listener in self.on_join:
            listener(channel, queue)
        return entry

    # ------------------------------------------------------------------ waiting and ringing
    def _serve(self, entry: Entry, queue: Queue, expire: float | None, rings: list[Ring]) -> QueueResult:
        while True:
            if expire is not None and self.core.now >= expire:
                return self._exit_timeout(entry, queue)
            if not self._our_turn(entry, queue):
                # wait_our_turn: look again every second (app_queue's RECHECK).
                yield self._pause(entry, RECHECK_S, expire)
                continue
            rings[:] = self._ring(entry, queue)
            if rings:
                outcome = yield self._wait(entry, queue, expire)
                if isinstance(outcome, Ring):
                    return (yield from self._connect(entry, queue, outcome, rings))
                self._no_answer(entry, queue, rings)
                rings.clear()
                if expire is not None and self.core.now >= expire:
                    return self._exit_timeout(entry, queue)
            yield self._pause(entry, queue.spec.retry_s, expire)

    def _our_turn(self, entry: Entry, queue: Queue) -> bool:
        """app_queue's is_our_turn: with autofill the first N callers are served, N being the
        members free to take a call; without it (or in a ring-all queue) only the head caller
        is, once someone is free (mixed_seed1: a caller behind the head waits although an agent
        is free)."""
        free = sum(1 for m in queue.members if self.queues.free(queue, m))
        if not queue.spec.autofill or queue.spec.strategy == "ringall":
            free = min(free, 1)
        ahead = queue.entries.index(entry) if entry in queue.entries else 0
        return ahead < free

    def _candidates(self, entry: Entry, queue: Queue) -> list[Member]:
        strategy = queue.spec.strategy
        allowed = _penalty_range(entry.channel)
        if strategy == "ringall":
            return [m for m in reversed(queue.members) if self.queues.available(queue, m) and allowed(m)]
        start = queue.rrpos if strategy == "rrmemory" else entry.linpos
        chosen, following = self._one_by_one(queue, start, allowed)
        if strategy == "rrmemory":
            queue.rrpos = following
        else:
            entry.linpos = following
        return chosen

    def _one_by_one(
        self, queue: Queue, start: int, allowed: Callable[[Member], bool] = lambda m: True
    ) -> tuple[list[Member], int]:
        """rrmemory/linear as app_queue does it: every member gets a metric from its position
        relative to `start`; the best one that can ring rings; the next attempt starts at the
        best one left untried, available or not (store_next_rr / store_next_lin)."""
        members = queue.members

        def metric(pos: int) -> int:
            return members[pos].penalty * 1_000_000 + (pos if pos >= start else 1000 + pos)

        order = sorted(range(len(members)), key=metric)
        wrapped = any(pos > start for pos in order)
        for i, pos in enumerate(order):
            if self.queues.available(queue, members[pos]) and allowed(members[pos]):
                rest = order[i + 1 :]
                return [members[pos]], rest[0] if rest else (0 if wrapped else start + 1)
        return [], 0 if wrapped else start + 1

    def _ring(self, entry: Entry, queue: Queue) -> list[Ring]:
        rings = [self._ring_member(entry, queue, m) for m in self._candidates(entry, queue)]
        entry.ringing = bool(rings)
        return rings

    def _ring_member(self, entry: Entry, queue: Queue, member: Member) -> Ring:
        core, caller = self.core, entry.channel
        exten = member.agent.exten
        leg, phone = core.local_pair(exten, "agents", linkedid=caller.linkedid)
        core.newexten(leg, "AppQueue", "(Outgoing Line)")
        core.set_caller(leg, caller.caller_num, caller.caller_name)
        inherited = caller.inheritable
        for name, value in inherited:
            core.set_var(leg, name, value)
        core.set_var(leg, "DIALEDPEERNUMBER", f"{exten}@agents/n")
        core.set_var(phone, "DIALEDPEERNUMBER", f"{exten}@agents/n")
        for name, value in reversed(inherited):
            core.set_var(phone, name, value)
        core.set_caller(phone, caller.caller_num, caller.caller_name)
        core.set_connected(phone, caller.caller_num, caller.caller_name)
        core.local_bridge(leg, phone, optimization=False)
        core.emit(
            "AgentCalled",
            {"@": caller, "@Dest": leg},
            {"Queue": queue.name, "Interface": member.interface, "MemberName": member.name},
        )
        core.emit("DialBegin", {"@": caller, "@Dest": leg}, {"DialString": member.interface})
        self.queues.pending.add(member.interface)
        ring = Ring(member, leg, phone, core.now)
        leg.owner = lambda _leg: self._fire(entry, ("gone", ring))
        leg.on_answer = lambda _leg: self._fire(entry, ring)
        core.run(phone, self.agent_program(phone, member))
        return ring

    def _fire(self, entry: Entry, value: object) -> None:
        if entry.gate is not None:
            entry.gate.fire(value)

    def _wait(self, entry: Entry, queue: Queue, expire: float | None) -> Gate:
        """Wait for an answer, at most the member timeout (cut short by the queue timeout)."""
        timeout = float(queue.spec.timeout_s)
        if expire is not None:
            # app_queue: when the caller's own time runs out first, ring only for what is left,
            # in whole seconds of time(NULL).
            timeout = min(timeout, max(0.0, expire - int(self.core.now)))
        gate = Gate()
        entry.gate = gate
        # A gate fires once: the timer firing after an answer changes nothing.
        self.core.sched.call_later(timeout, lambda: gate.fire("noanswer"))
        return gate

    def _pause(self, entry: Entry, seconds: float, expire: float | None) -> float:
        entry.ringing = False
        entry.gate = None
        if expire is not None:
            seconds = min(seconds, max(0.0, expire - self.core.now))
        return seconds

    # ------------------------------------------------------------------ ends of ringing
    def _no_answer(self, entry: Entry, queue: Queue, rings: list[Ring]) -> None:
        core, caller = self.core, entry.channel
        for ring in rings:
            if ring.leg.gone:
                continue
            ring_ms = round((core.now - ring.started) * 1000)
            core.emit(
                "AgentRingNoAnswer",
                {"@": caller, "@Dest": ring.leg},
                {
                    "Queue": queue.name,
                    "Interface": ring.member.interface,
                    "MemberName": ring.member.name,
                    "RingTime": ring_ms,
                },
            )
            core.emit("DialEnd", {"@": caller, "@Dest": ring.leg}, {"DialStatus": "NOANSWER"})
        self._hang_up_rings(entry, rings, cause=0)

    def _hang_up_rings(self, entry: Entry, rings: list[Ring], cause: int, keep: Ring | None = None) -> None:
        """app_queue's hangupcalls: each other leg gets a (second) DialEnd CANCEL and is hung up."""
        core, caller = self.core, entry.channel
        for ring in rings:
            self.queues.pending.discard(ring.member.interface)
            if ring is keep or ring.leg.gone:
                continue
            core.emit("DialEnd", {"@": caller, "@Dest": ring.leg}, {"DialStatus": "CANCEL"})
            ring.leg.owner = None
            ring.leg.on_answer = None
            core.hangup_leg(ring.leg, cause)
            core.set_connected(ring.leg, caller.caller_num, caller.caller_name)
        entry.gate = None
        entry.ringing = False

    def _leave(self, entry: Entry, queue: Queue) -> int:
        position = queue.entries.index(entry) + 1 if entry in queue.entries else entry.position
        if entry in queue.entries:
            queue.entries.remove(entry)
        self.queues.caller_count_changed(queue)
        self.core.emit(
            "QueueCallerLeave",
            {"@": entry.channel},
            {"Queue": queue.name, "Position": position, "Count": len(queue.entries)},
        )
        return position

    def _exit_times(self, entry: Entry, answered_ms: int = 0) -> None:
        core, channel = self.core, entry.channel
        waited = core.now - entry.joined_at
        core.set_var(channel, "QUEUEWAIT", int(waited))
        core.set_var(channel, "QUEUEWAIT_MS", int(waited) * 1000)
        # DIALEDTIME counts from the channel's creation, not from joining the queue.
        age = core.now - channel.created_at
        core.set_var(channel, "DIALEDTIME", int(age))
        core.set_var(channel, "DIALEDTIME_MS", int(age * 1000))
        core.set_var(channel, "ANSWEREDTIME", answered_ms // 1000)
        core.set_var(channel, "ANSWEREDTIME_MS", answered_ms)

    def _abandoned_event(self, entry: Entry, queue: Queue) -> None:
        held = int(self.core.now - entry.joined_at)
        self.core.emit(
            "QueueCallerAbandon",
            {"@": entry.channel},
            {
                "Queue": queue.name,
                "Position": queue.entries.index(entry) + 1 if entry in queue.entries else entry.position,
                "OriginalPosition": entry.position,
                "HoldTime": held,
            },
        )
        queue.stats.abandoned += 1
        queue.stats.abandoned_in_sl += held <= queue.spec.servicelevel_s

    def _abandon(self, entry: Entry, queue: Queue, rings: list[Ring]) -> None:
        """The caller hung up while waiting (a hangup request arrived on its channel first)."""
        core, caller = self.core, entry.channel
        live = [r for r in rings if not r.leg.gone]
        for ring in live:
            core.emit("DialEnd", {"@": caller, "@Dest": ring.leg}, {"DialStatus": "CANCEL"})
        self._hang_up_rings(entry, live, cause=0)
        self._exit_times(entry)
        core.set_var(caller, "ABANDONED", "TRUE")
        self._abandoned_event(entry, queue)
        self._leave(entry, queue)
        core.set_var(caller, "QUEUEPOSITION", entry.position)
        self._left(entry, queue, "abandoned")

    def _exit_timeout(self, entry: Entry, queue: Queue) -> str:
        """The caller's time ran out: Asterisk says QueueCallerAbandon here too, without any
        hangup request before it, and sets QUEUESTATUS=TIMEOUT for the dialplan."""
        core, caller = self.core, entry.channel
        core.set_var(caller, "ABANDONED", "TRUE")
        self._abandoned_event(entry, queue)
        self._exit_times(entry)
        self._leave(entry, queue)
        core.set_var(caller, "QUEUEPOSITION", entry.position)
        core.set_var(caller, "QUEUESTATUS", RESULT_TIMEOUT)
        self._left(entry, queue, "timeout")
        return RESULT_TIMEOUT

    def _left(self, entry: Entry, queue: Queue, outcome: str) -> None:
        for listener in self.on_leave:
            listener(entry.channel, queue, outcome, self.core.now - entry.joined_at)

    # ------------------------------------------------------------------ connected
    def _connect(self, entry: Entry, queue: Queue, ring: Ring, rings: list[Ring]) -> QueueResult:
        core, caller, leg, member = self.core, entry.channel, ring.leg, ring.member
        core.newexten(leg, "AppQueue", "(Outgoing Line)", exten=queue.name, priority=1)
        core.set_connected(leg, caller.caller_num, caller.caller_name)
        core.emit("DialEnd", {"@": caller, "@Dest": leg}, {"DialStatus": "ANSWER"})
        others = [r for r in rings if r is not ring and not r.leg.gone]
        for other in others:
            core.emit("DialEnd", {"@": caller, "@Dest": other.leg}, {"DialStatus": "CANCEL"})
        self._hang_up_rings(entry, rings, cause=26, keep=ring)
        waited = core.now - entry.joined_at
        position = self._leave(entry, queue)
        core.set_var(caller, "QUEUEPOSITION", position)
        core.set_var(caller, "QUEUEWAIT", int(waited))
        core.set_var(caller, "QUEUEWAIT_MS", int(waited) * 1000)
        member.in_call = True
        hold = int(waited)
        queue.record_hold(hold)
        core.emit(
            "AgentConnect",
            {"@": caller, "@Dest": leg},
            {
                "Queue": queue.name,
                "Interface": member.interface,
                "MemberName": member.name,
                "HoldTime": hold,
                "RingTime": int(core.now - ring.started),
            },
        )
        for listener in self.on_connect:
            listener(caller, queue, member, waited)
        bridge = core.bridge_create()
        core.bridge_enter(bridge, leg)
        core.bridge_enter(bridge, caller)
        if caller.variables.get("BLINDTRANSFER"):
            core.set_var(caller, "BLINDTRANSFER", "")
        core.set_bridge_peers(leg, caller)
        talk = Conversation(queue, entry, ring, bridge, core.now)
        self.conversations[caller.uniqueid] = talk
        leg.owner = lambda _leg: self._agent_left(talk, queue)
        try:
            ended = yield talk.ended
        except HungUp:
            self._complete(talk, queue, "caller")
            self._caller_left(talk)
            return RESULT_HANGUP
        if isinstance(ended, tuple):
            return self._sent_elsewhere(talk, *ended)
        return self._after_bridge(talk)

    def _complete(self, talk: Conversation, queue: Queue, reason: str, *, with_dest: bool = True) -> None:
        core, member = self.core, talk.ring.member
        if talk.reason:
            return
        talk.reason = reason
        self.conversations.pop(talk.entry.channel.uniqueid, None)
        talked = int(core.now - talk.connected_at)
        hold = int(talk.connected_at - talk.entry.joined_at)
        member.in_call = False
        member.calls_taken += 1
        member.last_call = int(core.now)
        member.last_call_at = core.now
        queue.stats.completed += 1
        queue.stats.completed_in_sl += hold <= queue.spec.servicelevel_s
        queue.record_talk(talked)
        snapshots: dict[str, Channel] = {"@": talk.entry.channel}
        if with_dest:
            snapshots["@Dest"] = talk.ring.leg
        core.emit(
            "AgentComplete",
            snapshots,
            {
                "Queue": queue.name,
                "Interface": member.interface,
                "MemberName": member.name,
                "HoldTime": hold,
                "TalkTime": talked,
                "Reason": reason,
            },
            variant=None if with_dest else "nodest",
        )
        for listener in self.on_complete:
            listener(talk.entry.channel, queue, member, reason)

    def _agent_left(self, talk: Conversation, queue: Queue) -> None:
        """The agent's phone hung up: the queue reports it at once (the member is out of the call
        before its device goes idle), then the bridge breaks up."""
        if talk.reason:
            return  # the caller's side went first (a PBX shutdown cuts both)
        self._complete(talk, queue, "agent")
        self.core.sched.call_later(0.0, lambda: self._break_up(talk))

    def _break_up(self, talk: Conversation) -> None:
        core, leg, caller = self.core, talk.peer, talk.entry.channel
        core.set_var(leg, "BRIDGEPEER", "")
        core.set_var(caller, "BRIDGEPEER", "")
        core.bridge_leave(leg)
        core.destroy(leg)
        talk.ended.fire("agent")

    def _after_bridge(self, talk: Conversation) -> str:
        core, caller = self.core, talk.entry.channel
        self._over(talk)
        core.bridge_leave(caller)
        if not talk.bridge.channels:
            core.bridge_destroy(talk.bridge)
        self._answered_times(talk)
        return RESULT_HANGUP

    def _answered_times(self, talk: Conversation) -> None:
        core, caller = self.core, talk.entry.channel
        answered = core.now - talk.connected_at
        dialed = core.now - caller.created_at
        core.set_var(caller, "ANSWEREDTIME", int(answered))
        core.set_var(caller, "ANSWEREDTIME_MS", int(answered * 1000))
        core.set_var(caller, "DIALEDTIME", int(dialed))
        core.set_var(caller, "DIALEDTIME_MS", int(dialed * 1000))

    def _over(self, talk: Conversation) -> None:
        for listener in self.on_conversation_over:
            listener(talk.entry.channel)

    def _caller_left(self, talk: Conversation) -> None:
        """The caller hung up in conversation: it leaves; the agent's leg, alone, is hung up."""
        self._over(talk)
        core, leg, caller = self.core, talk.peer, talk.entry.channel
        core.set_var(caller, "BRIDGEPEER", "")
        core.set_var(leg, "BRIDGEPEER", "")
        core.bridge_leave(caller)
        self._answered_times(talk)
        core.sched.call_later(0.0, lambda: self._lone_leg(talk))

    def _lone_leg(self, talk: Conversation) -> None:
        core, leg = self.core, talk.peer
        if leg.gone:
            return
        core.bridge_leave(leg)
        core.bridge_destroy(talk.bridge)
        leg.owner = None
        core.hangup_leg(leg, 16)

    # ------------------------------------------------------------------ transfers
    def attended_transfer_done(self, talk: Conversation, target: Channel) -> None:
        """The agent handed the caller to `target` outside the queue: the queue's part is over,
        the caller's conversation goes on in the same bridge."""
        self._complete(talk, talk.queue, "transfer")
        talk.partner = target
        self.conversations[talk.entry.channel.uniqueid] = talk
        target.owner = lambda _leg: self._later(lambda: self._break_up(talk))

    def _later(self, action: Callable[[], None]) -> None:
        self.core.sched.call_later(0.0, action)

    def transferred(self, talk: Conversation, context: str, exten: str) -> None:
        """The agent blind-transferred the caller: its leg is already gone."""
        self._complete(talk, talk.queue, "transfer", with_dest=False)
        self.core.set_var(talk.entry.channel, "BRIDGEPEER", "")
        talk.ended.fire((context, exten))

    def _sent_elsewhere(self, talk: Conversation, context: str, exten: str) -> str:
        core, caller = self.core, talk.entry.channel
        # The async goto shows the new place before Queue() has let go (its data still the old one).
        core.newexten(caller, caller.application, caller.app_data, context=context, exten=exten, priority=1)
        core.bridge_leave(caller)
        if not talk.bridge.channels:
            core.bridge_destroy(talk.bridge)
        age = core.now - caller.created_at
        core.set_var(caller, "DIALEDTIME", int(age))
        core.set_var(caller, "DIALEDTIME_MS", int(age * 1000))
        core.set_var(caller, "ANSWEREDTIME", 0)
        core.set_var(caller, "ANSWEREDTIME_MS", 0)
        return f"{GOTO}{context}:{exten}"


def _penalty_range(channel: Channel) -> Callable[[Member], bool]:
    """app_queue's QUEUE_MIN_PENALTY / QUEUE_MAX_PENALTY: only members whose penalty lies
    within them are offered the call (unset or not a number: no bound)."""

    def bound(name: str) -> int | None:
        text = str(channel.variables.get(name, "")).strip()
        return int(text) if text.isdigit() else None

    low, high = bound("QUEUE_MIN_PENALTY"), bound("QUEUE_MAX_PENALTY")
    return lambda m: (low is None or m.penalty >= low) and (high is None or m.penalty <= high)
