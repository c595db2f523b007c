"""A callback an agent booked for themselves, on a real Asterisk with the shipped configuration:
two agents free in the outbound queue, the callback rings the one who booked it, through the
`rappels-perso` queue (QueueAdd with the agent's penalty, the Originate's QUEUE_MIN/MAX_PENALTY),
and the other agent's phone never sees an INVITE.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from daemon import CtiDaemon, Desk
from floor import log_in, received_invites
from lab import Asterisk
from sipp import Answer, SipLab
from test_dialer import CLI, ended_attempts, lab_rules
from truth import queue_calls

CALLEE = "+33612345678"


async def test_a_callback_for_me_rings_only_the_agent_who_booked_it(
    pbx: Asterisk, sip: SipLab, cti: CtiDaemon, desks: dict[str, Desk], tmp_path: Path
) -> None:
    sip.answer_pstn(pbx.ports.pstn, Answer(ring_ms=1000, hangup_after_ms=6000))
    # agent2 (1002) and agent3 (1003) are both in the outbound queue, both free.
    await log_in(pbx, sip, ["1002", "1003"], Answer(ring_ms=500, auto_answer=True))
    rules = lab_rules(tmp_path / "lab-rules.toml")
    cti.cli(
        "campaign", "create", "rappels-clients", "--rules", str(rules), "--mode", "progressive",
        "--caller-id", CLI, "--ring-timeout", "15", "--queue", "outbound",
    )  # fmt: skip
    cti.cli("campaign", "start", "rappels-clients")

    at = (datetime.now(UTC) + timedelta(seconds=3)).isoformat()
    body = {"number": "06 12 34 56 78", "at": at, "for_me": True, "note": "devis"}
    await desks["agent3"].post("/api/agent/callbacks", body, status=201)

    pop = (await desks["agent3"].next("pop", timeout_s=40))["pop"]
    assert (pop["direction"], pop["campaign"]) == ("outbound", "rappels-clients"), pop
    assert pop["caller"]["e164"] == CALLEE
    [attempt] = await ended_attempts(cti, 1)
    assert (attempt["outcome"], attempt["agent"]) == ("answered", "PJSIP/1003"), attempt
    assert desks["agent2"].seen("pop") == []
    assert received_invites(sip, "phone-1002") == []
    assert len(received_invites(sip, "phone-1003")) == 1
    truth = queue_calls(pbx.queue_log)[attempt["linkedid"]]
    assert (truth.queues, truth.outcome) == (["rappels-perso"], "answered"), truth
