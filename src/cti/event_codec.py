"""Domain events as bytes, and back: the wire format of the bus when events leave the process
(NATS JetStream, docs/scale-out.md). Pure: no I/O.

One event is one JSON object, `{"v": 1, "kind": "<event kind>", "event": {<its fields>}}`:
`v` is the codec's schema version (`CODEC_VERSION`), `kind` the event's `kind`, `event` its
dataclass fields by name (a `call_ended`'s record as nested objects). Decoding gives back an
event equal to the one encoded. Every event type the bus carries is listed in `EVENT_TYPES`;
a new event type must be added there (tests/test_event_codec.py fails until it is).

What cannot be decoded (another schema version, an unknown kind, a field missing, unknown or of
the wrong type, bytes that are not JSON) raises `EventDecodeError` with what is wrong: a
consumer logs it, counts it and goes on; it never takes the consumer down.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import fields
from functools import cache
from typing import Any, Literal, Union

from cti.calls import events as ev
from cti.calls.records import CallRecord, IvrStep, QueueSegment
from cti.screenpop.campaign import CampaignContact
from cti.tickets import events as tev

CODEC_VERSION = 1

# Every event type that crosses the bus, by kind.
EVENT_TYPES: dict[str, type[ev.Event]] = {
    cls.kind: cls
    for cls in (
        ev.CallStarted,
        ev.CallerIdentified,
        ev.IvrStepped,
        ev.QueueJoined,
        ev.QueueLeft,
        ev.AgentRinging,
        ev.AgentRingStopped,
        ev.CallAnswered,
        ev.AgentCompleted,
        ev.CallAbandoned,
        ev.QueueTimedOut,
        ev.CallTransferred,
        ev.OriginateResult,
        ev.DialerConnected,
        ev.CallEnded,
        ev.AgentStateChanged,
        ev.LinkStateChanged,
        CampaignContact,
        tev.TicketOpened,
        tev.TicketUpdated,
        tev.TicketSlaBreached,
    )
}
_NESTED: tuple[type, ...] = (CallRecord, QueueSegment, IvrStep)


class EventDecodeError(ValueError):
    """Bytes that are not an event this codec reads; the message says why."""


def encode(event: ev.Event) -> bytes:
    """`event` as JSON bytes (compact, UTF-8)."""
    kind = event.kind
    if EVENT_TYPES.get(kind) is not type(event):
        raise TypeError(f"{type(event).__name__}: not an event type the codec knows (EVENT_TYPES)")
    body = {f.name: _plain(getattr(event, f.name)) for f in fields(event)}
    document = {"v": CODEC_VERSION, "kind": kind, "event": body}
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def _plain(value: Any) -> Any:
    if isinstance(value, CallRecord | QueueSegment | IvrStep):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def to_document(event: ev.Event) -> dict[str, Any]:
    """`event` as the JSON object `encode` writes (to embed it in a larger document)."""
    result: dict[str, Any] = json.loads(encode(event))
    return result


def from_document(document: Any) -> ev.Event:
    """The event a JSON object (as `to_document` gives it) holds; EventDecodeError otherwise."""
    if not isinstance(document, dict):
        raise EventDecodeError("not a JSON object")
    version, kind = document.get("v"), document.get("kind")
    if version != CODEC_VERSION:
        raise EventDecodeError(f"schema version {version!r} unknown (this codec reads {CODEC_VERSION})")
    cls = EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise EventDecodeError(f"unknown event kind {kind!r}")
    event = _build(cls, document.get("event"), str(kind))
    assert isinstance(event, ev.Event)
    return event


def decode(data: bytes) -> ev.Event:
    """The event `data` holds; EventDecodeError when it cannot be read."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise EventDecodeError(f"not JSON: {exc}") from None
    return from_document(document)


@cache
def _hints(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise EventDecodeError(f"{where}: expected an object, got {type(raw).__name__}")
    hints = _hints(cls)
    unknown = set(raw) - set(hints)
    missing = set(hints) - set(raw)
    if unknown or missing:
        raise EventDecodeError(f"{where}: fields unknown {sorted(unknown)}, missing {sorted(missing)}")
    values = {name: _value(raw[name], hint, f"{where}.{name}") for name, hint in hints.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:  # a __post_init__ that refuses
        raise EventDecodeError(f"{where}: {exc}") from None


def _value(raw: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        options = typing.get_args(hint)
        if raw is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _value(raw, option, where)
            except EventDecodeError as exc:
                errors.append(str(exc))
        raise EventDecodeError("; ".join(errors))
    if hint in _NESTED:
        return _build(hint, raw, where)
    if origin is list:
        if not isinstance(raw, list):
            raise EventDecodeError(f"{where}: expected a list, got {type(raw).__name__}")
        (item,) = typing.get_args(hint)
        return [_value(v, item, f"{where}[{i}]") for i, v in enumerate(raw)]
    if origin is dict or hint is dict:
        if not isinstance(raw, dict):
            raise EventDecodeError(f"{where}: expected an object, got {type(raw).__name__}")
        return raw
    if origin is Literal:
        if raw not in typing.get_args(hint):
            raise EventDecodeError(f"{where}: {raw!r} is not one of {typing.get_args(hint)}")
        return raw
    return _scalar(raw, hint, where)


def _scalar(raw: Any, hint: Any, where: str) -> Any:
    if hint is bool:
        ok = isinstance(raw, bool)
    elif hint is int:
        ok = isinstance(raw, int) and not isinstance(raw, bool)
    elif hint is float:
        ok = isinstance(raw, int | float) and not isinstance(raw, bool)
    elif hint is str:
        ok = isinstance(raw, str)
    elif hint is Any:
        ok = True
    else:
        raise EventDecodeError(f"{where}: no decoder for {hint!r}")
    if not ok:
        raise EventDecodeError(
            f"{where}: expected {getattr(hint, '__name__', hint)}, got {type(raw).__name__}"
        )
    return raw
