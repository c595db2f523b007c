"""The wire format of an AMI action one node asks another to send (docs/scale-out.md, "Actions
to the right PBX"): a request and its reply, each one JSON object with a version `v`.

An agent's action (a pause, a click-to-call, a transfer, a ChanSpy) is decided where the HTTP
request arrived: who may do it, on which phone, which channel. What crosses the wire is only
the AMI action that results, for the node that owns the server's stream to send on its link:

    request: {"v": 1, "id": "node-b-3f2a…", "server": "paris", "action": "QueuePause",
              "headers": {"Interface": "PJSIP/1001", "Paused": "true"}, "listing": false,
              "timeout_s": 5.0, "sent_at": 1765080000.25, "origin": "node-b"}
    reply:   {"v": 1, "id": "node-b-3f2a…", "outcome": "ok", "message": "",
              "response": {"Response": "Success", …}, "items": [{…}, …]}

`outcome` says what happened at the owner: `ok`, `refused` (Asterisk answered Error:
`message` says why), `link-down`, `timeout` (its AMI link's), `not-owner` (that node no longer
owns the stream: ask again), `expired` (the request reached it too late to be started, see
`ActionRelay`), `not-allowed` (an action no desktop sends). No I/O here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

WIRE_VERSION = 1

Outcome = Literal["ok", "refused", "link-down", "timeout", "not-owner", "expired", "not-allowed"]
OUTCOMES: frozenset[str] = frozenset(get_args(Outcome))

# The AMI actions the agents', supervisors' and call controls send: an owner sends no other
# action on another node's behalf (a node asking for `Command` or `Logoff` is refused).
FORWARDED_ACTIONS = frozenset(
    {
        "Atxfer",
        "BlindTransfer",
        "CancelAtxfer",
        "CoreShowChannels",
        "Hangup",
        "Originate",
        "PlayDTMF",
        "QueueAdd",
        "QueuePause",
        "QueueRemove",
        "QueueStatus",
        "Setvar",
    }
)

HeaderValue = str | list[str] | dict[str, str] | None


class WireError(ValueError):
    """Bytes that are not a request or reply of a version this node reads: says what is wrong."""


def wire_headers(headers: Mapping[str, object]) -> dict[str, HeaderValue]:
    """An action's headers as the wire carries them: a mapping stays one (`Variable`), a list a
    list, None is kept (the link skips it), anything else becomes its text, as the link writes it."""
    out: dict[str, HeaderValue] = {}
    for key, value in headers.items():
        if value is None:
            out[str(key)] = None
        elif isinstance(value, Mapping):
            out[str(key)] = {str(k): str(v) for k, v in value.items()}
        elif isinstance(value, list | tuple):
            out[str(key)] = [str(v) for v in value]
        else:
            out[str(key)] = str(value)
    return out


@dataclass(frozen=True)
class ActionRequest:
    id: str  # the idempotency id: an owner sends the action of one id once
    server: str
    action: str
    headers: dict[str, HeaderValue]
    listing: bool  # a list action (CoreShowChannels): the reply carries its items
    timeout_s: float  # the owner's AMI timeout for it
    sent_at: float  # the asking node's wall clock
    origin: str  # the asking node

    def encode(self) -> bytes:
        body = {"v": WIRE_VERSION, **self.__dict__}
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> ActionRequest:
        raw = _object(data, "request")
        headers = raw.get("headers")
        if not isinstance(headers, dict) or not all(_header_ok(v) for v in headers.values()):
            raise WireError("request: headers must map names to text, lists or tables of text")
        return cls(
            id=_text(raw, "id"),
            server=_text(raw, "server"),
            action=_text(raw, "action"),
            headers=headers,
            listing=_flag(raw, "listing"),
            timeout_s=_number(raw, "timeout_s"),
            sent_at=_number(raw, "sent_at"),
            origin=_text(raw, "origin"),
        )


@dataclass(frozen=True)
class ActionReply:
    id: str
    outcome: Outcome
    message: str = ""
    response: dict[str, str] = field(default_factory=dict)
    items: list[dict[str, str]] = field(default_factory=list)

    def encode(self) -> bytes:
        body = {"v": WIRE_VERSION, **self.__dict__}
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> ActionReply:
        raw = _object(data, "reply")
        outcome = _text(raw, "outcome")
        if outcome not in OUTCOMES:
            raise WireError(f"reply: unknown outcome {outcome!r}")
        response, items = raw.get("response", {}), raw.get("items", [])
        if not _texts(response) or not isinstance(items, list) or not all(_texts(i) for i in items):
            raise WireError("reply: response and items must be tables of text")
        return cls(_text(raw, "id"), outcome, _text(raw, "message"), response, items)  # type: ignore[arg-type]


def _object(data: bytes, what: str) -> dict[str, Any]:
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError(f"{what}: not JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise WireError(f"{what}: not a JSON object")
    if raw.get("v") != WIRE_VERSION:
        raise WireError(f"{what}: wire version {raw.get('v')!r}, this node reads {WIRE_VERSION}")
    return raw


def _text(raw: Mapping[str, Any], key: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str):
        raise WireError(f"{key}: expected text, got {value!r}"[:200])
    return value


def _flag(raw: Mapping[str, Any], key: str) -> bool:
    value = raw.get(key)
    if not isinstance(value, bool):
        raise WireError(f"{key}: expected true or false, got {value!r}"[:200])
    return value


def _number(raw: Mapping[str, Any], key: str) -> float:
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WireError(f"{key}: expected a number, got {value!r}"[:200])
    return float(value)


def _texts(value: object) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


def _header_ok(value: object) -> bool:
    if value is None or isinstance(value, str) or _texts(value):
        return True
    return isinstance(value, list) and all(isinstance(v, str) for v in value)
