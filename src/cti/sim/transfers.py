"""Transfers an agent makes during a queue conversation (the BlindTransfer and Atxfer actions).

Blind: the agent's leg leaves the bridge and hangs up, the queue reports `AgentComplete` with
`Reason: transfer`, and the caller's channel is sent to the new extension (a second queue: one
call, two queue segments), as in `inbound_blind_transfer`.
"""

from __future__ import annotations

from cti.sim.channels import Channel
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
