"""AMI messages as they come off the wire."""

from __future__ import annotations


class Message(dict[str, str]):
    """One AMI message (event or response): header name → value.

    A header repeated inside one message (``Output:`` lines of a ``Command`` response,
    ``ChanVariable``) keeps every value, joined by ``\\n``.
    """

    __slots__ = ()

    @property
    def event(self) -> str | None:
        return self.get("Event")

    @property
    def response(self) -> str | None:
        return self.get("Response")

    @property
    def action_id(self) -> str | None:
        return self.get("ActionID")

    @property
    def is_list_start(self) -> bool:
        return self.get("EventList") == "start"

    @property
    def is_list_end(self) -> bool:
        # Asterisk ends lists with an event named "...Complete" carrying "EventList: Complete".
        return self.get("EventList", "").lower() == "complete"

    def lines(self, header: str) -> list[str]:
        value = self.get(header)
        return [] if value is None else value.split("\n")


# What Asterisk writes in a header that has no value: a caller ID, a Linkedid or a member name
# it does not know.
PLACEHOLDERS = frozenset({"", "<unknown>", "<null>", "unknown"})


def known(value: str | None) -> str | None:
    """The header's value, or None when it is missing or one of Asterisk's placeholders."""
    return None if value is None or value in PLACEHOLDERS else value
