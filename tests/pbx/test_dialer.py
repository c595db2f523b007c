"""The outbound dialer on a real Asterisk: a CSV campaign dialled through the shipped
`cti-dialer-out` and the test trunk, and every way a campaign call ends.

Each scenario checks what cti stored and pushed (the attempt and the contact, the call record,
the agent's pop, `cti stats --report outbound`, `cti campaign show`) against Asterisk's own
account: queue_log for the outbound queue, and the INVITE the SIPp "PSTN" behind the trunk
received (the number dialled and the caller ID sent).
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from daemon import CtiDaemon, Desk
from floor import log_in, received_invites
from lab import Asterisk
from sipp import Answer, SipLab
from truth import close, queue_calls

CLI = "+33187654321"  # CTI_OUTBOUND_CLI of the shipped extensions.conf, and the campaign's caller ID
CALLEE = "+33612345678"
NEW_YORK = "+12127365000"  # a valid New York number: 5 or 6 hours behind Paris
AGENT = "1003"  # in the outbound queue (pjsip.conf CTI_AGENT_QUEUES=sales&outbound)
CONTACTS = "nom;telephone;offre\nJeanne Martin;06 12 34 56 78;fibre\n"


def lab_rules(path: Path, now: datetime | None = None) -> Path:
    """A rule set whose window is the hour either side of Paris's time now (every day): a
    French number may be called, a New York one may not."""
    paris = (now or datetime.now(UTC)).astimezone(ZoneInfo("Europe/Paris"))
    start, end = paris - timedelta(hours=1), paris + timedelta(hours=1)
    if start.date() == end.date():
        spans = [(f"{start:%H:%M}", f"{end:%H:%M}")]
    else:  # across midnight: split at 24:00
        spans = [(f"{start:%H:%M}", "24:00"), ("00:00", f"{end:%H:%M}")]
    windows = "".join(f'[[window]]\nstart = "{a}"\nend = "{b}"\n' for a, b in spans)
    path.write_text(f'name = "lab"\nabandon_lock = "72h"\n{windows}', encoding="utf-8")
    return path


def start_campaign(cti: CtiDaemon, tmp: Path, rows: str, name: str = "relance") -> None:
    rules = lab_rules(tmp / "lab-rules.toml")
    csv = tmp / "contacts.csv"
    csv.write_text(rows, encoding="utf-8")
    cti.cli(
        "campaign", "create", name, "--rules", str(rules), "--mode", "progressive",
        "--caller-id", CLI, "--ring-timeout", "15", "--queue", "outbound",
    )  # fmt: skip
    cti.cli("campaign", "import", str(csv), "--campaign", name)
    cti.cli("campaign", "start", name)


ATTEMPTS = """
    SELECT a.id, a.phone_e164, a.state, a.outcome, a.abandoned, a.originate_reason, a.linkedid,
           a.agent, a.answered_at, a.connected_at, a.agent_at, a.ended_at,
           c.status, c.why_code, c.attempts, c.id
    FROM dialer_attempts a JOIN dialer_contacts c ON c.id = a.contact_id ORDER BY a.id
