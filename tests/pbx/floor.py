"""The call-centre floor of the tier: agents' phones registered and logged in, callers calling."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from lab import Asterisk
from sipp import Answer, Dial, Phone, SipLab, Sipp

DID = "0180000000"  # the number callers dial; the trunk sends it as the Request-URI


def agent_password(extension: str) -> str:
    """The shipped lab password of a pjsip.conf agent (docker lab and tier alike)."""
    return f"lab-{extension}-change-me"


async def register(sip: SipLab, extension: str, answer: Answer | None = None) -> Phone:
    return await asyncio.to_thread(sip.phone, extension, agent_password(extension), answer)


async def finish(process: Sipp, timeout_s: float = 60.0) -> int:
    return await asyncio.to_thread(process.wait, timeout_s)


async def log_in(
    pbx: Asterisk, sip: SipLab, extensions: Iterable[str], answer: Answer | None = None
) -> dict[str, Phone]:
    """Register each agent's phone and log it in with the *41 feature code, as agents do."""
    phones: dict[str, Phone] = {}
    for extension in extensions:
        phone = await register(sip, extension, answer)
        login = phone.dial("*41")
        code = await finish(login, 20)
        assert code == 0, f"*41 from {extension} failed: {login.errors()}\n{pbx.tail()}"
        phones[extension] = phone
    return phones


def call_in(
    sip: SipLab,
    pbx: Asterisk,
    keys: str,
    *,
    caller: str = "0612345678",
    name: str = "",
    hangup_after_ms: int | None = None,
    line: int = 0,
) -> Sipp:
    """A customer calls the centre through the trunk and keys `keys` in the SVI."""
    return sip.call(
        Dial(to=DID, caller=caller, caller_name=name, dtmf=keys, dtmf_delay_ms=1200,
             hangup_after_ms=hangup_after_ms),
        port=pbx.ports.callers[line],
    )  # fmt: skip


@dataclass(frozen=True)
class Invite:
    """An initial INVITE a SIPp phone or the PSTN received, as its message log has it."""

    at: float  # when it arrived (epoch)
    user: str  # the Request-URI user: the number dialled
    from_user: str  # the caller ID it was sent with
    headers: dict[str, list[str]]

    def header(self, name: str) -> list[str]:
        return self.headers.get(name.lower(), [])


_LOGGED = re.compile(
    # "UDP message received [983] bytes :" / "UDP message sent (373 bytes):", then the message
    r"-{10,} (\S+ \S+)\n\w+ message (received|sent) (?:\[\d+\] bytes :|\(\d+ bytes\):)\n\n"
    r"(.*?)(?=\n-{10,} |\Z)",
    re.S,
)


def logged_messages(sip: SipLab, stem: str) -> list[tuple[float, str, list[str]]]:
    """(epoch, "received"/"sent", lines) of every SIP message in the logs of the SIPp processes
    named `stem` ("pstn", "phone-1003"), in the order of their logs."""
    found = []
    for path in sorted(sip.workdir.glob(f"*-{stem}.messages.log")):
        for stamp, way, text in _LOGGED.findall(path.read_text(errors="replace")):
            at = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").timestamp()  # SIPp logs local time
            found.append((at, way, text.splitlines()))
    return found


def received_invites(sip: SipLab, stem: str) -> list[Invite]:
    """Initial INVITEs (no To tag: not re-INVITEs) received by the SIPp processes named `stem`."""
    found = []
    for at, way, lines in logged_messages(sip, stem):
        if way != "received" or not lines or not lines[0].startswith("INVITE "):
            continue
        headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            if not line.strip():
                break
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        if "tag=" in "".join(headers.get("to", [])):
            continue
        found.append(Invite(at, _sip_user(lines[0].split()[1]), _sip_user(headers["from"][0]), headers))
    return found


def answered_at(sip: SipLab, stem: str) -> list[float]:
    """When the SIPp processes named `stem` sent a 200 OK to an INVITE: the first answered the
    call, any later one a re-INVITE."""
    return [
        at
        for at, way, lines in logged_messages(sip, stem)
        if way == "sent"
        and lines
        and lines[0].startswith("SIP/2.0 200")
        and any(line.startswith("CSeq:") and line.endswith("INVITE") for line in lines)
    ]


def _sip_user(uri: str) -> str:
    match = re.search(r"sip:([^@;>]+)@", uri)
    return match.group(1) if match else ""
