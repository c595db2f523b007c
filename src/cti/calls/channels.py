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


# Channel technologies a dial string may start with (`Tech/resource[/options]`).
_TECHS = frozenset({"Local", "PJSIP", "SIP", "IAX2", "DAHDI", "Motif", "WebRTC", "Console", "Multicast"})
_URI_SCHEMES = ("sip:", "sips:", "tel:")


def dialed_number(dial_string: str | None) -> str | None:
    """The number a dial string calls, whatever its form:

    `Local/0611111111@fake-pstn/n` (options after the last slash), `0611111111@fake-pstn/nj`
    (DialBegin's DialString: no technology), `PJSIP/+33611111111@trunk`,
    `PJSIP/trunk/sip:0611111111@operator.example` (an endpoint and a URI), `SIP/trunk/0611111111`
    (chan_sip's peer/number), `DAHDI/g1/0611111111`. A bare device (`PJSIP/1001`) names its
    resource. None when nothing number-like is there."""
    if not dial_string:
        return None
    parts = dial_string.strip().split("/")
    tech = parts.pop(0) if len(parts) > 1 and parts[0] in _TECHS else None
    if not parts:
        return None
    if tech == "Local":
        target = parts[0]  # anything after the next slash is Local channel options
    else:
        with_host = [p for p in parts if "@" in p]
        if with_host:
            target = with_host[0]
        elif tech is None and len(parts) > 1:
            target = parts[0]  # `exten/options` as DialBegin reports a Local dial
        else:
            target = parts[-1]  # SIP/peer/number, DAHDI/group/number, PJSIP/1001
    for scheme in _URI_SCHEMES:
        if target.lower().startswith(scheme):
            target = target[len(scheme) :]
            break
    number = target.split("@", 1)[0].split(";", 1)[0].strip()
    return number or None


# The accountcode the dialer's Originate gives a campaign call (`Account:`). Asterisk copies it
# to every channel of the call and echoes it in their events (`AccountCode`, `DestAccountCode`),
# so a campaign attempt is known as such from its first DialBegin, answered or not. The prefix
# keeps it apart from accountcodes a site sets on its own endpoints.
CAMPAIGN_ACCOUNT_PREFIX = "cti-campaign:"


def campaign_account(campaign: str) -> str:
    return CAMPAIGN_ACCOUNT_PREFIX + campaign


def campaign_of_account(accountcode: str | None) -> str | None:
    """The campaign a dialer call's accountcode names; None for any other accountcode."""
    if not accountcode or not accountcode.startswith(CAMPAIGN_ACCOUNT_PREFIX):
        return None
    return accountcode[len(CAMPAIGN_ACCOUNT_PREFIX) :] or None


def rings_a_device(dial_string: str) -> bool:
    """An Originate to `PJSIP/1001` rings that phone (click-to-call: the agent first); one to
    `Local/<number>@context` or `PJSIP/<number>@trunk` calls a number."""
    tech, _, resource = dial_string.partition("/")
    return bool(resource) and tech != "Local" and "@" not in resource


ORIGINATE_ANSWERED = 4  # OriginateResponse Reason: AST_CONTROL_ANSWER
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


# DIALSTATUS (DialEnd) of the leg a click-to-call's device dialled → outcome (as OriginateResponse's).
DIAL_STATUSES = {
    "ANSWER": "answered",
    "BUSY": "busy",
    "NOANSWER": "no_answer",
    "CONGESTION": "congestion",
    "CHANUNAVAIL": "failed",
    "CANCEL": "hangup",  # the agent hung up while it rang
}


def dial_status_outcome(status: str | None) -> str:
    """A dial that never started (an invalid number refused by the dialplan) failed."""
    return DIAL_STATUSES.get(status or "", "failed")
