"""The lab dialplan (`lab/extensions.conf`) as channel programs.

Each program runs on one channel's thread and does, priority by priority, what the dialplan line
does: a `Newexten` for the step, then the application's own events and delays (Answer waits half a
second for media; SendDTMF plays each digit 100 ms after the previous one; WaitExten waits for a
digit or its timeout).

    [ivr]            s: NoOp, (AGI lookup), Answer, UserEvent(IVR enter), Set, Set, WaitExten(6)
                     1..6: UserEvent(IVR choice), Goto(to-queue,<queue>,1) / 3: Wait(2), Hangup
                     i: UserEvent(IVR invalid), Goto(s,menu)      t: UserEvent(IVR timeout), Hangup
    [to-queue]       Queue(<q>,<opts>,,,<timeout>), UserEvent(QueueExit), Hangup
    [caller]         s: Wait(1), ExecIf(SendDTMF(DIGITS)), Wait(STAY), Hangup   (the customer)
    [agents]         agentN: Wait(ring), Answer, Wait(TALK), Hangup            (the agents' phones)
    [fake-pstn]      the called party of an outbound call: answers, busy, never answers, congestion
    [dialer-connect] s: UserEvent(DialerConnected), Queue(outbound), Hangup
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from cti.sim.channels import BUSY, Channel
from cti.sim.config import AgentSpec, DialplanOptions
from cti.sim.core import Core
from cti.sim.queueapp import GOTO, RESULT_HANGUP, QueueApp
from cti.sim.queues import Member, Queues
from cti.sim.threads import Gate, Program

ANSWER_DELAY_S = 0.5  # Answer() waits this long for media before the next priority
DTMF_GAP_S = 0.1  # SendDTMF: pause before each digit
DTMF_HEARD_S = 0.1  # how long the far half hears each digit
DTMF_DIGIT_S = 0.35  # a digit's whole cost to the sender (gap + its 250 ms duration)
AGI_START_S = 0.148  # the lab's rec.agi: interpreter start-up until its first SET VARIABLE
AGI_REST_S = 0.013  # the rest of the script after the last SET
NEVER_S = 600.0  # agent2/agent6 in the lab: Wait(600), they never answer
DEFAULT_TALK = "5"
DEFAULT_STAY = "30"

IvrListener = Callable[[Channel, str, str], None]
AgiLookup = Callable[[Channel], tuple[str, str, str]]


@dataclass
class PstnPlan:
    """What the called party of an outbound call does (decided when the call is originated)."""

    outcome: str  # answered / busy / no_answer / congestion / rejected
    ring_s: float = 2.0


def lab_agi_lookup(channel: Channel) -> tuple[str, str, str]:
    """What lab/rec.agi sets: a customer id, a VIP caller name, a queue priority."""
    name = channel.caller_name or ""
    return "42", f"{name} (VIP)" if name else "VIP", "10"


def _number(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


def var(channel: Channel, name: str, default: str = "") -> str:
    """`${NAME}`: an inherited variable is set as `__NAME` and read as `NAME`."""
    for key in (name, "__" + name, "_" + name):
        if key in channel.variables:
            return channel.variables[key]
    return default


class Dialplan:
    def __init__(
        self,
        core: Core,
        queues: Queues,
        queue_app: QueueApp,
        options: DialplanOptions,
        agents: tuple[AgentSpec, ...],
        agi_lookup: AgiLookup = lab_agi_lookup,
    ) -> None:
        self.core = core
        self.queues = queues
        self.queue_app = queue_app
        self.options = options
        self.agents = {a.exten: a for a in agents}
        self.agi_lookup = agi_lookup
        self.pstn_plans: dict[str, PstnPlan] = {}
        self.on_ivr: list[IvrListener] = []
        self._digits: dict[str, list[str]] = {}
        self._digit_gates: dict[str, Gate] = {}

    # ------------------------------------------------------------------ lookup
    def program(self, channel: Channel, context: str, exten: str) -> Program | None:
        """The program for a channel entering `exten@context`, None if there is no such extension."""
        factory = self._factory(context, exten)
        return None if factory is None else factory(channel)

    def exists(self, context: str, exten: str) -> bool:
        return self._factory(context, exten) is not None

    def _factory(self, context: str, exten: str) -> Callable[[Channel], Program] | None:
        if context == "ivr" and exten == "s":
            return self.ivr
        if context == "caller" and exten == "s":
            return self.caller
        if context == "dialer-connect" and exten == "s":
            return self.dialer_connect
        if context == "to-queue" and re.fullmatch(r"[a-z][a-z0-9_-]*", exten):
            return lambda ch: self.to_queue(ch, exten)
        if context == "fake-pstn" and re.fullmatch(r"\d{10}", exten):
            return self.fake_pstn
        if context == "agents":
            target = self.options.agent_aliases.get(exten, exten)
            agent = self.agents.get(target)
            if agent is not None:
                return lambda ch: self.agent_phone(ch, agent, alias=exten if target != exten else None)
        return None

    # ------------------------------------------------------------------ [caller]
    def caller(self, ch: Channel) -> Program:
        core = self.core
        core.newexten(ch, "Wait", "1", context="caller", exten="s", priority=1)
        yield 1.0
        digits = var(ch, "DIGITS")
        core.newexten(ch, "ExecIf", f"{1 if digits else 0}?SendDTMF({digits})", priority=2)
        if digits:
            yield from self._send_dtmf(ch, digits)
        stay = var(ch, "STAY", DEFAULT_STAY)
        core.newexten(ch, "Wait", stay, priority=3)
        yield float(stay)
        core.newexten(ch, "Hangup", "", priority=4)
        ch.hangup_cause = 16

    def _send_dtmf(self, ch: Channel, digits: str) -> Program:
        start = self.core.now
        for i, digit in enumerate(digits):
            at = start + i * DTMF_DIGIT_S + DTMF_GAP_S
            self.core.sched.call_at(at, partial(self._hear, ch, digit, False))
            self.core.sched.call_at(at + DTMF_HEARD_S, partial(self._hear, ch, digit, True))
        yield DTMF_GAP_S + DTMF_DIGIT_S * len(digits)

    def _hear(self, sender: Channel, digit: str, end: bool) -> None:
        far = sender.peer
        if far is None or far.gone:
            return
        self.core.dtmf(far, digit, "Received", end, int(DTMF_HEARD_S * 1000))
        if end:
            self.deliver_digit(far, digit)

    def deliver_digit(self, ch: Channel, digit: str) -> None:
        gate = self._digit_gates.pop(ch.uniqueid, None)
        if gate is not None:
            gate.fire(digit)
        else:
            self._digits.setdefault(ch.uniqueid, []).append(digit)

    def _wait_digit(self, ch: Channel, timeout_s: float) -> Gate:
        gate = Gate()
        queued = self._digits.get(ch.uniqueid)
        if queued:
            gate.fire(queued.pop(0))
            return gate
        self._digit_gates[ch.uniqueid] = gate
        self.core.sched.call_later(timeout_s, lambda: gate.fire(None))
        return gate

    # ------------------------------------------------------------------ [ivr]
    def ivr(self, ch: Channel) -> Program:
        core = self.core
        core.newexten(ch, "NoOp", f"IVR entry for {ch.callerid_all()}", context="ivr", exten="s", priority=1)
        priority = 1
        if self.options.agi_lookup:
            yield from self._agi_steps(ch)
            priority = 3
        core.newexten(ch, "Answer", "", priority=priority + 1)
        core.answer(ch)
        yield ANSWER_DELAY_S
        core.newexten(ch, "UserEvent", "IVR,Menu: main,Step: enter", priority=priority + 2)
        self._ivr_event(ch, "Step", "enter")
        core.newexten(ch, "Set", "TIMEOUT(digit)=3", priority=priority + 3)
        core.newexten(ch, "Set", "TIMEOUT(response)=6", priority=priority + 4)
        menu = priority + 5
        while True:
            core.newexten(ch, "WaitExten", "6", exten="s", priority=menu)
            digit = yield self._wait_digit(ch, 6.0)
            self._digit_gates.pop(ch.uniqueid, None)
            if digit is None:
                core.newexten(ch, "UserEvent", "IVR,Menu: main,Timeout: yes", exten="t", priority=1)
                self._ivr_event(ch, "Timeout", "yes")
                core.newexten(ch, "Hangup", "", priority=2)
                ch.hangup_cause = 16
                return
            if digit in self.options.ivr_menu:
                yield from self._choice(ch, digit)
                return
            core.set_var(ch, "INVALID_EXTEN", digit)
            core.newexten(ch, "UserEvent", f"IVR,Menu: main,Invalid: {digit}", exten="i", priority=1)
            self._ivr_event(ch, "Invalid", digit)
            core.newexten(ch, "Goto", "s,menu", priority=2)

    def _ivr_event(self, ch: Channel, kind: str, value: str) -> None:
        self.core.user_event(ch, "IVR", (("Menu", "main"), (kind, value)))
        for listener in self.on_ivr:
            listener(ch, kind, value)

    def _choice(self, ch: Channel, digit: str) -> Program:
        core = self.core
        core.newexten(ch, "UserEvent", f"IVR,Menu: main,Choice: {digit}", exten=digit, priority=1)
        self._ivr_event(ch, "Choice", digit)
        queue = self.options.ivr_menu[digit]
        if queue:
            core.newexten(ch, "Goto", f"to-queue,{queue},1", priority=2)
            yield from self.to_queue(ch, queue)
            return
        core.newexten(ch, "Wait", "2", priority=2)
        yield 2.0
        core.newexten(ch, "Hangup", "", priority=3)
        ch.hangup_cause = 16

    def _agi_steps(self, ch: Channel) -> Program:
        """The AMI side of `AGI(rec.agi,lookup,fr)`: the variables the script sets (the AGI
        protocol itself runs between Asterisk and the script and never reaches AMI)."""
        core = self.core
        enabled = var(ch, "AGIREC") == "1"
        core.newexten(ch, "ExecIf", f"{int(enabled)}?AGI(rec.agi,lookup,fr)", priority=2)
        customer, prio = "", ""
        if enabled:
            yield AGI_START_S
            customer, name, prio = self.agi_lookup(ch)
            core.set_var(ch, "CTI_CUSTOMER_ID", customer)
            core.set_caller(ch, ch.caller_num, name)
            core.set_var(ch, "QUEUE_PRIO", prio)
            yield AGI_REST_S
            core.set_var(ch, "AGISTATUS", "SUCCESS")
        core.newexten(
            ch, "ExecIf", f"{int(enabled)}?UserEvent(AgiDone,Customer: {customer},Prio: {prio})", priority=3
        )
        if enabled:
            core.user_event(ch, "AgiDone", (("Customer", customer), ("Prio", prio)))

    # ------------------------------------------------------------------ [to-queue], [dialer-connect]
    def to_queue(self, ch: Channel, name: str, announce: bool = True) -> Program:
        core = self.core
        timeout = var(ch, "QTIMEOUT", str(self.options.queue_timeout_s))
        options = self.options.queue_options
        if announce:
            core.newexten(
                ch, "Queue", f"{name},{options},,,{timeout}", context="to-queue", exten=name, priority=1
            )
        status = yield from self._queue(ch, name, int(timeout))
        if status == RESULT_HANGUP:
            return
        if status.startswith(GOTO):
            yield from self.continue_at(ch, *status[len(GOTO) :].split(":", 1))
            return
        core.newexten(ch, "UserEvent", f"QueueExit,Queue: {name},Status: {status}", priority=2)
        core.user_event(ch, "QueueExit", (("Queue", name), ("Status", status)))
        core.newexten(ch, "Hangup", "", priority=3)
        ch.hangup_cause = 16

    def _queue(self, ch: Channel, name: str, timeout: int) -> Any:
        queue = self.queues.get(name)
        if queue is None:
            self.core.set_var(ch, "QUEUESTATUS", "UNKNOWN")
            return "UNKNOWN"
        return (yield from self.queue_app.run(ch, queue, timeout))

    def continue_at(self, ch: Channel, context: str, exten: str) -> Program:
        """A channel sent elsewhere mid-application (async goto): its first step was already shown."""
        if context == "to-queue":
            yield from self.to_queue(ch, exten, announce=False)
            return
        program = self.program(ch, context, exten)
        if program is not None:
            yield from program

    def dialer_connect(self, ch: Channel) -> Program:
        core = self.core
        campaign = var(ch, "CAMPAIGN") or var(ch, "CTI_CAMPAIGN")
        contact = var(ch, "CONTACT") or var(ch, "CTI_CONTACT")
        core.newexten(
            ch,
            "UserEvent",
            f"DialerConnected,Campaign: {campaign},Contact: {contact}",
            context="dialer-connect",
            exten="s",
            priority=1,
        )
        core.user_event(ch, "DialerConnected", (("Campaign", campaign), ("Contact", contact)))
        # The daemon's Originate may name the queue (CTI_QUEUE, as in cti-dialer-connect).
        name = var(ch, "CTI_QUEUE") or self.options.outbound_queue
        timeout = self.options.outbound_queue_timeout_s
        core.newexten(ch, "Queue", f"{name},,,,{timeout}", priority=2)
        status = yield from self._queue(ch, name, timeout)
        if status == RESULT_HANGUP:
            return
        if status.startswith(GOTO):
            yield from self.continue_at(ch, *status[len(GOTO) :].split(":", 1))
            return
        core.newexten(ch, "Hangup", "", priority=3)
        ch.hangup_cause = 16

    # ------------------------------------------------------------------ [agents]
    def agent_for_member(self, phone: Channel, member: Member) -> Program:
        return self.agent_phone(phone, member.agent)

    def agent_phone(self, ch: Channel, agent: AgentSpec, alias: str | None = None) -> Program:
        core = self.core
        if alias is not None:
            core.newexten(ch, "Goto", f"{agent.exten},1", exten=alias, priority=1)
        answers, ring_s = self._draw_ring(agent)
        if not answers:
            core.newexten(ch, "Wait", _number(NEVER_S), exten=agent.exten, priority=1)
            yield NEVER_S
            return
        core.newexten(ch, "Wait", _number(ring_s), exten=agent.exten, priority=1)
        yield ring_s
        core.newexten(ch, "Answer", "", priority=2)
        core.answer(ch)
        yield ANSWER_DELAY_S
        talk = var(ch, "TALK", _number(agent.talk_s) if agent.talk_s else DEFAULT_TALK)
        core.newexten(ch, "Wait", talk, priority=3)
        yield float(talk)
        core.newexten(ch, "Hangup", "", priority=4)
        ch.hangup_cause = 16

    def _draw_ring(self, agent: AgentSpec) -> tuple[bool, float]:
        if not agent.answers:
            return False, NEVER_S
        rng = self.core.rng
        if agent.miss_rate and rng.random() < agent.miss_rate:
            return False, NEVER_S
        ring = agent.ring_s
        if agent.ring_jitter_s:
            ring = max(0.5, round(ring + rng.uniform(-agent.ring_jitter_s, agent.ring_jitter_s), 1))
        return True, ring

    # ------------------------------------------------------------------ [fake-pstn]
    def fake_pstn(self, ch: Channel) -> Program:
        core = self.core
        plan = self.pstn_plans.pop(ch.uniqueid, None) or PstnPlan(pstn_outcome(ch.exten))
        if plan.outcome == "no_answer":
            core.newexten(ch, "Wait", "120", context="fake-pstn", exten=ch.exten, priority=1)
            yield 120.0
            return
        if plan.outcome == "answered":
            yield from self._pstn_answers(ch, plan)
            return
        core.newexten(ch, "Wait", "1", context="fake-pstn", exten=ch.exten, priority=1)
        yield 1.0
        if plan.outcome == "rejected":
            core.newexten(ch, "Hangup", "", priority=2)
            ch.hangup_cause = 21
            return
        busy = plan.outcome == "busy"
        core.newexten(ch, "Busy" if busy else "Congestion", "5", priority=2)
        ch.hangup_cause = 17 if busy else 34
        core.set_state(ch, BUSY)
        core.indicate(ch, "busy" if busy else "congestion")
        yield 5.0

    def _pstn_answers(self, ch: Channel, plan: PstnPlan) -> Program:
        core = self.core
        core.newexten(ch, "Wait", _number(plan.ring_s), context="fake-pstn", exten=ch.exten, priority=1)
        yield plan.ring_s
        core.newexten(ch, "Answer", "", priority=2)
        core.answer(ch)
        yield ANSWER_DELAY_S
        talk = var(ch, "TALK", "10")
        core.newexten(ch, "Wait", talk, priority=3)
        yield float(talk)
        core.newexten(ch, "Hangup", "", priority=4)
        ch.hangup_cause = 16


def pstn_outcome(number: str) -> str:
    """The lab's fake PSTN decides by the number's last digit."""
    return {"1": "answered", "2": "busy", "3": "no_answer", "4": "congestion"}.get(number[-1:], "no_answer")
