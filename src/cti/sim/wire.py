"""AMI frames as Asterisk writes them: `Key: value` lines, CRLF, a blank line after each message.

Events are rendered once from their layout (`layouts.py`) and the same bytes go to every client.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from cti.sim.layouts import DEFAULT_PRIVILEGE, LAYOUTS, LIST_ITEMS, PRIVILEGES

BANNER = b"Asterisk Call Manager/11.0.0\r\n"
END = "\r\n\r\n"


class Snapshot(Protocol):
    """Something that renders its own block of headers (a channel or a bridge) under a prefix."""

    def block(self, prefix: str) -> str: ...


def _clean(value: object) -> str:
    # A value never spans lines: a caller name with a CR/LF must not inject headers.
    if type(value) is int:
        return str(value)
    text = str(value)
    if "\r" in text or "\n" in text:
        text = text.replace("\r", " ").replace("\n", " ")
    return text


# A layout compiled once: (True, slot, prefix) for a snapshot block, (False, header, "") otherwise.
_Compiled = tuple[tuple[bool, str, str], ...]
_compiled: dict[tuple[str, ...], _Compiled] = {}


def _compile(layout: tuple[str, ...]) -> _Compiled:
    compiled = _compiled.get(layout)
    if compiled is None:
        compiled = tuple((p[0] in "@#", p, p[1:]) for p in layout)
        _compiled[layout] = compiled
    return compiled


def _body(
    layout: tuple[str, ...],
    snapshots: Mapping[str, Snapshot],
    values: Mapping[str, object],
    lines: list[str],
) -> None:
    for is_block, part, prefix in _compile(layout):
        if is_block:
            lines.append(snapshots[part].block(prefix))
        else:
            lines.append(f"{part}: {_clean(values.get(part, ''))}")


def event(
    name: str,
    stamp: float | None,
    snapshots: Mapping[str, Snapshot] | None = None,
    values: Mapping[str, object] | None = None,
    *,
    variant: str | None = None,
    extra: Iterable[tuple[str, object]] = (),
    action_id: str | None = None,
) -> bytes:
    """One event frame. `snapshots` maps layout slots (`@`, `@Dest`, `#`...) to their snapshot."""
    lines = [f"Event: {name}", f"Privilege: {PRIVILEGES.get(name, DEFAULT_PRIVILEGE)}"]
    if stamp is not None:
        lines.append(f"Timestamp: {stamp:.6f}")
    if action_id is not None:
        lines.append(f"ActionID: {_clean(action_id)}")
    layout = LAYOUTS[f"{name}/{variant}" if variant else name]
    _body(layout, snapshots or {}, values or {}, lines)
    lines.extend(f"{key}: {_clean(value)}" for key, value in extra)
    return ("\r\n".join(lines) + END).encode()


def list_item(
    name: str,
    action_id: str,
    snapshots: Mapping[str, Snapshot] | None = None,
    values: Mapping[str, object] | None = None,
) -> bytes:
    """One item of a list answer (CoreShowChannel, QueueMember...): no Privilege, no Timestamp."""
    where, layout = LIST_ITEMS[name]
    lines = [f"Event: {name}"]
    if name == "Status":
        lines.append("Privilege: Call")
    if where == "lead":
        lines.append(f"ActionID: {_clean(action_id)}")
    _body(layout, snapshots or {}, values or {}, lines)
    if where == "tail":
        lines.append(f"ActionID: {_clean(action_id)}")
    return ("\r\n".join(lines) + END).encode()


def list_complete(name: str, action_id: str, items: int, *, with_items_header: bool = False) -> bytes:
    lines = [f"Event: {name}", f"ActionID: {_clean(action_id)}", "EventList: Complete", f"ListItems: {items}"]
    if with_items_header:
        lines.append(f"Items: {items}")
    return ("\r\n".join(lines) + END).encode()


def response(status: str, action_id: str | None, message: str | None = None, **more: object) -> bytes:
    """A `Response:`. Asterisk omits ActionID when the action had none."""
    lines = [f"Response: {status}"]
    if action_id is not None:
        lines.append(f"ActionID: {_clean(action_id)}")
    order = ("EventList", "Message")
    for key in order:
        if key in more:
            lines.append(f"{key}: {_clean(more.pop(key))}")
        elif key == "Message" and message is not None:
            lines.append(f"Message: {_clean(message)}")
    lines.extend(f"{key}: {_clean(value)}" for key, value in more.items())
    return ("\r\n".join(lines) + END).encode()


def command_output(action_id: str | None, output: Iterable[str]) -> bytes:
    """Asterisk 14+ answers `Command` with `Response: Success` and one `Output:` line per line."""
    lines = ["Response: Success"]
    if action_id is not None:
        lines.append(f"ActionID: {_clean(action_id)}")
    lines.append("Message: Command output follows")
    lines.extend(f"Output: {_clean(line)}" for line in output)
    return ("\r\n".join(lines) + END).encode()
