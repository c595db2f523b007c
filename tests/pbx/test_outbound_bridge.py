"""An outbound call put through to an agent by Dial(), outside any queue: the callee answers
first (through the trunk), then the agent's phone rings and is bridged to them."""

from __future__ import annotations

import asyncio

import pytest
from daemon import CtiDaemon
from floor import register
from lab import Asterisk
from sipp import Answer, SipLab
from truth import agrees_with_cdr

CALLEE = "+33612345678"


@pytest.mark.parametrize("who", ["agent", "caller"])
async def test_who_hung_up_an_answered_outbound_call_outside_queues(
    pbx: Asterisk, sip: SipLab, cti: CtiDaemon, who: str
) -> None:
    if who == "caller":
        sip.answer_pstn(pbx.ports.pstn, Answer(ring_ms=1000, hangup_after_ms=4000))
        await register(sip, "1001", Answer(ring_ms=500))
    else:
        sip.answer_pstn(pbx.ports.pstn, Answer(ring_ms=1000))
        await register(sip, "1001", Answer(ring_ms=500, hangup_after_ms=3000))
    response = pbx.ami(
        "Originate", Channel=f"Local/{CALLEE}@cti-dialer-out", Context="cti-agents", Exten="1001",
        Priority="1", CallerID="+33187654321", Async="true", ActionID="manual-1",
    )  # fmt: skip
    assert "Success" in response, response
    [call] = await cti.ended_calls(1, within_s=30)
    await asyncio.sleep(0)
    assert call["direction"] == "outbound" and call["called"] == CALLEE
    assert call["outcome"] == "outbound_answered" and call["answered_at"] is not None
    assert call["hangup_by"] == who
    assert call["talk_s"] == pytest.approx(3.5, abs=1.6)
    assert agrees_with_cdr(call, pbx.cdr_rows()) == []
