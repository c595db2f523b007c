"""Which Asterisk server an action goes to, when the daemon tracks several (issue 20, item 5).

A site with two PBXs has agents, queues and trunks on each: a pause, a click-to-call or a
hang-up sent to the wrong one is refused there at best ("Interface not found"), and at worst
acts on a namesake (`PJSIP/1001` can exist on both). So each action is routed by what the
trackers know, most certain first:

1. the configuration: the server whose `[[asterisk]] phones` patterns match one of the agent's
   interfaces or devices (what a node that owns no stream, and so tracks nothing, goes by);
2. a live call: the server that has a channel of the agent's phone right now;
3. a queue membership: the server whose queues list one of the agent's interfaces;
4. for a queue login, the queue: the server whose queue it is (a queue with members).

When a step finds the phone on two servers, the action is refused (409 `ambiguous-server`)
rather than guessed; when no step finds it, 409 `unknown-server`. A campaign and a call name
their server (`named`): an unknown name is 409 `unknown-server` too, never a crash. With one
server, everything goes to it, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Generic, TypeVar

from cti.calls.controls import ControlRefused, Phone
from cti.calls.tracker import CallTracker

L = TypeVar("L")


class UnknownServer(ControlRefused):
    """No configured server has this name, or none knows this phone or queue."""

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message, "unknown-server", 409, **details)


class AmbiguousServer(ControlRefused):
    """The phone is known on several servers: acting on one of them would be a guess."""

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message, "ambiguous-server", 409, **details)


@dataclass(frozen=True)
class Pbx(Generic[L]):
    """One configured Asterisk server: its name, the link actions go over, its tracker."""

    name: str
    link: L
    tracker: CallTracker
    phones: tuple[str, ...] = ()  # [[asterisk]] phones: glob patterns of its interfaces, devices

    def configured_for(self, phone: Phone) -> bool:
        names = [n for n in (*phone.interfaces, *phone.devices) if n]
        return any(fnmatchcase(n, pattern) for n in names for pattern in self.phones)


class PbxMap(Generic[L]):
    def __init__(self, pbxs: Sequence[Pbx[L]]) -> None:
        self.pbxs = list(pbxs)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.pbxs]

    def named(self, name: str | None) -> Pbx[L]:
        """The server called `name`; None or "": the first configured (the default)."""
        if not self.pbxs:
            raise ControlRefused("no Asterisk server is configured", "ami-unavailable", 503)
        if not name:
            return self.pbxs[0]
        for pbx in self.pbxs:
            if pbx.name == name:
                return pbx
        raise UnknownServer(
            f"no Asterisk server named {name!r} (known: {', '.join(self.names)})", server=name
        )

    def for_phone(self, phone: Phone, queue: str | None = None) -> Pbx[L]:
        """The server the agent's phone is on (module docstring for the order)."""
        if len(self.pbxs) == 1:
            return self.pbxs[0]
        steps: list[tuple[str, Callable[[Pbx[L]], bool]]] = [
            ("configured phones", lambda p: p.configured_for(phone)),
            ("live call", lambda p: any(phone.owns(c.name) for c in p.tracker.channels.values())),
            ("queue member", lambda p: any(i in phone.interfaces for _, i in p.tracker.members)),
        ]
        if queue:
            steps.append(("queue", lambda p: any(q == queue for q, _ in p.tracker.members)))
        for evidence, test in steps:
            found = [p for p in self.pbxs if test(p)]
            if len(found) == 1:
                return found[0]
            if found:
                raise AmbiguousServer(
                    f"{_shown(phone)} is on several Asterisk servers ({', '.join(p.name for p in found)})",
                    servers=[p.name for p in found],
                    evidence=evidence,
                )
        raise UnknownServer(
            f"no Asterisk server knows {_shown(phone)}" + (f" or queue {queue!r}" if queue else ""),
            phone=_shown(phone),
        )


def _shown(phone: Phone) -> str:
    names: Iterable[str] = (*phone.interfaces, *phone.devices)
    return ", ".join(n for n in names if n) or "no phone"
