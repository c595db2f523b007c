"""The caller lookup, answered by the daemon over FastAGI while the call rings on the PBX."""

from __future__ import annotations

import os

from daemon import CtiDaemon, Desk
from floor import call_in, finish, log_in
from lab import Asterisk
from sipp import Answer, SipLab

CUSTOMERS = (
    "name,phone,vip,queue_priority\nJeanne Martin,06 12 34 56 78,oui,5\nPaul Durand,06 98 76 54 32,non,\n"
)


def agi_done(pbx: Asterisk) -> list[dict[str, str]]:
    """The AgiDone user events the dialplan sent after each lookup (from the tier's AMI log)."""
    found = []
    raw = (pbx.log_dir / "ami.raw").read_bytes().decode("utf-8", "replace")
    for block in raw.split("\r\n\r\n"):
        if "UserEvent: AgiDone" in block:
            found.append(dict(line.split(": ", 1) for line in block.split("\r\n") if ": " in line))
    return found


async def test_known_vip_caller_is_identified_before_the_svi_and_jumps_the_queue(
    pbx: Asterisk, sip: SipLab, cti: CtiDaemon, desks: dict[str, Desk]
) -> None:
    cti.cli("customers", "import", "/dev/stdin", stdin=CUSTOMERS)
    await log_in(pbx, sip, ["1001"], Answer(ring_ms=500))
    caller = call_in(sip, pbx, "1,1,1", caller="0612345678", hangup_after_ms=2000)
    pop = (await desks["agent1"].next("pop", timeout_s=30))["pop"]
    assert await finish(caller) == 0, caller.errors()
    [done] = agi_done(pbx)
    customer_id = int(done["Customer"])
    # The network sent no name: the directory's is shown on the agent's phone and the pop.
    assert (done["Lookup"], done["Prio"]) == ("hit", "5")
    assert pop["caller"]["name"] == "Jeanne Martin"
    [call] = await cti.customer_calls()
    assert call["caller_name"] == "Jeanne Martin"
    assert pop["customer"]["status"] in ("found", "pending")
    assert customer_id > 0
    if os.geteuid() == 0:  # deploy step 8, as CI runs it: Asterisk in real time (the lookup's tail)
        assert pbx.process is not None
        assert os.sched_getscheduler(pbx.process.pid) == os.SCHED_RR


async def test_unknown_and_withheld_callers_go_on_without_a_customer(
    pbx: Asterisk, sip: SipLab, cti: CtiDaemon
) -> None:
    cti.cli("customers", "import", "/dev/stdin", stdin=CUSTOMERS)
    unknown = call_in(sip, pbx, "1,4", caller="0611223344", hangup_after_ms=500)
    assert await finish(unknown) == 0, unknown.errors()
    withheld = call_in(sip, pbx, "1,4", caller="anonymous", hangup_after_ms=500, line=1)
    assert await finish(withheld) == 0, withheld.errors()
    assert [(d["Lookup"], d["Customer"]) for d in agi_done(pbx)] == [("miss", ""), ("withheld", "")]


async def test_the_call_goes_on_when_cti_is_down(pbx: Asterisk, sip: SipLab, cti: CtiDaemon) -> None:
    cti.stop()
    caller = call_in(sip, pbx, "1,4", hangup_after_ms=500)
    assert await finish(caller) == 0, caller.errors()
    [done] = agi_done(pbx)
    assert done["Lookup"] == "skipped"
    assert "IVR" in (pbx.log_dir / "ami.raw").read_text(errors="replace")
