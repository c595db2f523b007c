"""The call-centre floor of the tier: agents' phones registered and logged in, callers calling."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

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
