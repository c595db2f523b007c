"""The simulated PBX without its network side: the core, the queues, the dialplan, Originate,
transfers and the ground-truth log, wired together on one scheduler."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

from cti.sim.channels import Channel
from cti.sim.clock import Scheduler
from cti.sim.config import REASONS, SimConfig
from cti.sim.core import Core, Sink
from cti.sim.dialplan import Dialplan, PstnPlan
from cti.sim.originate import OriginateRequest, Originator, parse_caller_id
from cti.sim.queueapp import QueueApp
from cti.sim.queues import Member, Queue, Queues
from cti.sim.threads import Program
from cti.sim.traffic import draw
from cti.sim.transfers import AttendedTransfers, Transfers
from cti.sim.truth import Truth

# Who hung up, by the context of the channel whose dialplan ended the call by itself.
_HANGUP_BY = {
    "caller": "caller",
    "fake-pstn": "caller",
    "agents": "agent",
    "ivr": "system",
    "to-queue": "system",
    "dialer-connect": "system",
}


class Engine:
    def __init__(self, config: SimConfig, sink: Sink, start: float | None = None) -> None:
        self.config = config
        self.started_at = config.start() if start is None else start
        self.sched = Scheduler(self.started_at)
        self.rng = random.Random(config.seed)
        self.core = Core(
            self.sched,
            self.rng,
            sink,
            config.initial_device_states,
            config.first_uniqueid,
            config.first_local,
        )
        self.queues = Queues(self.core, config.queues, config.agents)
        for name, position in config.initial_rrpos.items():
            queue = self.queues.get(name)
            if queue is not None:
                queue.rrpos = position
        self.queue_app = QueueApp(self.core, self.queues, self._agent_program)
        self.dialplan = Dialplan(self.core, self.queues, self.queue_app, config.dialplan, config.agents)
        self.originator = Originator(self.core, self.dialplan)
        self.transfers = Transfers(self.core, self.queue_app, self.dialplan)
        self.attended = AttendedTransfers(self.core, self.queue_app, self.dialplan, self.transfers)
        self.truth = Truth()
        self._originates = itertools.count(1)
        # FullyBooted's Uptime: the lab PBX had been up a while when a capture started.
        self.uptime_offset_s = config.uptime_s
        self._wire_truth()

    def _agent_program(self, phone: Channel, member: Member) -> Program:
        return self.dialplan.agent_for_member(phone, member)

    @property
    def now(self) -> float:
        return self.sched.now

    # ------------------------------------------------------------------ ground truth
    def _wire_truth(self) -> None:
        truth, core = self.truth, self.core
        core.on_create.append(truth.channel_created)
        core.on_destroy.append(lambda ch: truth.channel_gone(ch, core.now))
        core.on_thread_end.append(self._thread_end)
        self.dialplan.on_ivr.append(lambda ch, kind, value: truth.ivr(ch.linkedid, kind, value))
        app = self.queue_app
        app.on_join.append(lambda ch, q: truth.joined(ch.linkedid, q.name, core.now))
        app.on_connect.append(
            lambda ch, q, m, waited: truth.connected(ch.linkedid, q.name, m.name, waited, core.now)
        )
        app.on_complete.append(
            lambda ch, q, m, reason: truth.completed(ch.linkedid, q.name, reason, core.now)
        )
        app.on_leave.append(lambda ch, q, outcome, waited: truth.left(ch.linkedid, q.name, outcome, waited))
        app.on_conversation_over.append(lambda ch: truth.conversation_over(ch.linkedid, core.now))
        self.attended.on_completed.append(
            lambda consult: truth.transferred(consult.talk.entry.channel.linkedid, core.now)
        )
        self.originator.on_dial.append(self._dialed)
        self.originator.on_result.append(self._originate_result)

    def _thread_end(self, channel: Channel, voluntary: bool) -> None:
        if voluntary:
            self.truth.hung_up_first(channel.linkedid, _HANGUP_BY.get(channel.context, "system"))

    def _originate_result(self, request: OriginateRequest, leg: Channel | None, reason: int) -> None:
        if leg is not None:
            self.truth.originated(leg.linkedid, reason)
            if reason != REASONS["answered"]:
                # Nobody answered: the called party refused (busy, rejected) or the PBX gave up.
                refused = reason in (REASONS["busy"], REASONS["rejected"])
                self.truth.hung_up_first(leg.linkedid, "caller" if refused else "system")
            return
        # Nothing could be dialed (not a Local channel): the attempt is still a call of the log.
        linkedid = f"originate-{request.action_id}"
        self.truth.call_started(linkedid, "outbound", self.now, (None, None), _called(request))
        self.truth.originated(linkedid, reason)
        self.truth.hung_up_first(linkedid, "system")
        self.truth.calls[linkedid].ended_at = self.now
        self.truth.calls[linkedid].settle()

    def _dialed(self, request: OriginateRequest, leg: Channel) -> None:
        inbound = "@ivr" in request.channel
        caller = parse_caller_id(request.caller_id)
        direction = "inbound" if inbound else "outbound"
        self.truth.call_started(
            leg.linkedid, direction, self.now, caller, None if inbound else _called(request)
        )

    # ------------------------------------------------------------------ calls
    def originate(
        self, request: OriginateRequest, done: Callable[[bool, int], None] | None = None
    ) -> Channel | None:
        """Run an Originate; the call is logged as inbound when it enters the IVR (the lab's way of
        making a customer call), outbound otherwise."""
        if request.action_id is None and request.is_async:
            request.action_id = f"sim-originate-{next(self._originates)}"
        mix = self.config.outbound_mix
        if request.plan is None and "@fake-pstn" in request.channel and not mix.by_last_digit:
            # The called party's answer follows the configured mix, drawn per call.
            outcome = draw(self.rng, mix.weights())
            request.plan = PstnPlan(outcome, round(self.rng.uniform(1.0, 6.0), 1))
        return self.originator.originate(request, done)

    def inbound_call(
        self,
        caller: str,
        name: str = "",
        digits: str = "1",
        stay_s: float = 30.0,
        talk_s: float | None = None,
        queue_timeout_s: int | None = None,
        agi: bool = False,
        action_id: str | None = None,
    ) -> str:
        """A customer calls: the lab's `Originate Local/s@ivr` whose `;1` plays the customer
        ([caller]: dials `digits`, hangs up after `stay_s`) and whose `;2` runs the IVR."""
        variables = [("DIGITS", digits), ("STAY", _number(stay_s))]
        if talk_s is not None:
            variables.append(("__TALK", _number(talk_s)))
        if queue_timeout_s is not None:
            variables.append(("__QTIMEOUT", str(queue_timeout_s)))
        if agi:
            variables.append(("__AGIREC", "1"))
        caller_id = f'"{name}" <{caller}>' if name else caller
        request = OriginateRequest(
            "Local/s@ivr", "caller", "s", caller_id=caller_id, variables=variables, action_id=action_id
        )
        leg = self.originate(request)
        assert leg is not None
        return leg.linkedid

    def outbound_call(
        self,
        number: str,
        *,
        outcome: str | None = None,
        ring_s: float = 2.0,
        talk_s: float | None = None,
        campaign: str = "c1",
        contact: str = "",
        timeout_s: float = 30.0,
        action_id: str | None = None,
    ) -> str | None:
        """A dialer call to `number`: answered ones run [dialer-connect] and wait in `outbound`."""
        variables = [("CAMPAIGN", campaign), ("CONTACT", contact)]
        if talk_s is not None:
            variables.append(("__TALK", _number(talk_s)))
        plan = PstnPlan(outcome, ring_s) if outcome is not None else None
        request = OriginateRequest(
            f"Local/{number}@fake-pstn",
            "dialer-connect",
            "s",
            variables=variables,
            timeout_s=timeout_s,
            action_id=action_id,
            plan=plan,
        )
        leg = self.originate(request)
        return None if leg is None else leg.linkedid

    # ------------------------------------------------------------------ restart
    def shutdown_channels(self) -> None:
        """`core restart now`: every channel gets a shutdown soft hangup (cause 4) and unwinds."""
        for channel in list(self.core.channels.values()):
            self.core.request_hangup(channel, 4, soft=True, defer=True)

    def reboot(self) -> None:
        """A new Asterisk process: no channels, statistics at zero, identifiers from the start."""
        for channel in list(self.core.channels.values()):
            if channel.thread is not None:
                channel.thread.kill()
            channel.gone = True
        self.core.channels.clear()
        self.started_at = self.now
        self.uptime_offset_s = 1
        self.core.reset()
        self.queues.reset()
        self.queue_app.conversations.clear()

    def queue(self, name: str) -> Queue | None:
        return self.queues.get(name)


def _number(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


def _called(request: OriginateRequest) -> str:
    return request.channel.split("/", 1)[-1].split("@", 1)[0]
