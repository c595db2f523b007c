"""`cti campaign ...` and `cti hours check` as people and scripts use them: human output by
default, the JSON documents with --json, dates in words, one-line errors, help texts; `why`
answering from the database alone, as the running dialer would.

Every command goes through `cti.cli.main` against a real SQLite file; the machine's zone is
Europe/Paris (TZ) so the human output's local times are known."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import structlog
from sqlalchemy import select, update

from cti.ami.message import Message
from cti.calls import events as ev
from cti.cli import main
from cti.db.engine import create_engine
from cti.db.models import DialerContact
from cti.dialer import store, why
from cti.dialer.dispositions import plan_after_outcome
from cti.dialer.engine import DialerEngine
from cti.dialer.settings import DialerSettings

# Monday 2 March 2026, 20:30 in Paris (closed), 14:30 in New York (TCPA: 08:00-21:00 open),
# 20:30 in Casablanca (closed).
MONDAY_EVENING = datetime(2026, 3, 2, 19, 30, tzinfo=UTC)
PARIS_ZONE = ZoneInfo("Europe/Paris")
PARIS, NEW_YORK, NEW_YORK_2, CASABLANCA = "+33612345678", "+12127365000", "+12127365001", "+212612345678"


@pytest.fixture(autouse=True)
def paris(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Europe/Paris")


@pytest.fixture(autouse=True)
def logs_as_the_command_has_them() -> Iterator[None]:
    """`cti` run as a command logs warnings and worse on stderr (cti.cli.main); called with
    arguments, as here, it leaves logging as it finds it: set it up the command's way."""
    saved = structlog.get_config()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
    )
    yield
    structlog.configure(**saved)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'cti.db'}"


