"""The bus's wire format (cti/event_codec.py): every domain event type reads back equal to what
was written; what cannot be read is a clear EventDecodeError, never another exception."""

from __future__ import annotations

import contextlib
import inspect
import json
import types
import typing
from dataclasses import fields, is_dataclass
from typing import Any, Literal, Union

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cti import event_codec
from cti.calls import events as ev
from cti.calls.records import CallRecord, IvrStep, QueueSegment
from cti.event_codec import CODEC_VERSION, EVENT_TYPES, EventDecodeError, decode, encode
from cti.screenpop import campaign as pev
from cti.tickets import events as tev

JSON_LEAF = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
JSON = st.recursive(
    JSON_LEAF,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def event_types_in_modules() -> set[type[ev.Event]]:
    """Every concrete event type the domain modules define (an abstract base has no kind of its own)."""
    found = set()
    for module in (ev, tev, pev):
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, ev.Event) and is_dataclass(cls) and cls.kind != ev.Event.kind:
                found.add(cls)
    return found


def strategy(hint: Any) -> st.SearchStrategy[Any]:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return st.one_of(*(strategy(option) for option in typing.get_args(hint)))
    if origin is Literal:
        return st.sampled_from(typing.get_args(hint))
    if origin is list:
        return st.lists(strategy(typing.get_args(hint)[0]), max_size=3)
    if origin is dict:
        return st.dictionaries(st.text(max_size=8), JSON, max_size=4)
    if hint in (CallRecord, QueueSegment, IvrStep):
        return dataclass_strategy(hint)
    simple: dict[Any, st.SearchStrategy[Any]] = {
        type(None): st.none(),
        bool: st.booleans(),
        int: st.integers(),
        float: st.floats(allow_nan=False),
        str: st.text(),
    }
    assert hint in simple, f"the test has no values for {hint!r}: teach `strategy` this type"
    return simple[hint]


def dataclass_strategy(cls: type) -> st.SearchStrategy[Any]:
    hints = typing.get_type_hints(cls)
    return st.builds(cls, **{f.name: strategy(hints[f.name]) for f in fields(cls)})


ALL_EVENTS = st.one_of(*(dataclass_strategy(cls) for cls in sorted(event_types_in_modules(), key=str)))


def test_the_codec_knows_every_event_type_of_the_domain_modules() -> None:
    missing = event_types_in_modules() - set(EVENT_TYPES.values())
    assert not missing, f"event types the codec cannot carry: {sorted(c.__name__ for c in missing)}"
    assert all(kind == cls.kind for kind, cls in EVENT_TYPES.items())


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(ALL_EVENTS)
def test_every_event_reads_back_equal(event: ev.Event) -> None:
    data = encode(event)
    document = json.loads(data)
    assert document["v"] == CODEC_VERSION and document["kind"] == event.kind
    assert decode(data) == event


def test_a_call_ended_keeps_its_record_whole() -> None:
    record = CallRecord("pbx-a", "1700.1", "inbound", 1700.0, ended_at=1760.5, outcome="answered")
    record.segments.append(QueueSegment("support", 1710.0, 1720.0, "answered", "amina", "PJSIP/1001"))
    record.ivr_path.append(IvrStep(1705.0, "main", "choice", "1"))
    event = ev.CallEnded("pbx-a", 1760.5, "1700.1", record)
    back = decode(encode(event))
    assert back == event and isinstance(back, ev.CallEnded)
    assert back.record.queue == "support" and back.record.ivr_path[0].menu == "main"


def _document(**changes: Any) -> bytes:
    base = json.loads(encode(ev.LinkStateChanged("pbx", 1.0, True, "ok")))
    base.update(changes)
    return json.dumps(base).encode()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_document(v=2), "schema version 2 unknown"),
        (_document(v=None), "schema version None unknown"),
        (_document(kind="call_teleported"), "unknown event kind 'call_teleported'"),
        (_document(event={"server": "pbx", "at": 1.0, "up": True}), "missing ['detail']"),
        (_document(event={"server": "pbx", "at": 1.0, "up": True, "detail": "", "x": 1}), "unknown ['x']"),
        (_document(event={"server": "pbx", "at": "soon", "up": True, "detail": ""}), "at: expected float"),
        (_document(event={"server": "pbx", "at": 1.0, "up": 1, "detail": ""}), "up: expected bool"),
        (_document(event=[1, 2]), "expected an object"),
        (b"\xff\xfe", "not JSON"),
        (b"[]", "not a JSON object"),
        (
            b'{"v": 1, "kind": "call_ended", "event": {"server": "a", "at": 1, "linkedid": "x", "record": 3}}',  # noqa: E501
            "record: expected an object",
        ),
    ],
)
def test_what_cannot_be_read_says_why(data: bytes, message: str) -> None:
    with pytest.raises(EventDecodeError, match=None) as caught:
        decode(data)
    assert message in str(caught.value)


@settings(max_examples=300)
@given(st.binary(max_size=200) | JSON.map(lambda v: json.dumps(v).encode()))
def test_no_bytes_raise_anything_but_a_decode_error(data: bytes) -> None:
    with contextlib.suppress(EventDecodeError):
        decode(data)


def test_an_event_type_unknown_to_the_codec_is_refused_at_encoding() -> None:
    class Stray(ev.LinkStateChanged):
        kind = "stray"

    with pytest.raises(TypeError, match="EVENT_TYPES"):
        event_codec.encode(Stray("pbx", 1.0, True, ""))
