"""Transfers an agent makes during a queue conversation (the BlindTransfer and Atxfer actions).

Blind: the agent's leg leaves the bridge and hangs up, the queue reports `AgentComplete` with
`Reason: transfer`, and the caller's channel is sent to the new extension (a second queue: one
call, two queue segments), as in `inbound_blind_transfer`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from cti.sim.channels import Bridge, Channel
from cti.sim.core import Core
from cti.sim.dialplan import Dialplan
from cti.sim.queueapp import Conversation, QueueApp


class TransferError(Exception):
    """The action cannot be done; the message is Asterisk's."""


class Transfers:
    def __init__(self, core: Core, queue_app: QueueApp, dialplan: Dialplan) -> None:
        self.core = core
        self.queue_app = queue_app
        self.dialplan = dialplan

    def conversation_of(self, channel: Channel) -> Conversation | None:
        for talk in self.queue_app.conversations.values():
            if channel in (talk.ring.leg, talk.ring.phone, talk.entry.channel):
                return talk
        return None

    def check_blind(self, channel: Channel | None, context: str, exten: str) -> Conversation:
        if channel is None:
            raise TransferError("No such channel")
        talk = self.conversation_of(channel)
        if talk is None or channel is talk.entry.channel:
            raise TransferError("Transfer failed")
        if not self.dialplan.exists(context, exten):
            raise TransferError("Transfer failed")
        return talk

    def blind(self, talk: Conversation, context: str, exten: str) -> None:
        """The agent's side hands the caller over to `exten@context`."""
        core = self.core
        leg, caller = talk.ring.leg, talk.entry.channel
        core.emit("Unhold", {"@": leg})
        core.set_var(caller, "BLINDTRANSFER", leg.name)
        core.set_var(leg, "BLINDTRANSFER", caller.name)
        core.set_var(leg, "BRIDGEPEER", "")
        core.emit(
            "BlindTransfer",
            {"@Transferer": leg, "@Transferee": caller, "#": talk.bridge},
            {"Result": "Success", "IsExternal": "Yes", "Context": context, "Extension": exten},
        )
        core.bridge_leave(leg)
        leg.owner = None
        core.hangup_leg(leg, 16)
        self.queue_app.transferred(talk, context, exten)


# The DTMF attended transfer (features.conf `atxfer => *2`) as Asterisk ran it in
# inbound_attended_transfer: the Atxfer action plays the feature code into the transferer's leg,
# the leg is put on hold, the digits of the target are read (the first at once, the others after
# the transfer prompt), then the consultation call is dialed.
ATXFER_CODE_GAP_S = 0.160  # between `*` and `2`
ATXFER_HOLD_S = 0.261
ATXFER_FIRST_DIGIT_S = 0.322
ATXFER_PROMPT_END_S = 1.002  # the other digits are read when the prompt has played
ATXFER_DIGIT_GAP_S = 0.060
PLAYED_DTMF_S = 0.100  # a digit played by PlayDTMF lasts this long
PLAYED_DTMF_GAP_S = 0.040


@dataclass(eq=False)
class Consultation:
    talk: Conversation
    context: str
    exten: str
    leg: Channel | None = None  # the consultation's dialed `;1` (the target's side)
    phone: Channel | None = None
    bridge: Bridge | None = None
    queued_digits: list[str] = field(default_factory=list)
    answered: bool = False
    done: bool = False

    @property
    def transferer(self) -> Channel:
        return self.talk.ring.leg