"""
ATTEMPT_KEYS = [
    *("id", "phone", "state", "outcome", "abandoned", "reason", "linkedid", "agent"),
    *("answered_at", "connected_at", "agent_at", "ended_at"),
    *("contact_status", "why_code", "contact_attempts", "contact_id"),
]


async def ended_attempts(cti: CtiDaemon, count: int, within_s: float = 60.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + within_s
    while True:
        rows = [dict(zip(ATTEMPT_KEYS, r, strict=True)) for r in await cti.sql(ATTEMPTS)]
        done = [r for r in rows if r["state"] == "ended"]
        if len(done) >= count or time.monotonic() > deadline:
            assert len(done) >= count, f"attempts: {rows}\n{cti.log_tail()}"
            return done
        await asyncio.sleep(0.3)


async def campaign_call(cti: CtiDaemon, campaign: str = "relance", within_s: float = 20.0) -> dict[str, Any]:
    # The attempt ends with the call, but the record is stored at the writer's next flush (the
    # agent's *41 call, stored long before, is not it): wait for the outbound call itself.
    deadline = time.monotonic() + within_s
    while not (calls := [c for c in await cti.ended_calls(1) if c["direction"] == "outbound"]):
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert len(calls) == 1, calls
    return calls[0]


def seconds(a: str, b: str) -> float:
    return (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()


def outbound_report(cti: CtiDaemon) -> dict[str, Any]:
    return dict(json.loads(cti.cli("stats", "--report", "outbound", "--format", "json")))


def campaign_show(cti: CtiDaemon, name: str = "relance") -> dict[str, Any]:
    return dict(json.loads(cti.cli("campaign", "show", name, "--json")))


@pytest.mark.external  # also against the compose lab (CTI_PBX_EXTERNAL)
async def test_answered_with_auto_answer_reaches_the_agent_at_once(
    pbx: Asterisk, sip: SipLab, cti: CtiDaemon, desks: dict[str, Desk], tmp_path: Path
) -> None:
    sip.answer_pstn(pbx.ports.pstn, Answer(ring_ms=1000, hangup_after_ms=8000))
    # The agent's softphone honours the auto-answer request; otherwise it would ring for 3 s.
    await log_in(pbx, sip, [AGENT], Answer(ring_ms=3000, auto_answer=True))
    start_campaign(cti, tmp_path, CONTACTS)

    desk = desks["agent3"]
    pop = (await desk.next("pop", timeout_s=40))["pop"]
    # The campaign's one contact (id 1 on the tier's SQLite; PostgreSQL's sequence may give another).
    [(contact_id,)] = await cti.sql("SELECT id FROM dialer_contacts")
    # The pop presents the callee (the contact and its campaign fields), not the centre's own
    # caller ID, as the customer.
    assert (pop["direction"], pop["campaign"], pop["contact"]) == ("outbound", "relance", str(contact_id))
    assert pop["caller"]["e164"] == CALLEE, pop
    assert pop["customer"]["status"] == "contact", pop
    contact = pop["customer"]["contact"]
    assert (contact["phone"], contact["fields"]) == (CALLEE, {"nom": "Jeanne Martin", "offre": "fibre"})
    assert (await desk.next("pop.answered"))["pop"]["caller"]["e164"] == CALLEE

    [attempt] = await ended_attempts(cti, 1)
    assert (attempt["outcome"], attempt["abandoned"], attempt["reason"]) == ("answered", 0, 4), attempt
    assert attempt["agent"] == f"PJSIP/{AGENT}"
    assert seconds(attempt["connected_at"], attempt["agent_at"]) < 2.0, attempt
    assert (attempt["contact_status"], attempt["why_code"]) == ("done", "contacted")

    call = await campaign_call(cti)
    assert (call["campaign"], call["contact"], call["called"]) == ("relance", str(contact_id), CALLEE)
    assert (call["outcome"], call["queue"]) == ("outbound_answered", "outbound")
    assert call["agent"] == f"Agent {AGENT}"
    assert call["hangup_by"] == "caller"  # the callee hung up after 8 s
    assert call["linkedid"] == attempt["linkedid"]
    truth = queue_calls(pbx.queue_log)[call["linkedid"]]
    assert (truth.queues, truth.outcome, truth.agent) == (["outbound"], "answered", f"Agent {AGENT}")
    assert truth.completed_by == "caller"
    assert close(call["wait_s"], truth.wait_s) and call["wait_s"] < 2.0, (call["wait_s"], truth.wait_s)
    assert close(call["talk_s"], truth.talk_s), (call["talk_s"], truth.talk_s)

    [out] = received_invites(sip, "pstn")
    assert (out.user, out.from_user) == (CALLEE, CLI)
    # The agent's phone was asked to answer by itself and shown the callee's number.
    [to_agent] = received_invites(sip, f"phone-{AGENT}")
    assert any("answer-after=0" in v for v in to_agent.header("Call-Info")), to_agent.headers
    assert any("info=alert-autoanswer" in v for v in to_agent.header("Alert-Info")), to_agent.headers
    assert to_agent.from_user == CALLEE

    [row] = [t for t in outbound_report(cti)["totals"] if t["campaign"] == "relance"]
    assert {k: row[k] for k in ("attempts", "connects", "abandoned", "late_connects", "dropped")} == {
        "attempts": 1, "connects": 1, "abandoned": 0, "late_connects": 0, "dropped": 0,
    }  # fmt: skip
    stats = campaign_show(cti)["stats"]
    assert (stats["attempts"], stats["connected"], stats["handled_by_agent"]) == (1, 1, 1)
    assert (stats["abandoned"], stats["late_connects"], stats["drop_rate"]) == (0, 0, 0.0)


async def test_agent_who_picks_up_3s_later_is_a_late_connect_not_an_abandon(
    pbx: Asterisk, sip: SipLab, cti: CtiDaemon, desks: dict[str, Desk], tmp_path: Path
) -> None:
    sip.answer_pstn(pbx.ports.pstn, Answer(ring_ms=1000, hangup_after_ms=9000))
    # A softphone that ignores the auto-answer request: the agent picks up after 3 s.
    await log_in(pbx, sip, [AGENT], Answer(ring_ms=3000))
    start_campaign(cti, tmp_path, CONTACTS)

    [attempt] = await ended_attempts(cti, 1)
    waited = seconds(attempt["connected_at"], attempt["agent_at"])
    assert 2.5 < waited < 5.0, attempt
    # The callee talked to an agent: a normal answered call, no 72 h abandon redial lock...
    assert (attempt["outcome"], attempt["abandoned"]) == ("answered", 0), attempt
    assert (attempt["contact_status"], attempt["why_code"]) == ("done", "contacted")
    # ...but the regulator's drop figure counts it: connected more than 2 s after the answer.
    stats = campaign_show(cti)["stats"]
    assert (stats["connected"], stats["abandoned"], stats["late_connects"]) == (1, 0, 1), stats
    assert stats["drop_rate"] == 1.0 and stats["abandon_rate"] == 0.0
    [row] = [t for t in outbound_report(cti)["totals"] if t["campaign"] == "relance"]
    assert {k: row[k] for k in ("attempts", "connects", "abandoned", "late_connects", "dropped")} == {
        "attempts": 1, "connects": 1, "abandoned": 0, "late_connects": 1, "dropped": 1,
    }  # fmt: skip
    assert row["drop_rate"] == 1.0

    call = await campaign_call(cti)
    truth = queue_calls(pbx.queue_log)[call["linkedid"]]
    assert (truth.outcome, truth.agent) == ("answered", f"Agent {AGENT}")
    assert truth.wait_s is not None and truth.wait_s >= 2  # Asterisk's whole seconds
    assert close(call["wait_s"], waited, 0.5) and close(call["wait_s"], truth.wait_s)
    [to_agent] = received_invites(sip, f"phone-{AGENT}")
    assert any("answer-after=0" in v for v in to_agent.header("Call-Info"))  # offered, ignored


@pytest.mark.parametrize(
    ("pstn", "outcome", "reason"),
    [
        (Answer(refuse="486 Busy Here"), "busy", 5),
        (Answer(never_answer=True), "no_answer", 3),
        (Answer(refuse="503 Service Unavailable"), "congestion", 8),
    ],
    ids=["busy", "no_answer", "congestion"],
)
async def test_callee_who_does_not_answer_is_retried_and_filed_under_its_campaign(
    pbx: Asterisk, sip: SipLab, cti: CtiDaemon, tmp_path: Path, pstn: Answer, outcome: str, reason: int
) -> None:
    sip.answer_pstn(pbx.ports.pstn, pstn)
    await log_in(pbx, sip, [AGENT])
    start_campaign(cti, tmp_path, CONTACTS)

    [attempt] = await ended_attempts(cti, 1)
    assert (attempt["outcome"], attempt["reason"], attempt["abandoned"]) == (outcome, reason, 0), attempt
    assert (attempt["contact_status"], attempt["why_code"]) == ("retry", f"retry:{outcome}")
    assert attempt["connected_at"] is None and attempt["agent_at"] is None

    call = await campaign_call(cti)
    assert (call["outcome"], call["called"], call["campaign"]) == (f"outbound_{outcome}", CALLEE, "relance")
    assert call["queue"] is None and call["answered_at"] is None
    assert call["linkedid"] not in queue_calls(pbx.queue_log)  # never reached the queue
    [out] = received_invites(sip, "pstn")
    assert (out.user, out.from_user) == (CALLEE, CLI)

    report = outbound_report(cti)
    [row] = report["totals"]  # under its campaign, not under "no campaign"
    assert (row["campaign"], row["attempts"], row["connects"], row["dropped"]) == ("relance", 1, 0, 0)
    stats = campaign_show(cti)["stats"]
    assert (stats["attempts"], stats["connected"], stats["outcomes"]) == (1, 0, {outcome: 1})


async def test_number_outside_its_calling_hours_is_not_dialled_and_why_says_so(
    pbx: Asterisk, sip: SipLab, cti: CtiDaemon, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    new_york = now.astimezone(ZoneInfo("America/New_York"))
    paris = now.astimezone(ZoneInfo("Europe/Paris"))
    assert abs((paris.replace(tzinfo=None) - new_york.replace(tzinfo=None)).total_seconds()) >= 5 * 3600
    sip.answer_pstn(pbx.ports.pstn, Answer(refuse="486 Busy Here"))
    await log_in(pbx, sip, [AGENT])
    start_campaign(cti, tmp_path, f"nom;telephone\nNew York;{NEW_YORK}\nParis;06 12 34 56 78\n")

    [attempt] = await ended_attempts(cti, 1)
    assert (attempt["phone"], attempt["outcome"]) == (CALLEE, "busy")
    why = json.loads(cti.cli("campaign", "why", "relance", "--json"))
    held = {w["phone"]: w for w in why}[NEW_YORK]
    assert (held["status"], held["attempts"], held["why_code"]) == ("pending", 0, "lab:window"), held
    assert "America/New_York" in held["why_not_dialed"], held
    opens = datetime.fromisoformat(held["next_attempt_at"].replace("Z", "+00:00"))
    assert opens > now
    assert [i.user for i in received_invites(sip, "pstn")] == [CALLEE]  # New York was never dialled
    show = campaign_show(cti)
    assert show["stats"]["attempts"] == 1
