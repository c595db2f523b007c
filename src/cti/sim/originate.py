"""The Originate action: dial a Local channel, and when it answers send its `;1` into the dialplan.

What the captures show, and this reproduces: the `;1` half is the dialed leg (`AppDial2`), the
action's variables are set on it in reverse order and copied to `;2` in the action's order, caller
IDs first appear in `NewCallerid`, and the outcome comes back as an `OriginateResponse` (Async) or
as the action's Response (synchronous). A failed Async Originate names the dial string, not the
channel, and has `Uniqueid: <unknown>`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from cti.sim.channels import UNKNOWN, Channel
from cti.sim.config import REASONS
from cti.sim.core import Core
from cti.sim.dialplan import Dialplan, PstnPlan

_LOCAL = re.compile(r"^Local/(?P<exten>[^@/]+)@(?P<context>[^/]+)(?P<flags>/n)?$")
# Tell the action handler how it ended: (success, reason).
Done = Callable[[bool, int], None]


@dataclass
class OriginateRequest:
    channel: str
    context: str = ""
    exten: str = "s"
    priority: int = 1
    caller_id: str | None = None
    variables: list[tuple[str, str]] = field(default_factory=list)
    timeout_s: float = 30.0
    action_id: str | None = None
    is_async: bool = True
    # What the called party of a fake-PSTN call does (the outbound mix decides); None: the lab's rule.
    plan: PstnPlan | None = None


def parse_caller_id(text: str | None) -> tuple[str | None, str | None]:
    """`"Jean Dupont" <+33612345678>` / `Jean Dupont <+336...>` / `+336...` → (number, name)."""
    if not text:
        return None, None
    match = re.match(r'^\s*"?([^"<]*?)"?\s*<([^>]*)>\s*$', text)
    if match:
        return match.group(2) or None, match.group(1) or ""
    return text.strip(), ""


@dataclass(eq=False)
class Origination:
    request: OriginateRequest
    leg: Channel
    far: Channel
    done: Done | None
    caller: tuple[str | None, str | None]
    finished: bool = False


class Originator:
    def __init__(self, core: Core, dialplan: Dialplan) -> None:
        self.core = core
        self.dialplan = dialplan
        # Told when the dialed leg exists (before anything can fail), and of every outcome.
        self.on_dial: list[Callable[[OriginateRequest, Channel], None]] = []
        self.on_result: list[Callable[[OriginateRequest, Channel | None, int], None]] = []
        self.active: dict[str, Origination] = {}

    def originate(self, request: OriginateRequest, done: Done | None = None) -> Channel | None:
        """Start the call; returns the dialed `;1`, or None when nothing could be dialed."""
        match = _LOCAL.match(request.channel)
        if match is None:
            self._fail_without_channel(request, done)
            return None
        exten, context = match["exten"], match["context"]
        if request.plan is not None and request.plan.outcome == "failed":
            # The network refused the call before any channel existed (no route, trunk down).
            self._fail_without_channel(request, done)
            return None
        if not self.dialplan.exists(context, exten):
            self._fail_local(request, exten, context, done)
            return None
        return self._dial(request, exten, context, optimization=match["flags"] is None, done=done)

    # ------------------------------------------------------------------ failures before dialing
    def _fail_without_channel(self, request: OriginateRequest, done: Done | None) -> None:
        if done is not None:
            done(False, 0)
        self._response(request, None, 0, success=False)

    def _fail_local(self, request: OriginateRequest, exten: str, context: str, done: Done | None) -> None:
        """The Local channel cannot reach its extension: both halves are created and die at once."""
        core = self.core
        if done is not None:
            # Asterisk answers a synchronous Originate before these events reach the manager.
            done(False, 0)
        core.devices.invalid.add(f"Local/{exten}@{context}")
        leg, far = core.local_pair(exten, context)
        self._dialed(request, leg)
        core.newexten(leg, "AppDial2", "(Outgoing Line)")
        core.destroy(far)
        core.destroy(leg)
        self._response(request, leg, 0, success=False)

    def _dialed(self, request: OriginateRequest, leg: Channel) -> None:
        for listener in self.on_dial:
            listener(request, leg)

    # ------------------------------------------------------------------ dialing
    def _dial(
        self, request: OriginateRequest, exten: str, context: str, optimization: bool, done: Done | None
    ) -> Channel:
        core = self.core
        caller = parse_caller_id(request.caller_id)
        leg, far = core.local_pair(exten, context)
        self._dialed(request, leg)
        core.newexten(leg, "AppDial2", "(Outgoing Line)")
        # Asterisk builds the action's variable list by prepending: the dialed half gets them in
        # reverse; the far half copies them from the dialed half's list, in the action's order.
        for name, value in reversed(request.variables):
            core.set_var(leg, name, value)
        core.set_caller(leg, *caller)
        core.set_connected(leg, *caller)
        for name, value in request.variables:
            core.set_var(far, name, value)
        core.set_caller(far, *caller)
        core.set_connected(far, *caller)
        core.local_bridge(leg, far, optimization)
        core.emit("DialBegin", {"@Dest": leg}, {"DialString": f"{exten}@{context}"}, variant="originate")
        job = Origination(request, leg, far, done, caller)
        self.active[leg.uniqueid] = job
        leg.on_answer = lambda _leg: self._answered(job)
        leg.on_control = lambda control: self._refused(job, control)
        leg.owner = lambda _leg: self._far_hung_up(job)
        core.sched.call_later(request.timeout_s, lambda: self._timed_out(job))
        if request.plan is not None:
            self.dialplan.pstn_plans[far.uniqueid] = request.plan
        program = self.dialplan.program(far, context, exten)
        if program is not None:
            core.run(far, program)
        return leg

    def _finish(self, job: Origination, success: bool, reason: int) -> bool:
        if job.finished:
            return False
        job.finished = True
        self.active.pop(job.leg.uniqueid, None)
        job.leg.on_answer = job.leg.on_control = job.leg.owner = None
        if job.done is not None:
            job.done(success, reason)
        return True

    def _answered(self, job: Origination) -> None:
        if not self._finish(job, True, REASONS["answered"]):
            return
        core, leg, request = self.core, job.leg, job.request
        core.emit("DialEnd", {"@Dest": leg}, {"DialStatus": "ANSWER"}, variant="originate")
        self._response(request, leg, REASONS["answered"], success=True)
        leg.context, leg.exten, leg.priority = request.context, request.exten, request.priority
        leg.touch()
        program = self.dialplan.program(leg, request.context, request.exten)
        if program is not None:
            core.run(leg, program)
        else:
            core.thread_ended(leg)

    def _refused(self, job: Origination, control: str) -> None:
        reason = REASONS["busy" if control == "busy" else "congestion"]
        if not self._finish(job, False, reason):
            return
        status = "BUSY" if control == "busy" else "CONGESTION"
        self.core.emit("DialEnd", {"@Dest": job.leg}, {"DialStatus": status}, variant="originate")
        self._response(job.request, job.leg, reason, success=False)
        self.core.hangup_leg(job.leg, 0)

    def _timed_out(self, job: Origination) -> None:
        if not self._finish(job, False, REASONS["no_answer"]):
            return
        self.core.hangup_leg(job.leg, 19)
        self._response(job.request, job.leg, REASONS["no_answer"], success=False)

    def _far_hung_up(self, job: Origination) -> None:
        if not self._finish(job, False, REASONS["rejected"]):
            return
        self._response(job.request, job.leg, REASONS["rejected"], success=False)
        self.core.destroy(job.leg)

    # ------------------------------------------------------------------ OriginateResponse
    def _response(self, request: OriginateRequest, leg: Channel | None, reason: int, success: bool) -> None:
        for listener in self.on_result:
            listener(request, leg, reason)
        if not request.is_async:
            return
        number, name = parse_caller_id(request.caller_id)
        if not success:
            leg = None
        self.core.emit(
            "OriginateResponse",
            values={
                "Response": "Success" if leg is not None else "Failure",
                # A failed call has no channel any more: Asterisk names the dial string.
                "Channel": leg.name if leg is not None else request.channel.removesuffix("/n"),
                "Context": request.context,
                "Exten": request.exten,
                "Reason": reason,
                "Uniqueid": leg.uniqueid if leg is not None else UNKNOWN,
                "CallerIDNum": number or UNKNOWN,
                "CallerIDName": name or UNKNOWN,
            },
            action_id=request.action_id,
        )
