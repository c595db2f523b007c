"""Calling hours: one table, one row per situation the law or the clock makes tricky."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cti.cli import main
from cti.dialer.hours import Callee, History, decide
from cti.dialer.rulesets import BUILTIN, RuleSetError, load_ruleset, parse_duration, ruleset_from_toml
from cti.dialer.timezones import NumberError, callee_zones


def t(text: str) -> datetime:
    return datetime.fromisoformat(text)


@dataclass
class Case:
    name: str
    callee: Callee
    at: str
    rules: str
    allowed: bool
    rule: str
    next_at: str | None
    history: History = field(default_factory=History)


FR_MOBILE = "+33612345678"
PARIS_CAP = History(
    attempts=(
        t("2026-02-02T10:30:00+01:00"),
        t("2026-02-10T11:00:00+01:00"),
        t("2026-02-20T15:00:00+01:00"),
        t("2026-03-01T12:00:00+01:00"),
    )
)

# fmt: off
CASES = [
    # France, art. D.223-9: Mon-Fri 10-13 and 14-20 in the consumer's zone.
    Case("fr morning window opens", Callee(FR_MOBILE), "2026-03-02T10:00:00+01:00", "fr", True, "fr:window",
         "2026-03-02T09:00:00Z"),
    Case("fr before 10:00", Callee(FR_MOBILE), "2026-03-02T09:59:59+01:00", "fr", False, "fr:window",
         "2026-03-02T09:00:00Z"),
    Case("fr last second of the morning", Callee(FR_MOBILE), "2026-03-02T12:59:59+01:00", "fr", True,
         "fr:window", "2026-03-02T11:59:59Z"),
    Case("fr lunch gap", Callee(FR_MOBILE), "2026-03-02T13:00:00+01:00", "fr", False, "fr:window",
         "2026-03-02T13:00:00Z"),
    Case("fr afternoon window", Callee(FR_MOBILE), "2026-03-02T19:59:00+01:00", "fr", True, "fr:window",
         "2026-03-02T18:59:00Z"),
    Case("fr 20:00 is closed, next morning", Callee(FR_MOBILE), "2026-03-02T20:00:00+01:00", "fr", False,
         "fr:window", "2026-03-03T09:00:00Z"),
    Case("fr saturday", Callee(FR_MOBILE), "2026-03-07T11:00:00+01:00", "fr", False, "fr:window",
         "2026-03-09T09:00:00Z"),
    # Holidays computed from Easter (5 April 2026): Easter Monday, Ascension, Whit Monday.
    Case("fr easter monday", Callee(FR_MOBILE), "2026-04-06T11:00:00+02:00", "fr", False, "fr:holiday",
         "2026-04-07T08:00:00Z"),
    Case("fr ascension thursday", Callee(FR_MOBILE), "2026-05-14T15:00:00+02:00", "fr", False, "fr:holiday",
         "2026-05-15T08:00:00Z"),
    Case("fr good friday is a working day in Paris", Callee(FR_MOBILE), "2026-04-03T11:00:00+02:00", "fr",
         True, "fr:window", "2026-04-03T09:00:00Z"),
    # Alsace-Moselle: Good Friday and 26 December are holidays too.
    Case("alsace-moselle good friday", Callee("+33388123456", subdivision="67"), "2026-04-03T11:00:00+02:00",
         "fr", False, "fr:holiday", "2026-04-07T08:00:00Z"),
    Case("moselle 26 december", Callee(FR_MOBILE, subdivision="57"), "2025-12-26T11:00:00+01:00", "fr", False,
         "fr:holiday", "2025-12-29T09:00:00Z"),
    # Overseas departments: their own zone and holidays.
    Case("guadeloupe abolition day", Callee("+590690001234"), "2026-05-27T11:00:00-04:00", "fr", False,
         "fr:holiday", "2026-05-28T14:00:00Z"),
    Case("reunion mobile, Reunion's zone only", Callee("+262693123456"), "2026-03-02T19:30:00+04:00", "fr",
         True, "fr:window", "2026-03-02T15:30:00Z"),
    Case("mayotte mobile, Mayotte's zone only", Callee("+262639012345"), "2026-03-02T20:30:00+04:00", "fr",
         True, "fr:window", "2026-03-02T16:30:00Z"),
    # DST change days, Europe: the Monday after the switch opens at 10:00 local, summer time.
    Case("europe spring forward weekend", Callee(FR_MOBILE), "2026-03-27T20:30:00+01:00", "fr", False,
         "fr:window", "2026-03-30T08:00:00Z"),
    Case("europe fall back weekend", Callee(FR_MOBILE), "2026-10-23T20:30:00+02:00", "fr", False, "fr:window",
         "2026-10-26T09:00:00Z"),
    # DST change days, US (2026-03-08 and 2026-11-01 are Sundays).
    Case("us spring forward sunday", Callee("+12125551234"), "2026-03-07T21:30:00-05:00", "us", False,
         "us:window", "2026-03-08T12:00:00Z"),
    Case("us fall back sunday", Callee("+12125551234"), "2026-10-31T21:30:00-04:00", "us", False, "us:window",
         "2026-11-01T13:00:00Z"),
    # A US number in two zones: allowed only when both allow it.
    Case("idaho, mountain open but pacific not yet", Callee("+12085551234"), "2026-06-10T08:30:00-06:00",
         "us", False, "us:window", "2026-06-10T15:00:00Z"),
    Case("idaho, pacific open but mountain closed", Callee("+12085551234"), "2026-06-10T20:30:00-07:00", "us",
         False, "us:window", "2026-06-11T15:00:00Z"),
    Case("idaho, both open", Callee("+12085551234"), "2026-06-10T12:00:00-07:00", "us", True, "us:window",
         "2026-06-10T19:00:00Z"),
    Case("florida panhandle, two zones and 20:00", Callee("+18502345678"), "2026-06-10T19:30:00-05:00", "us",
         False, "us/FL:window", "2026-06-11T13:00:00Z"),
    Case("new york until 21:00", Callee("+12125551234"), "2026-06-10T20:30:00-04:00", "us", True, "us:window",
         "2026-06-11T00:30:00Z"),
    # Morocco: Africa/Casablanca (UTC+1, UTC+0 around Ramadan), not the Canaries' zone.
    Case("moroccan mobile 19:29", Callee("+212661234567"), "2026-01-15T19:29:00+01:00", "ma", True,
         "ma:window", "2026-01-15T18:29:00Z"),
    Case("moroccan mobile, winter evening the Canaries would allow", Callee("+212661234567"),
         "2026-01-15T19:15:00+00:00", "ma", False, "ma:window", "2026-01-16T07:00:00Z"),
    Case("moroccan mobile during Ramadan time (UTC+0)", Callee("+212661234567"), "2026-03-01T07:30:00+00:00",
         "ma", False, "ma:window", "2026-03-01T08:00:00Z"),
    # Unknown zone: the country's zones (a toll-free NANP number: every US zone), or none at all.
    Case("us toll-free: every US zone", Callee("+18005551234"), "2026-06-10T12:00:00Z", "us", False,
         "us:window", "2026-06-10T18:00:00Z"),
    Case("satellite number, no zone", Callee("+881612345678"), "2026-06-10T12:00:00Z", "fr", False, "fr:zone",
         None),
    Case("the contact's timezone overrides", Callee("+881612345678", timezone="Europe/Paris"),
         "2026-06-10T12:00:00+02:00", "fr", True, "fr:window", "2026-06-10T10:00:00Z"),
    # Canada (CRTC): weekdays 9-21:30, weekends 10-18.
    Case("canada saturday 18:00", Callee("+14165551234"), "2026-06-13T18:00:00-04:00", "ca", False,
         "ca:window", "2026-06-14T14:00:00Z"),
    Case("canada weekday 21:29", Callee("+14165551234"), "2026-06-10T21:29:00-04:00", "ca", True, "ca:window",
         "2026-06-11T01:29:00Z"),
    # 4 calls or attempts per 30 days: the 5th waits until the oldest is 30 days old.
    Case("fr 4 per 30 days", Callee(FR_MOBILE), "2026-03-02T11:00:00+01:00", "fr", False, "fr:cap",
         "2026-03-04T09:30:00Z", PARIS_CAP),
    Case("fr 3 in 30 days is fine", Callee(FR_MOBILE), "2026-03-02T11:00:00+01:00", "fr", True, "fr:window",
         "2026-03-02T10:00:00Z", History(attempts=PARIS_CAP.attempts[1:])),
    # 60 days after a refusal; the end falls on a Saturday, so Monday 10:00.
    Case("fr refusal cool-down", Callee(FR_MOBILE), "2026-03-02T11:00:00+01:00", "fr", False,
         "fr:refusal_cooldown", "2026-03-09T09:00:00Z", History(refused_at=t("2026-01-07T15:00:00+01:00"))),
    Case("fr refusal 60 days ago", Callee(FR_MOBILE), "2026-03-09T11:00:00+01:00", "fr", True, "fr:window",
         "2026-03-09T10:00:00Z", History(refused_at=t("2026-01-07T15:00:00+01:00"))),
    Case("ma has no refusal rule", Callee("+212661234567"), "2026-03-02T11:00:00+01:00", "ma", True,
         "ma:window", "2026-03-02T10:00:00Z", History(refused_at=t("2026-02-20T15:00:00+01:00"))),
    # Abandoned call: 72 h without redial, unless an agent is reserved for it.
    Case("abandon lock", Callee(FR_MOBILE), "2026-03-04T10:30:00+01:00", "fr", False, "fr:abandon_lock",
         "2026-03-05T09:00:00Z", History(abandoned_at=t("2026-03-02T10:00:00+01:00"))),
    Case("abandon lock lifted for a reserved agent", Callee(FR_MOBILE), "2026-03-04T10:30:00+01:00", "fr",
         True, "fr:window", "2026-03-04T09:30:00Z",
         History(abandoned_at=t("2026-03-02T10:00:00+01:00"), agent_reserved=True)),
    # Consent lifts the hours (D.223-9 al. 2), never the caps.
    Case("fr consent on a sunday", Callee(FR_MOBILE, consent=True), "2026-03-08T21:00:00+01:00", "fr", True,
         "fr:window", "2026-03-08T20:00:00Z"),
    Case("fr consent keeps the cap", Callee(FR_MOBILE, consent=True), "2026-03-02T21:00:00+01:00", "fr",
         False, "fr:cap", "2026-03-04T09:30:00Z", PARIS_CAP),
    # Florida: 3 calls per 24 h on the same subject (this campaign).
    Case("florida 3 per 24 h", Callee("+13055551234"), "2026-06-10T15:00:00-04:00", "us", False, "us/FL:cap",
         "2026-06-11T13:30:00Z",
         History(campaign_attempts=tuple(t(f"2026-06-10T{h}:30:00-04:00") for h in ("09", "11", "13")))),
]
# fmt: on


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hours_table(case: Case) -> None:
    decision = decide(case.callee, t(case.at), BUILTIN[case.rules], case.history)
    got = (decision.allowed, decision.rule, decision.to_json()["next_allowed_at"])
    assert got == (case.allowed, case.rule, case.next_at), decision.reason


def test_next_allowed_at_is_really_allowed() -> None:
    """Every computed next instant, asked again, is allowed; one second before it is not."""
    for case in CASES:
        decision = decide(case.callee, t(case.at), BUILTIN[case.rules], case.history)
        if decision.allowed or decision.next_allowed_at is None:
            continue
        again = decide(case.callee, decision.next_allowed_at, BUILTIN[case.rules], case.history)
        assert again.allowed, (case.name, again.reason)
        before = decide(
            case.callee, decision.next_allowed_at - timedelta(seconds=1), BUILTIN[case.rules], case.history
        )
        assert not before.allowed, case.name


def test_a_window_starting_inside_the_spring_gap_opens_when_the_clock_jumps() -> None:
    ruleset = ruleset_from_toml(
        {"name": "night", "window": [{"days": ["sun"], "start": "02:30", "end": "04:00"}]}
    )
    decision = decide(FR_MOBILE, t("2026-03-28T12:00:00+01:00"), ruleset)
    # 02:00 CET becomes 03:00 CEST at 01:00 UTC: 02:30 never exists; the window opens at 03:00.
    assert decision.next_allowed_at == t("2026-03-29T01:00:00Z")


def test_zones_corrected_against_phonenumbers() -> None:
    expected = {
        "+212661234567": ("Africa/Casablanca",),
        "+262693123456": ("Indian/Reunion",),
        "+262639012345": ("Indian/Mayotte",),
        "+596696123456": ("America/Martinique",),
        "+594694201234": ("America/Cayenne",),
        "+590690001234": ("America/Guadeloupe",),
        "+18502345678": ("America/New_York", "America/Chicago"),
        "+19075812345": ("America/Anchorage", "America/Adak"),
        "+18675551234": ("America/Whitehorse", "America/Edmonton", "America/Winnipeg", "America/Toronto"),
        "+14165551234": ("America/Toronto",),
    }
    assert {n: callee_zones(n).zones for n in expected} == expected


def test_bad_numbers_raise_a_clear_error() -> None:
    with pytest.raises(NumberError, match="not a valid number"):
        decide("+3361234", t("2026-03-02T11:00:00+01:00"), BUILTIN["fr"])
    with pytest.raises(NumberError, match="not a phone number"):
        decide("hello", t("2026-03-02T11:00:00+01:00"), BUILTIN["fr"])


def test_custom_ruleset_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "acme.toml"
    path.write_text(
        'extends = "fr"\nname = "acme"\nrefusal_cooldown = "90d"\n'
        '[[window]]\ndays = ["mon", "tue", "wed", "thu", "fri"]\nstart = "10:00"\nend = "12:00"\n'
        '[[cap]]\nmax = 2\nperiod = "7d"\n',
        encoding="utf-8",
    )
    ruleset = load_ruleset(str(path))
    assert ruleset.name == "acme" and ruleset.holiday_country == "FR"
    assert decide(FR_MOBILE, t("2026-03-02T12:30:00+01:00"), ruleset).rule == "acme:window"
    assert parse_duration("90d") == ruleset.refusal_cooldown
    with pytest.raises(RuleSetError):
        ruleset_from_toml({"window": [{"start": "20:00", "end": "08:00"}]})


def test_cli_hours_check(capsys: pytest.CaptureFixture[str]) -> None:
    at = ["--at", "2026-04-06T11:00:00+02:00"]
    code = main(["hours", "check", "0612345678", *at, "--region", "FR", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 1
    assert doc == {
        "allowed": False,
        "number": FR_MOBILE,
        "territory": "FR",
        "timezones": ["Europe/Paris"],
        "zone_source": "region",
        "local_time": {"Europe/Paris": "2026-04-06T11:00:00+02:00"},
        "ruleset": {
            "name": "fr",
            "why": "rule set fr, applied to every number (not auto)",
            "source": BUILTIN["fr"].source,
        },
        "rule": "fr:holiday",
        "reason": "public holiday in Europe/Paris: Easter Monday (2026-04-06)",
        "next_allowed_at": "2026-04-07T08:00:00Z",
    }


def test_cli_hours_check_bad_number_no_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hours", "check", "12345"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "not a valid number" in captured.err and "Traceback" not in captured.err


def test_json_is_utc_z() -> None:
    out = io.StringIO()
    decision = decide(FR_MOBILE, datetime(2026, 3, 2, 10, 0, tzinfo=UTC), BUILTIN["fr"])
    json.dump(decision.to_json(), out)
    assert '"next_allowed_at": "2026-03-02T10:00:00Z"' in out.getvalue()
