"""Outgoing AMI actions: wire formatting and the typed helpers the daemon sends."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

_counter = itertools.count(1)


class ActionError(Exception):
    """Asterisk answered an action with ``Response: Error`` (the message says why)."""

    def __init__(self, action: str, message: str) -> None:
        super().__init__(f"{action}: {message}")
        self.action = action
        self.message = message


class ActionTimeout(TimeoutError):
    """No (complete) answer within the action's timeout."""


class LinkDown(ConnectionError):
    """The AMI link dropped (or was not up) before the action was answered."""


def next_action_id(action: str) -> str:
    return f"cti-{action.lower()}-{next(_counter)}"


def _clean(value: object) -> str:
    # CR/LF inside a value would let a caller-supplied string (a phone number from a CSV, a pause
    # reason typed by an agent) inject extra headers or whole actions into the AMI stream.
    return str(value).replace("\r", " ").replace("\n", " ")


def format_action(action: str, headers: Mapping[str, object], action_id: str) -> bytes:
    """Serialise one action. `Variable` may be a mapping: one ``Variable: k=v`` line each."""
    lines = [f"Action: {_clean(action)}", f"ActionID: {_clean(action_id)}"]
    for key, value in headers.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            lines.extend(f"{_clean(key)}: {_clean(k)}={_clean(v)}" for k, v in value.items())
        elif isinstance(value, list | tuple):
            lines.extend(f"{_clean(key)}: {_clean(v)}" for v in value)
        else:
            lines.append(f"{_clean(key)}: {_clean(value)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


# Actions whose answer is a list of events closed by an "...Complete" event.
LIST_ACTIONS = frozenset(
    {
        "coreshowchannels",
        "queuestatus",
        "queuesummary",
        "status",
        "sippeers",
        "pjsipshowendpoints",
        "pjsipshowcontacts",
        "agents",
        "bridgelist",
        "devicestatelist",
        "extensionstatelist",
        "parkedcalls",
    }
)
