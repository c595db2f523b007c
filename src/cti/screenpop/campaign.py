"""A campaign call's contact, for the pops of other nodes (docs/scale-out.md, "Desktops on any
node").

The dialer keeps the contact it called in its memory, on the node that dials (the one holding
the campaign's lease, which tracks the campaign's PBX). Its own pops read it there
(`PopRouter(campaign_contact=...)`); the other nodes only hear the tracker's `DialerConnected`,
which names the contact by id. So when that node publishes a `DialerConnected` to the other
nodes, it publishes right after it a `CampaignContact`: the contact as its dialer knows it, the
way the pop shows it. A node's pop router presents it on the call's pop wherever it is built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from cti.calls import events as ev

# (campaign, contact id) of a DialerConnected → the contact as the dialer knows it, or None.
ContactSource = Callable[[str | None, str | None], dict[str, Any] | None]


@dataclass(frozen=True, slots=True)
class CampaignContact(ev.CallEvent):
    """The contact a campaign call is with, as the dialling node's dialer knows it (only ever
    published to other nodes, after the call's `DialerConnected`)."""

    kind: ClassVar[str] = "campaign_contact"
    campaign: str | None
    contact: str | None  # the contact's id, as in DialerConnected
    phone: str | None  # E.164
    phone_raw: str | None  # as imported
    fields: dict[str, Any]  # the campaign's own columns (name, offer...)

    def to_pop(self) -> dict[str, Any]:
        """The contact as `PopRouter` presents it (`ContactSource`'s shape)."""
        return {
            "id": int(self.contact) if self.contact and self.contact.isdigit() else self.contact,
            "campaign": self.campaign,
            "phone": self.phone,
            "phone_raw": self.phone_raw,
            "fields": dict(self.fields),
        }


def contact_companion(source: ContactSource) -> Callable[[ev.Event], list[ev.Event]]:
    """For the JetStream bus's `companions`: after a `DialerConnected` of one of this node's
    dialer's calls, its contact (nothing for any other event, or a contact the dialer does not
    know here: the pop then shows its id, as before). Reads the dialer's memory: no I/O."""

    def companions(event: ev.Event) -> list[ev.Event]:
        if not isinstance(event, ev.DialerConnected):
            return []
        found = source(event.campaign, event.contact)
        if not found:
            return []
        raw_fields = found.get("fields")
        return [
            CampaignContact(
                event.server,
                event.at,
                event.linkedid,
                event.campaign,
                event.contact,
                _text(found.get("phone")),
                _text(found.get("phone_raw")),
                dict(raw_fields) if isinstance(raw_fields, dict) else {},
            )
        ]

    return companions


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