class AttendedTransfers:
    """Atxfer, PlayDTMF during it, and the transfer's completion when the transferer hangs up."""

    def __init__(self, core: Core, queue_app: QueueApp, dialplan: Dialplan, transfers: Transfers) -> None:
        self.core = core
        self.queue_app = queue_app
        self.dialplan = dialplan
        self.transfers = transfers
        self.active: dict[str, Consultation] = {}  # by the transferer leg's uniqueid
        # A phone plays one digit at a time: when each phone is free to play the next.
        self._free_at: dict[str, float] = {}
        self.on_completed: list[Callable[[Consultation], None]] = []

    def check(self, channel: Channel | None, context: str, exten: str) -> Conversation:
        if channel is None:
            raise TransferError("No such channel")
        talk = self.transfers.conversation_of(channel)
        if talk is None or channel is talk.entry.channel or talk.ring.leg.uniqueid in self.active:
            raise TransferError("Atxfer failed")
        if not self.dialplan.exists(context, exten):
            raise TransferError("Atxfer failed")
        return talk

    def start(self, talk: Conversation, context: str, exten: str) -> None:
        core, leg = self.core, talk.ring.leg
        consult = Consultation(talk, context, exten)
        self.active[leg.uniqueid] = consult
        core.set_var(leg, "TRANSFER_CONTEXT", context)
        core.dtmf(leg, "*", "Received", end=True, duration_ms=0)
        sched = core.sched
        sched.call_later(ATXFER_CODE_GAP_S, lambda: core.dtmf(leg, "2", "Received", end=True, duration_ms=0))
        sched.call_later(ATXFER_HOLD_S, lambda: core.emit("Hold", {"@": leg}))
        for i, digit in enumerate(exten):
            at = ATXFER_FIRST_DIGIT_S if i == 0 else ATXFER_PROMPT_END_S + ATXFER_DIGIT_GAP_S * (i - 1)
            last = i == len(exten) - 1
            sched.call_later(at, partial(self._digit, consult, digit, last))

    def _digit(self, consult: Consultation, digit: str, last: bool) -> None:
        if consult.done or consult.transferer.gone:
            return
        self.core.dtmf(consult.transferer, digit, "Received", end=True, duration_ms=0)
        if last:
            self._dial(consult)

    def _dial(self, consult: Consultation) -> None:
        """The consultation call: the transferer's leg leaves the caller's bridge for a new one
        with the target (no DialBegin: the bridge feature dials it)."""
        core, agent_leg = self.core, consult.transferer
        leg, phone = core.local_pair(consult.exten, consult.context, linkedid=agent_leg.linkedid)
        consult.leg, consult.phone = leg, phone
        core.set_var(leg, "TRANSFERERNAME", agent_leg.name)
        core.set_var(leg, "ATTENDEDTRANSFER", agent_leg.name)
        inherited = agent_leg.inheritable
        for name, value in inherited:
            core.set_var(leg, name, value)
        consult.bridge = core.bridge_create()
        core.set_var(phone, "ATTENDEDTRANSFER", agent_leg.name)
        core.set_var(phone, "TRANSFERERNAME", agent_leg.name)
        for name, value in reversed(inherited):
            core.set_var(phone, name, value)
        core.set_caller(phone, agent_leg.caller_num, agent_leg.caller_name)
        core.local_bridge(leg, phone, optimization=True)
        core.set_connected(leg, agent_leg.caller_num, agent_leg.caller_name)
        leg.on_answer = lambda _leg: self._answered(consult)
        program = self.dialplan.program(phone, consult.context, consult.exten)
        if program is not None:
            core.run(phone, program)
        core.bridge_enter(consult.bridge, leg)
        core.set_var(leg, "ATTENDEDTRANSFER", "")
        core.bridge_leave(agent_leg)
        core.bridge_enter(consult.bridge, agent_leg)
        core.set_bridge_peers(leg, agent_leg)
        core.set_connected(agent_leg, leg.caller_num, leg.caller_name)
        if consult.queued_digits:
            self._play_queued(consult)

    def _answered(self, consult: Consultation) -> None:
        core, leg = self.core, consult.leg
        assert leg is not None
        consult.answered = True
        core.emit("DialEnd", {"@Dest": leg}, {"DialStatus": "ANSWER"}, variant="originate")
        core.set_bridge_peers(leg, consult.transferer)

    # ------------------------------------------------------------------ PlayDTMF
    def play(self, channel: Channel, digit: str) -> None:
        """PlayDTMF on an agent's phone: the digit reaches its Local leg and whoever it is
        bridged with (the consultation target); while the feature reads digits it waits."""
        consult = self.active.get(channel.peer.uniqueid) if channel.peer is not None else None
        if consult is not None and consult.leg is None:
            consult.queued_digits.append(digit)
            return
        self._play(channel, digit, 0.0)

    def _play_queued(self, consult: Consultation) -> None:
        phone = consult.talk.ring.phone
        self._free_at[phone.uniqueid] = self.core.now + ATXFER_DIGIT_GAP_S
        for digit in consult.queued_digits:
            self._play(phone, digit, 0.0)
        consult.queued_digits.clear()

    def _play(self, phone: Channel, digit: str, delay: float) -> None:
        sched, ms = self.core.sched, int(PLAYED_DTMF_S * 1000)
        start = max(sched.now + delay, self._free_at.get(phone.uniqueid, 0.0))
        self._free_at[phone.uniqueid] = start + PLAYED_DTMF_S + PLAYED_DTMF_GAP_S
        sched.call_at(start, partial(self._dtmf_through, phone, digit, False, ms))
        sched.call_at(start + PLAYED_DTMF_S, partial(self._dtmf_through, phone, digit, True, ms))

    def _dtmf_through(self, phone: Channel, digit: str, end: bool, ms: int) -> None:
        leg = phone.peer
        if leg is None or leg.gone:
            return
        self.core.dtmf(leg, digit, "Received", end, ms)
        bridge = leg.bridge
        for other in bridge.channels if bridge is not None else ():
            if other is not leg and other.peer is not None and other.name.startswith("Local/"):
                self.core.dtmf(other, digit, "Sent", end, ms)
                if other.peer.alive:
                    self.core.dtmf(other.peer, digit, "Received", end, ms)

    # ------------------------------------------------------------------ completion
    def transferer_hangs_up(self, channel: Channel, cause: int) -> bool:
        """The transferer's phone is hung up during a consultation: the transfer completes."""
        consult = self.active.get(channel.peer.uniqueid) if channel.peer is not None else None
        if consult is None or consult.leg is None or consult.done or channel is not consult.talk.ring.phone:
            return False
        self._complete(consult, channel, cause)
        return True

    def _complete(self, consult: Consultation, phone: Channel, cause: int) -> None:
        core, talk = self.core, consult.talk
        agent_leg, target, caller = consult.transferer, consult.leg, talk.entry.channel
        assert target is not None and consult.bridge is not None
        consult.done = True
        self.active.pop(agent_leg.uniqueid, None)
        core.set_var(agent_leg, "BRIDGEPEER", "")
        core.bridge_leave(agent_leg)
        phone.hangup_cause = cause
        core.emit("HangupRequest", {"@": phone}, {"Cause": cause})
        phone.hangup_requested = True
        core.emit("BridgeMerge", {"#To": talk.bridge, "#From": consult.bridge})
        core.bridge_leave(target)
        core.bridge_enter(talk.bridge, target)
        self._end_phone(phone)
        core.set_bridge_peers(caller, target)
        core.destroy(phone)
        core.set_caller(phone, phone.caller_num, phone.caller_name)
        core.set_connected(caller, target.caller_num, target.caller_name)
        core.emit(
            "AttendedTransfer",
            {
                "@OrigTransferer": agent_leg,
                "#Orig": talk.bridge,
                "@SecondTransferer": agent_leg,
                "#Second": consult.bridge,
                "@Transferee": caller,
                "@TransferTarget": target,
            },
            {
                "Result": "Success",
                "IsExternal": "No",
                "DestType": "Bridge",
                "DestBridgeUniqueid": talk.bridge.uniqueid,
            },
        )
        self.queue_app.attended_transfer_done(talk, target)
        core.bridge_destroy(consult.bridge)
        agent_leg.owner = None
        core.destroy(agent_leg)
        # After the transfer, the caller's own Local half learns its new partner's identity when
        # it goes (the NewCallerid after its Hangup in the capture).
        if caller.peer is not None:
            caller.peer.late_callerid = True
        for listener in self.on_completed:
            listener(consult)

    def _end_phone(self, phone: Channel) -> None:
        """The transferer's phone stops its dialplan without telling its leg (the transfer took it)."""
        if phone.thread is not None:
            phone.thread.kill()
        self.core.emit("SoftHangupRequest", {"@": phone}, {"Cause": 16})
