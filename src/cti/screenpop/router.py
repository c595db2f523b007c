"""Who gets which pop, and when. Pure logic: domain events in, (username, message) out.

- pop when an agent's phone rings (`agent_ringing`), with the call and whatever the directory
  already knows of the caller (the lookup starts when the call starts, not when it rings);
- withdraw it from every other ringing agent when one answers (ring-all queues), when the
  caller leaves, or when the agent's ring times out;
- update it on answer; transferred calls pop at the new agent with the same customer.
- a campaign call presents the callee: the call's own caller ID is the centre's number, so the
  pop shows the contact the dialer called (number and campaign fields) instead, and the
  directory's answer about the centre's number is not shown. The dialer's memory is on the
  node that dials: other nodes get the contact from the `CampaignContact` that node publishes
  after the call's `DialerConnected` (screenpop/campaign.py), and present it the same way.
An agent receives only the pops of the interfaces mapped to them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cti.calls import events as ev
from cti.directory.numbers import normalize
from cti.screenpop.campaign import CampaignContact, ContactSource

SCHEMA_VERSION = 1
Outgoing = tuple[str, dict[str, Any]]
# A call, across the PBXs one daemon hears: linkedids are only unique within one Asterisk.
CallKey = tuple[str, str]  # (server, linkedid)

__all__ = ["CallKey", "CallView", "ContactSource", "Outgoing", "PopRouter", "message"]


@dataclass
class CallView:
    """What a pop shows of a call."""

    server: str
    linkedid: str
    direction: str
    caller_raw: str | None = None
    caller_e164: str | None = None
    caller_name: str | None = None
    queue: str | None = None
    queue_joined_at: float | None = None
    ivr_path: list[str] = field(default_factory=list)
    customer: dict[str, Any] | None = None  # the directory's LookupResult as JSON
    ringing: dict[str, float] = field(default_factory=dict)  # username -> ringing since
    answered_by: str | None = None
    answered_at: float | None = None
    campaign: str | None = None
    contact: str | None = None
    # The contact as the dialling node's dialer knows it (`CampaignContact`, from another node).
    contact_details: dict[str, Any] | None = None

    @property
    def key(self) -> CallKey:
        return (self.server, self.linkedid)

    def to_json(self, now: float) -> dict[str, Any]:
        withheld = normalize(self.caller_raw).withheld  # the region does not matter for this
        return {
            "server": self.server,
            "linkedid": self.linkedid,
            "direction": self.direction,
            "caller": {
                "raw": self.caller_raw,
                "e164": self.caller_e164,
                "name": self.caller_name,
                "withheld": withheld,
            },
            "queue": self.queue,
            "ivr_path": list(self.ivr_path),
            "wait_s": None
            if self.queue_joined_at is None
            else round(max(0.0, now - self.queue_joined_at), 1),
            "customer": self.customer if self.customer is not None else {"status": "pending"},
            "state": "answered" if self.answered_by else "ringing",
            "answered_by": self.answered_by,
            "campaign": self.campaign,
            "contact": self.contact,
        }


def message(kind: str, **body: Any) -> dict[str, Any]:
    return {"v": SCHEMA_VERSION, "type": kind, **body}


class PopRouter:
    def __init__(
        self,
        user_for_interface: Callable[[str], str | None],
        region: str = "FR",
        campaign_contact: ContactSource | None = None,
    ) -> None:
        self.user_for_interface = user_for_interface
        self.region = region  # national caller IDs are read as numbers of this country
        self.campaign_contact = campaign_contact
        self.calls: dict[CallKey, CallView] = {}
        # username -> the call of the pop on their screen (for a reconnecting desktop)
        self.current: dict[str, CallKey] = {}
        self.unknown_interfaces: set[str] = set()

    def _user(self, interface: str) -> str | None:
        user = self.user_for_interface(interface)
        if user is None:
            self.unknown_interfaces.add(interface)
        return user

    def _call(self, event: ev.CallEvent) -> CallView:
        call = self.calls.get((event.server, event.linkedid))
        if call is None:
            call = CallView(event.server, event.linkedid, "inbound")
            self.calls[call.key] = call
        return call

    def feed(self, event: ev.Event) -> list[Outgoing]:
        handler = getattr(self, "_on_" + event.kind, None)
        if handler is None or not isinstance(event, ev.CallEvent):
            return []
        out: list[Outgoing] = handler(event)
        return out

    def pop_for(self, username: str, now: float) -> dict[str, Any] | None:
        """The pop a (re)connecting desktop should show, if any."""
        key = self.current.get(username)
        call = self.calls.get(key) if key is not None else None
        return None if call is None else message("pop", pop=call.to_json(now))

    # ----------------------------------------------------------------- events
    def _on_call_started(self, e: ev.CallStarted) -> list[Outgoing]:
        call = self._call(e)
        call.direction = e.direction
        call.caller_raw, call.caller_name = e.caller_raw, e.caller_name
        call.caller_e164 = normalize(e.caller_raw, self.region).e164 if e.caller_raw else None
        return []

    def _on_caller_identified(self, e: ev.CallerIdentified) -> list[Outgoing]:
        call = self._call(e)
        if call.campaign is not None:
            return []  # the centre's caller ID changing: the pop shows the callee
        call.caller_raw, call.caller_e164, call.caller_name = e.caller_raw, e.caller_e164, e.caller_name
        return []

    def _on_ivr_step(self, e: ev.IvrStepped) -> list[Outgoing]:
        self._call(e).ivr_path.append(f"{e.menu}:{e.step}={e.value}")
        return []

    def _on_queue_joined(self, e: ev.QueueJoined) -> list[Outgoing]:
        call = self._call(e)
        call.queue, call.queue_joined_at = e.queue, e.at
        return []

    def _on_dialer_connected(self, e: ev.DialerConnected) -> list[Outgoing]:
        call = self._call(e)
        call.direction, call.campaign, call.contact = "outbound", e.campaign, e.contact
        found = self.campaign_contact(e.campaign, e.contact) if self.campaign_contact else None
        if found is None and call.contact_details is not None:
            found = dict(call.contact_details)  # heard from the dialling node already
        contact = found or {"id": int(e.contact) if e.contact and e.contact.isdigit() else e.contact}
        self._present(call, contact)
        return []

    def _present(self, call: CallView, contact: dict[str, Any]) -> None:
        contact.setdefault("campaign", call.campaign)
        # The customer is the callee, not the centre's number the call carries as caller ID.
        phone = contact.get("phone")
        call.caller_raw, call.caller_e164, call.caller_name = contact.get("phone_raw") or phone, phone, None
        call.customer = {"status": "contact", "contact": contact}

    def _on_campaign_contact(self, e: CampaignContact) -> list[Outgoing]:
        """Another node's dialer's contact for this call (it follows the call's DialerConnected):
        presented as that node presents it; whoever already has the pop gets it updated."""
        call = self._call(e)
        call.contact_details = e.to_pop()
        if self.campaign_contact is not None and self.campaign_contact(e.campaign, e.contact):
            return []  # this node's own dialer knows it (and presented it already)
        call.direction, call.campaign, call.contact = "outbound", e.campaign, e.contact
        self._present(call, e.to_pop())
        return self._updates(call)

    def _updates(self, call: CallView) -> list[Outgoing]:
        users = set(call.ringing) | ({call.answered_by} if call.answered_by else set())
        now = max([call.answered_at or 0.0, *call.ringing.values(), call.queue_joined_at or 0.0])
        return [(u, message("pop.update", pop=call.to_json(now))) for u in sorted(users)]

    def _on_agent_ringing(self, e: ev.AgentRinging) -> list[Outgoing]:
        call = self._call(e)
        user = self._user(e.interface)
        if user is None:
            return []
        call.queue = e.queue or call.queue
        call.ringing[user] = e.at
        self.current[user] = call.key
        return [(user, message("pop", pop=call.to_json(e.at)))]

    def _withdraw(self, call: CallView, user: str, reason: str) -> list[Outgoing]:
        call.ringing.pop(user, None)
        if self.current.get(user) == call.key:
            del self.current[user]
        return [(user, message("pop.withdraw", server=call.server, linkedid=call.linkedid, reason=reason))]

    def _on_agent_ring_stopped(self, e: ev.AgentRingStopped) -> list[Outgoing]:
        call = self.calls.get((e.server, e.linkedid))
        user = self.user_for_interface(e.interface)
        if call is None or user is None or user not in call.ringing or call.answered_by == user:
            return []
        return self._withdraw(call, user, e.reason)

    def _on_call_answered(self, e: ev.CallAnswered) -> list[Outgoing]:
        call = self._call(e)
        user = self._user(e.interface)
        out: list[Outgoing] = []
        for other in [u for u in call.ringing if u != user]:
            out += self._withdraw(call, other, "answered_elsewhere")
        if user is None:
            return out
        call.ringing.pop(user, None)
        call.answered_by, call.answered_at = user, e.at
        self.current[user] = call.key
        out.append((user, message("pop.answered", pop=call.to_json(e.at))))
        return out

    def _on_call_transferred(self, e: ev.CallTransferred) -> list[Outgoing]:
        call = self.calls.get((e.server, e.linkedid))
        if call is None or call.answered_by is None:
            return []
        previous = call.answered_by
        call.answered_by = None
        if self.current.get(previous) == call.key:
            del self.current[previous]
        transferred = message("pop.transferred", server=call.server, linkedid=call.linkedid, target=e.target)
        out: list[Outgoing] = [(previous, transferred)]
        # An attended transfer outside any queue: the new party is known by its device only.
        target_user = self.user_for_interface(e.target) if e.target and e.transfer == "attended" else None
        if target_user is not None:
            call.answered_by, call.answered_at = target_user, e.at
            self.current[target_user] = call.key
            out.append((target_user, message("pop.answered", pop=call.to_json(e.at))))
        return out

    def _on_call_ended(self, e: ev.CallEnded) -> list[Outgoing]:
        call = self.calls.pop((e.server, e.linkedid), None)
        if call is None:
            return []
        out: list[Outgoing] = []
        for user in list(call.ringing):
            out += self._withdraw(call, user, "caller_left")
        if call.answered_by is not None:
            if self.current.get(call.answered_by) == call.key:
                del self.current[call.answered_by]
            out.append((call.answered_by, message("pop.ended", server=call.server, linkedid=call.linkedid)))
        return out

    def identified_customer(self, server: str, linkedid: str) -> int | None:
        """The customer the caller's number names without doubt: exactly one directory match."""
        call = self.calls.get((server, linkedid))
        lookup = call.customer if call is not None else None
        if not lookup or lookup.get("status") != "found":
            return None
        customers = lookup.get("customers") or []
        if len(customers) != 1 or not isinstance(customers[0].get("id"), int):
            return None
        return int(customers[0]["id"])

    def set_customer(self, server: str, linkedid: str, lookup: dict[str, Any]) -> list[Outgoing]:
        """The directory answered: update the pop of everyone who sees this call."""
        call = self.calls.get((server, linkedid))
        if call is None or call.campaign is not None:
            return []  # a campaign call's customer is its contact, not the centre's caller ID
        call.customer = lookup
        return self._updates(call)