def cti(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def cti_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    code, out, err = cti(capsys, *args, "--json")
    assert code in (0, 1), err
    return json.loads(out)


def contacts_file(tmp_path: Path, *numbers: str) -> Path:
    path = tmp_path / "contacts.csv"
    path.write_text("nom;telephone\n" + "".join(f"C{i};{n}\n" for i, n in enumerate(numbers)), "utf-8")
    return path


def make_campaign(capsys: pytest.CaptureFixture[str], tmp_path: Path, url: str, *numbers: str) -> None:
    rules = ["--rules", "auto", "--countries", "FR,US,MA"]
    assert cti(capsys, "campaign", "create", "promo", *rules, "--url", url)[0] == 0
    code, _, err = cti(capsys, "campaign", "import", str(contacts_file(tmp_path, *numbers)), "--campaign",
                       "promo", "--url", url)  # fmt: skip
    assert code == 0, err


# ----------------------------------------------------------------------------------- why
def test_why_without_a_daemon_says_why_and_from_when(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, url: str
) -> None:
    make_campaign(capsys, tmp_path, url, PARIS, NEW_YORK, CASABLANCA)
    at = ["--at", "2026-03-02T20:30"]  # the machine's zone: Paris
    held = {h["phone"]: h for h in cti_json(capsys, "campaign", "why", "promo", *at, "--url", url)}
    # Before this change: [] (no daemon had stored a reason). Now each says why and from when.
    assert held[PARIS]["why_code"] == "fr:window" and held[PARIS]["ruleset"] == "fr"
    assert held[PARIS]["next_attempt_at"] == "2026-03-03T09:00:00Z"  # Tuesday 10:00 in Paris
    assert "Europe/Paris: it is Mon 20:30 there" in held[PARIS]["why_not_dialed"]
    assert held[CASABLANCA]["why_code"].startswith("ma:") and held[CASABLANCA]["next_attempt_at"]
    # Open in New York, but the campaign is a draft: nothing dials it before a start.
    assert (held[NEW_YORK]["why_code"], held[NEW_YORK]["next_attempt_at"]) == ("campaign_draft", None)

    assert cti(capsys, "campaign", "start", "promo", "--url", url)[0] == 0
    held = {h["phone"]: h for h in cti_json(capsys, "campaign", "why", "promo", *at, "--url", url)}
    assert held[NEW_YORK]["why_code"] == "due" and held[NEW_YORK]["next_attempt_at"] == "2026-03-02T19:30:00Z"

    code, out, _ = cti(capsys, "campaign", "why", "promo", *at, "--url", url)
    assert code == 0
    assert "campaign promo is running; judged at 2026-03-02 20:30 CET" in out
    assert "3 contacts not being dialled" in out
    lines = out.splitlines()
    assert lines[2].split() == ["contact", "phone", "status", "attempts", "why", "from"]
    paris_line = next(line for line in lines if PARIS in line)
    assert paris_line.split()[2:] == ["pending", "0", "fr:window", "2026-03-03", "10:00", "CET"]
    # The reason in words, under the number.
    reason = lines[lines.index(paris_line) + 1]
    assert reason.lstrip().startswith("outside the calling windows")
    assert len(reason) - len(reason.lstrip()) == lines[2].index("phone")


def test_why_is_the_engines_own_judgement(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, url: str
) -> None:
    """What `why` says from the database is what the engine stores when it looks at the same
    contacts at the same instant: same reason, same text, same next time."""
    make_campaign(capsys, tmp_path, url, PARIS, NEW_YORK, CASABLANCA, NEW_YORK_2)
    assert cti(capsys, "campaign", "start", "promo", "--url", url)[0] == 0
    # A busy call to the second New York number ten minutes ago: retried 15 min later (the
    # engine's own plan for it).
    asyncio.run(_busy_ten_minutes_ago(url, NEW_YORK_2))
    before = {h["phone"]: h for h in cti_json(capsys, "campaign", "why", "promo", "--at", "2026-03-02T20:30",
                                               "--url", url)}  # fmt: skip
    assert before[NEW_YORK_2]["why_code"] == "retry:busy"
    assert before[NEW_YORK_2]["next_attempt_at"] == "2026-03-02T19:35:00Z"
    assert before[NEW_YORK_2]["why_not_dialed"] == "busy: next try after 15 min"

    dialled, stored = asyncio.run(_engine_tick(url, MONDAY_EVENING))
    assert dialled == [NEW_YORK]
    assert before[NEW_YORK]["why_code"] == "due"
    for phone in (PARIS, CASABLANCA, NEW_YORK_2):
        mine = before[phone]
        assert (mine["why_code"], mine["why_not_dialed"], mine["next_attempt_at"]) == stored[phone], phone


@dataclass
class FakeLink:
    sent: list[dict[str, Any]] = field(default_factory=list)

    async def send(self, action: str, headers: Mapping[str, object] | None = None, /, **more: Any) -> Message:
        self.sent.append({"Action": action, **(headers or {}), **more})
        return Message({"Response": "Success", "Message": "Originate successfully queued"})


async def _busy_ten_minutes_ago(url: str, phone: str) -> None:
    engine = create_engine(url)
    try:
        spec = store.spec_of(await store.get_campaign(engine, "promo"))
        plan = plan_after_outcome(
            "busy", attempts=1, same_outcome=1, spec=spec, now=MONDAY_EVENING - timedelta(minutes=10)
        )
        async with engine.begin() as conn:
            await conn.execute(
                update(DialerContact)
                .where(DialerContact.phone_e164 == phone)
                .values(attempts=1, **plan.values())
            )
    finally:
        await engine.dispose()


async def _engine_tick(url: str, now: datetime) -> tuple[list[str], dict[str, tuple[Any, ...]]]:
    engine = create_engine(url)
    link = FakeLink()
    try:
        dialer = DialerEngine(engine, link, DialerSettings(), lambda: now, "pbx")
        await dialer.recover()
        for agent in ("PJSIP/1001", "PJSIP/1002", "PJSIP/1003"):
            await dialer.on_event(
                ev.AgentStateChanged("pbx", 0.0, "outbound", agent, agent, 1, False, None, True, False, 0)
            )
        await dialer.tick()
        await dialer.wait_sent()
        async with engine.connect() as conn:
            columns = select(
                DialerContact.phone_e164,
                DialerContact.why_code,
                DialerContact.why_not_dialed,
                DialerContact.next_attempt_at,
            )
            rows = (await conn.execute(columns)).all()
    finally:
        await engine.dispose()
    stored = {r.phone_e164: (r.why_code, r.why_not_dialed, store.iso(r.next_attempt_at)) for r in rows}
    return [s["Variable"]["CTI_CALLEE"] for s in link.sent], stored


def test_why_code_filter_limit_and_day_words(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, url: str
) -> None:
    make_campaign(capsys, tmp_path, url, PARIS, NEW_YORK, CASABLANCA)
    dnc = tmp_path / "dnc.txt"
    dnc.write_text("06 12 34 56 78\n", "utf-8")
    assert cti_json(capsys, "campaign", "dnc", str(dnc), "--campaign", "promo", "--url", url) == {
        "read": 1, "added": 1, "invalid": 0, "scope": "promo"
    }  # fmt: skip
    only = cti_json(capsys, "campaign", "why", "promo", "--code", "dnc", "--url", url)
    assert [(h["phone"], h["status"], h["why_code"], h["next_attempt_at"]) for h in only] == [
        (PARIS, "blocked", "dnc", None)
    ]
    _, out, _ = cti(capsys, "campaign", "why", "promo", "--code", "dnc", "--url", url)
    assert "1 contact with reason dnc" in out and "never" in out
    assert len(cti_json(capsys, "campaign", "why", "promo", "--limit", "2", "--url", url)) == 2
    # A bare day is its midnight here: Tuesday 00:00 in Paris is 23:00 UTC on Monday.
    at_midnight = cti_json(
        capsys, "campaign", "why", "promo", "--at", "2026-03-03", "--code", "ma", "--url", url
    )
    assert [h["phone"] for h in at_midnight] == [CASABLANCA]
    assert cti_json(capsys, "campaign", "why", "promo", "--at", "tomorrow", "--url", url)


def test_code_filter_finds_what_the_whole_list_has_and_judges_no_more_than_it_must(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_campaign(capsys, tmp_path, url, PARIS, NEW_YORK, CASABLANCA, NEW_YORK_2)
    assert cti(capsys, "campaign", "start", "promo", "--url", url)[0] == 0
    asyncio.run(_busy_ten_minutes_ago(url, NEW_YORK_2))
    dnc = tmp_path / "dnc.txt"
    dnc.write_text("06 12 34 56 78\n", "utf-8")
    assert cti(capsys, "campaign", "dnc", str(dnc), "--campaign", "promo", "--url", url)[0] == 0
    at = ["--at", "2026-03-02T20:30", "--url", url]
    everyone = cti_json(capsys, "campaign", "why", "promo", *at)
    assert {h["why_code"] for h in everyone} == {"dnc", "due", "ma:window", "retry:busy"}
    for code in ("dnc", "retry", "retry:busy", "due", "ma", "ma:window", "fr", "us", "auto", "callback"):
        wanted = [h for h in everyone if h["why_code"] == code or h["why_code"].startswith(code + ":")]
        assert cti_json(capsys, "campaign", "why", "promo", "--code", code, *at) == wanted, code

    # No judgement gives `dnc`: the contacts waiting their turn are not even judged.
    judged: list[object] = []
    judge = why.judge
    monkeypatch.setattr(why, "judge", lambda *args: judged.append(args) or judge(*args))
    assert [h["phone"] for h in cti_json(capsys, "campaign", "why", "promo", "--code", "dnc", *at)] == [PARIS]
    assert judged == []
    only_ma = cti_json(capsys, "campaign", "why", "promo", "--code", "ma", *at)
    assert [h["phone"] for h in only_ma] == [CASABLANCA]
    assert len(judged) == 3  # a rule set's code: every contact that waits its turn is judged


# ----------------------------------------------------------------------------------- create/show
def test_create_and_show_are_for_people_and_json_is_unchanged(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, url: str
) -> None:
    code, out, _ = cti(capsys, "campaign", "create", "promo", "--retry", "busy=90m:2", "--url", url)
    assert code == 0
    assert "busy after 1 h 30 min (2 times)" in out and "no_answer after 2 h (3 times)" in out
    assert "abandoned after 3 d (2 times)" in out and 's"' not in out and "5400s" not in out
    assert out.splitlines()[0] == "campaign:  promo (#1), draft"
    assert "drops kept under 3.0 % over 30 d" in out
    doc = cti_json(capsys, "campaign", "update", "promo", "--ring-timeout", "30", "--url", url)
    # The JSON scripts read: as it was (durations in seconds, "900s").
    assert doc["retry_policy"]["busy"] == {"delay": "5400s", "max": 2}
    assert doc["retry_policy"]["congestion"] == {"delay": "600s", "max": 3}
    assert (doc["ring_timeout_s"], doc["abandon_window_s"], doc["state"]) == (30, 2592000, "draft")

    contacts = str(contacts_file(tmp_path, PARIS, "0612345679"))
    assert cti(capsys, "campaign", "import", contacts, "--campaign", "promo", "--url", url)[0] == 0
    code, out, _ = cti(capsys, "campaign", "show", "promo", "--url", url)
    assert code == 0
    assert "contacts:     2: 2 pending" in out
    assert "0 placed; 0 answered (contact rate -)" in out
    assert "ringing:      30 s; answering machines not detected" in out
    shown = cti_json(capsys, "campaign", "show", "promo", "--url", url)
    assert shown["contacts"] == {"pending": 2} and shown["stats"]["attempts"] == 0
    assert {"name", "retry_policy", "stats", "contacts"} <= set(shown)

    _, out, _ = cti(capsys, "campaign", "list", "--url", url)
    header = ["name", "state", "mode", "rules", "queue", "contacts", "to", "call", "dials"]
    assert out.splitlines()[0].split() == header
    assert out.splitlines()[1].split() == ["promo", "draft", "progressive", "fr", "outbound", "2", "2", "-"]
    assert [c["name"] for c in cti_json(capsys, "campaign", "list", "--url", url)["campaigns"]] == ["promo"]

    code, out, _ = cti(capsys, "campaign", "start", "promo", "--url", url)
    assert (code, out) == (0, "campaign promo: running\n")
    assert cti_json(capsys, "campaign", "pause", "promo", "--url", url)["state"] == "paused"


def test_start_and_stop_take_days_in_words(capsys: pytest.CaptureFixture[str], url: str) -> None:
    doc = cti_json(capsys, "campaign", "create", "promo", "--start", "2026-03-02", "--stop", "2026-03-31",
                   "--url", url)  # fmt: skip
    # Midnight in Paris; a stop day is through that day (the 31st's end, in summer time).
    assert (doc["starts_at"], doc["stops_at"]) == ("2026-03-01T23:00:00Z", "2026-03-31T22:00:00Z")
    doc = cti_json(capsys, "campaign", "update", "promo", "--start", "tomorrow", "--url", url)
    today = datetime.now(PARIS_ZONE).date()
    started = datetime.fromisoformat(doc["starts_at"].replace("Z", "+00:00")).astimezone(PARIS_ZONE)
    assert (started.date(), started.time()) == (today + timedelta(days=1), time(0))
    _, out, _ = cti(capsys, "campaign", "show", "promo", "--url", url)
    assert "dials:" in out and "00:00 CE" in out and "until 2026-04-01 00:00 CEST" in out
    # Started after its stop: said at once, not found out from a campaign that never dials.
    code, out, _ = cti(capsys, "campaign", "start", "promo", "--url", url)
    assert code == 0 and "but its stop, 2026-04-01 00:00 CEST" in out
    assert "has passed: nothing will be dialled (cti campaign update promo --stop WHEN)" in out


# ----------------------------------------------------------------------------------- hours
def test_hours_check_reads_like_a_sentence_and_takes_dates(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cti(capsys, "hours", "check", "0612345678", "--at", "2026-04-06T11:00")
    assert code == 1  # Easter Monday
    assert out.splitlines()[0] == (
        "number:   +33612345678 (FR): may not be called before 2026-04-07 10:00 CEST"
        + out.splitlines()[0].split("CEST", 1)[1]
    )
    assert "why:      fr:holiday: public holiday in Europe/Paris: Easter Monday (2026-04-06)" in out
    assert "there: Europe/Paris Mon 11:00" in out
    # La Réunion: from when, also on the callee's clock.
    code, out, _ = cti(capsys, "hours", "check", "0692169786", "--at", "2026-03-02T17:30", "--rules", "auto")
    assert code == 1
    assert out.splitlines()[0] == (
        "number:   +262692169786 (RE): may not be called before 2026-03-03 07:00 CET (in 13 h 30 min), "
        "Tue 10:00 there"
    )
    code, out, _ = cti(capsys, "hours", "check", "0612345678", "--at", "2026-04-07T11:00:00+02:00")
    assert code == 0 and "may be called" in out.splitlines()[0]
    doc = cti_json(capsys, "hours", "check", "0612345678", "--at", "yesterday")
    assert doc["number"] == PARIS and list(doc["local_time"]) == ["Europe/Paris"]
    yesterday = datetime.now(PARIS_ZONE).date() - timedelta(days=1)
    assert doc["local_time"]["Europe/Paris"].startswith(f"{yesterday.isoformat()}T00:00:00+0")


# ----------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["campaign", "why", "nope"], "cti campaign why: no campaign 'nope'"),
        (["campaign", "show", "nope"], "cti campaign show: no campaign 'nope'"),
        (["campaign", "start", "nope"], "cti campaign start: no campaign 'nope'"),
        (["campaign", "update", "nope", "--queue", "q"], "cti campaign update: no campaign 'nope'"),
        (
            ["campaign", "import", "missing.csv", "--campaign", "promo"],
            "cti campaign import: cannot read missing.csv",
        ),
        (
            ["campaign", "import", "contacts.csv", "--campaign", "nope"],
            "cti campaign import: no campaign 'nope'",
        ),
        (["campaign", "dnc", "missing.txt"], "cti campaign dnc: cannot read missing.txt"),
        (["campaign", "create", "x", "--start", "31/12/2026"], "cti campaign create: --start must be a date"),
        (["campaign", "update", "promo", "--stop", "soon"], "cti campaign update: --stop must be a date"),
        (["campaign", "why", "promo", "--at", "someday"], "cti campaign why: --at must be a date"),
        (["campaign", "create", "y", "--rules", "nope.toml"], "cti campaign create: no rule set 'nope.toml'"),
        (["campaign", "create", "y", "--retry", "busy"], "cti campaign create: --retry 'busy'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    url: str,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    contacts_file(tmp_path, PARIS)
    assert cti(capsys, "campaign", "create", "promo", "--url", url)[0] == 0
    code, out, err = cti(capsys, *args, "--url", url)
    assert (code, out) == (2, "")
    assert err.startswith(message) and err.count("\n") == 1 and "Traceback" not in err, err


def test_hours_check_bad_date_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cti(capsys, "hours", "check", "0612345678", "--at", "next week")
    assert (code, out) == (2, "")
    assert err.startswith("cti hours check: --at must be a date or date-time") and err.count("\n") == 1


# ----------------------------------------------------------------------------------- help
def test_every_campaign_command_explains_itself(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["campaign", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for command in ("create", "update", "start", "pause", "stop", "show", "why", "list", "import", "dnc"):
        line = next(line for line in out.splitlines() if line.strip().startswith(command + " "))
        assert len(line.split()) > 2, line  # the command and its help text
    with pytest.raises(SystemExit):
        main(["campaign", "why", "--help"])
    out = capsys.readouterr().out
    assert "name             the campaign" in out
    for option in ("--code CODE", "--limit LIMIT", "--at WHEN", "--json"):
        assert option in out
    assert "Reason codes:" in out and "campaign_not_started" in out and "no daemon" in out.lower()
    with pytest.raises(SystemExit):
        main(["campaign", "show", "--help"])
    out = capsys.readouterr().out
    assert "contact rate" in out and "name" in out
    with pytest.raises(SystemExit):
        main(["hours", "check", "--help"])
    assert "today, yesterday, tomorrow" in " ".join(capsys.readouterr().out.split())
