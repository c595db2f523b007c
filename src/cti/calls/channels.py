"""Channel-name helpers: Asterisk names a channel `<tech>/<resource>-<seq>[;1|;2]`."""

from __future__ import annotations

import re

_SUFFIX = re.compile(r"-[0-9a-f]{8}(;[12])?$")


def leg_of(channel: str) -> str:
    """The two halves of a Local channel pair (`;1`/`;2`) are one leg: drop the half marker."""
    return channel[:-2] if channel.endswith((";1", ";2")) else channel


def device_of(channel: str) -> str:
    """`PJSIP/1001-0000002a` → `PJSIP/1001`; `Local/2003@agents-00000014;1` → `Local/2003@agents`."""
    return _SUFFIX.sub("", channel)


def is_local_half(channel: str, half: str) -> bool:
    return channel.startswith("Local/") and channel.endswith(";" + half)


def dialed_number(dial_string: str | None) -> str | None:
    """The number part of a DialString (`0600000001@fake-pstn`, `PJSIP/0600000001@trunk`)."""
    if not dial_string:
        return None
    target = dial_string.rsplit("/", 1)[-1]
    return target.split("@", 1)[0] or None


ORIGINATE_REASONS = {
    0: "failed",
    1: "hangup",
    2: "local_hangup",
    3: "no_answer",
    4: "answered",
    5: "busy",
    8: "congestion",
}


def originate_outcome(reason: int) -> str:
    return ORIGINATE_REASONS.get(reason, f"unknown_{reason}")
