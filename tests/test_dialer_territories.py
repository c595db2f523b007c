"""The numbers French files really hold: overseas numbers in national format, addresses that say
where the contact is, foreign and premium numbers, and `auto` rules (each number by its own
country's law, in its own zone)."""

from __future__ import annotations

import json
import random
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import phonenumbers
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from cti.ami.message import Message
from cti.calls import events as ev
from cti.cli import main
from cti.db.engine import create_engine, session_factory
from cti.db.migrate import upgrade_async
from cti.db.models import DialerContact
from cti.dialer import store
from cti.dialer.campaigns import CampaignError
from cti.dialer.csv_import import NumberCheck, RowError, _number_regions, _slow
from cti.dialer.engine import DialerEngine
from cti.dialer.hours import Callee, decide, decide_for
from cti.dialer.importer import import_contacts
from cti.dialer.jurisdiction import make_rules
from cti.dialer.rulesets import BUILTIN
from cti.dialer.settings import DialerSettings
from cti.dialer.territories import address_place, department_region, postal_region
from cti.dialer.timezones import callee_zones
from cti.dialer.why import why_not_dialed
from cti.directory.numbers import OVERSEAS_LEADS, _overseas_blocks, overseas_e164, regions_of

DATA = Path(__file__).parent / "data"
MESSY = DATA / "campaign_outremer_cp1252.csv"  # Windows-1252, ';', an address, what CRMs export

# (line, E.164, stored country, zones): each overseas number in national format (or a wrong +33)
# is its territory's own number, judged in its own zone.
IMPORTED = [
    (2, "+262692169786", "RE", ("Indian/Reunion",)),  # 0692 16 97 86, La Réunion
    (3, "+262693112233", None, ("Indian/Reunion",)),  # dots, no country column
    (4, "+262639974858", "YT", ("Indian/Mayotte",)),  # 0639: Mayotte, not Réunion
    (5, "+590690536685", "GP", ("America/Guadeloupe",)),
    (6, "+590690123456", "MF", ("America/Marigot",)),  # 0690 is shared: 97150 says Saint-Martin
    (7, "+596696123456", "MQ", ("America/Martinique",)),  # written +33 6 96…: read and noted
    (8, "+594694201234", "GF", ("America/Cayenne",)),
    (9, "+262262212345", "RE", ("Indian/Reunion",)),  # fixed line 0262
    (10, "+262269611234", "YT", ("Indian/Mayotte",)),  # 0269: phonenumbers' FR data says +33 too
    (11, "+508412345", "PM", ("America/Miquelon",)),  # 05 08 + six digits
    (13, "+33612345678", "FR", ("Europe/Paris",)),
    (16, "+212661234567", "MA", ("Africa/Casablanca",)),  # Pays: Maroc; 20250 is Casablanca's
    (22, "+262269611235", "YT", ("Indian/Mayotte",)),  # +33 2 69…: read and noted
    (23, "+590590271234", "BL", ("America/St_Barthelemy",)),  # 97133 Gustavia
]
ALLOW = 'not called (allow_numbers = ["{}"] calls them)'
PREMIUM = "'08 99 12 34 56' is a premium-rate number: " + ALLOW.format("premium_rate")
SHARED = "'0810 12 34 56' is a shared-cost number: " + ALLOW.format("shared_cost")
REJECTED = [
    (12, "+262692123456 is a La Réunion number but the row says Guadeloupe: fix the number or the address"),
    (14, "US (United States) number in a campaign limited to FR, MA"),
    (15, "DE (Germany) number in a campaign limited to FR, MA"),
    (17, PREMIUM),
    (18, SHARED),
    (
        19,
        "+262693114455 is a La Réunion number but the row says 75004 (metropolitan France): "
        "fix the number or the address",
    ),
    (20, "duplicate of line 2 (+262692169786)"),
    (
        21,
        "'0693 68 95 62' is not a valid number (region FR): 0693… numbers are La Réunion's (+262), "
        "but no operator holds this block",
    ),
    (24, "the row says both Guadeloupe and 97400 (La Réunion)"),
]
NOTES = [
    (7, "'+33 6 96 12 34 56' read as +596696123456, a Martinique number: +33 is metropolitan France only"),
    (22, "'+33 2 69 61 12 35' read as +262269611235, a Mayotte number: +33 is metropolitan France only"),
]


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'cti.db'}")
    await upgrade_async(engine)
    yield engine
    await engine.dispose()


async def contacts(engine: AsyncEngine) -> list[DialerContact]:
    async with session_factory(engine)() as session:
        return list((await session.scalars(select(DialerContact).order_by(DialerContact.line))).all())


async def test_messy_overseas_export(db: AsyncEngine, tmp_path: Path) -> None:
    await store.create_campaign(db, "outremer", {"ruleset": "auto", "countries": ["FR", "MA"]})
    errors = tmp_path / "rejected.csv"
    report = await import_contacts(db, MESSY, "outremer", errors_path=errors)
    assert (report.encoding, report.delimiter) == ("cp1252", ";")
    assert (report.rows, report.accepted, report.rejected) == (23, 14, 9)
    assert report.reasons == REJECTED
    assert report.notes == NOTES
    rows = await contacts(db)
    got = [
        (c.line, c.phone_e164, c.country, callee_zones(c.phone_e164, c.timezone, c.country).zones)
        for c in rows
    ]
    assert got == IMPORTED
    assert (
        rows[0].fields["Adresse"] == "12 rue de Paris" and rows[0].fields["Commentaire"] == "cliente fidèle"
    )
    assert rows[0].phone_raw == "0692 16 97 86"
    written = errors.read_text(encoding="utf-8-sig").splitlines()
    assert [line.split(";")[0] for line in written[1:]] == [str(line) for line, _ in REJECTED]
    summary = report.summary()
    assert "line 7: note: '+33 6 96 12 34 56' read as +596696123456" in summary
    assert "line 14: US (United States) number in a campaign limited to FR, MA" in summary


async def test_an_fr_campaign_calls_france_and_its_territories_only(db: AsyncEngine) -> None:
    await store.create_campaign(db, "fr", {"ruleset": "fr"})
    report = await import_contacts(db, MESSY, "fr")
    assert (16, "MA (Morocco) number in a campaign limited to FR") in report.reasons
    assert report.accepted == 13  # the overseas numbers are France's


async def test_special_numbers_by_type(db: AsyncEngine, tmp_path: Path) -> None:
    path = tmp_path / "special.csv"
    path.write_text("telephone\n0800 12 34 56\n08 99 12 34 56\n0612345678\n", encoding="utf-8")
    await store.create_campaign(db, "b2b", {"ruleset": "fr", "allow_numbers": ["toll_free"]})
    report = await import_contacts(db, path, "b2b")
    assert report.accepted == 2
    assert report.reasons == [(3, PREMIUM)]


# ----------------------------------------------------------------------------------- numbers
# The issue's list, checked against phonenumbers' metadata: which region owns each block.
NATIONAL = {
    "0639 40 12 34": ("+262639401234", ("YT",)),
    "0692 16 97 86": ("+262692169786", ("RE",)),
    "0693 11 22 33": ("+262693112233", ("RE",)),
    "0690 53 66 85": ("+590690536685", ("GP", "BL", "MF")),  # one block for the three
    "0691 22 12 34": ("+590691221234", ("GP", "BL", "MF")),
    "0696 12 34 56": ("+596696123456", ("MQ",)),
    "0697 01 23 45": ("+596697012345", ("MQ",)),
    "0694 20 12 34": ("+594694201234", ("GF",)),
    "0262 21 23 45": ("+262262212345", ("RE",)),
    "0269 61 12 34": ("+262269611234", ("YT",)),
    "0590 20 12 34": ("+590590201234", ("GP",)),
    "0590 27 12 34": ("+590590271234", ("BL", "MF")),
    "0596 61 12 34": ("+596596611234", ("MQ",)),
    "0594 30 12 34": ("+594594301234", ("GF",)),
    "0508 41 23 45": ("+508412345", ("PM",)),
}


@pytest.mark.parametrize("written", list(NATIONAL))
def test_overseas_numbers_in_national_format(written: str) -> None:
    e164, regions = NATIONAL[written]
    assert NumberCheck("FR").e164(written) == e164 == _slow(written, "FR")
    assert regions_of(phonenumbers.parse(e164)) == regions
    assert NumberCheck("RE").e164(written) == e164  # one plan in every French territory


def test_national_service_numbers_stay_national() -> None:
    # 0806-0809 are in the overseas metadata as fixed lines too, but 08 numbers are national.
    assert overseas_e164("806123456") is None and overseas_e164("899123456") is None
    assert NumberCheck("FR").e164("0806 12 34 56") == "+33806123456"
    with pytest.raises(RowError, match="premium-rate"):
        NumberCheck("FR", make_rules("fr", BUILTIN["fr"])).e164("0899 12 34 56")


def test_overseas_leads_cover_every_overseas_block() -> None:
    """`OVERSEAS_LEADS` is a shortcut: every overseas subscriber block starts with one of them.
    Every block pattern ends in at least four free digits, so trying each five-digit start once
    covers them all."""
    blocks = _overseas_blocks()
    for _, pattern in blocks:
        for alternative in pattern.pattern.split("|(?:"):
            assert re.search(r"\\d\{[4-9]\}\)*$", alternative), alternative
    for start in range(100_000):
        head = f"{start:05d}"
        if head[:2] in OVERSEAS_LEADS or head.startswith("8"):
            continue
        assert not any(p.fullmatch(head + "0000") for _, p in blocks), head


def test_fast_path_agrees_with_the_slow_one_on_the_french_plan() -> None:
    rng = random.Random(11)
    check = NumberCheck("FR")
    leads = [*sorted(OVERSEAS_LEADS), "06", "07", "01", "09", "08"]
    for _ in range(6000):
        digits = "0" + rng.choice(leads)[0:2] + "".join(rng.choice("0123456789") for _ in range(7))
        digits = digits[:10]
        for text in (digits, "+33 " + digits[1:], ".".join(digits[i : i + 2] for i in range(0, 10, 2))):
            fast: str | None
            slow: str | None
            try:
                fast = check.e164(text)
            except RowError:
                fast = None
            try:
                slow = _slow(text, "FR")
            except RowError:
                slow = None
            assert fast == slow, text


def test_regions_of_shared_country_codes_without_parsing() -> None:
    """The import's own reading of which regions hold a number agrees with phonenumbers'."""
    rng = random.Random(3)
    checked = 0
    for code in (262, 590, 212, 44, 7, 47, 61, 358, 599, 290, 39):
        for _ in range(1500):
            digits = "".join(rng.choice("0123456789") for _ in range(rng.choice((8, 9, 10))))
            try:
                parsed = phonenumbers.parse(f"+{code}{digits}")
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(parsed):
                e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
                assert _number_regions(e164) == regions_of(parsed), e164
                checked += 1
    assert checked > 1000


# ----------------------------------------------------------------------------------- places
def test_places_from_postal_and_department_codes() -> None:
    assert [postal_region(c) for c in ("97400", "97600", "97133", "97150", "97110", "97500", "75011")] == [
        "RE", "YT", "BL", "MF", "GP", "PM", "FR",
    ]  # fmt: skip
    assert [department_region(c) for c in ("974", "977", "978", "2A", "57", "99")] == [
        "RE", "BL", "MF", "FR", "FR", None,
    ]  # fmt: skip
    place = address_place("Résidence les Flamboyants, 12 rue de Paris, 97400 Saint-Denis")
    assert place is not None and place.regions == {"RE"}
    named = address_place("Chemin des Hauts, La Réunion")
    assert named is not None and named.regions == {"RE"}
    # Saint-Martin is also a dozen communes of metropolitan France: not read in a free address.
    assert address_place("Place de l'Église, Saint-Martin") is None
    assert address_place("97401 Eugene, Oregon", codes=False) is None


# ----------------------------------------------------------------------------------- hours
def test_cli_hours_check_overseas_number_in_national_format(capsys: pytest.CaptureFixture[str]) -> None:
    # Monday 19:30 in La Réunion (16:30 in Paris): inside the French window, in Réunion's zone.
    at = "2026-03-02T15:30:00Z"
    assert main(["hours", "check", "0692169786", "--at", at, "--region", "FR", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["number"], doc["territory"], doc["timezones"]) == ("+262692169786", "RE", ["Indian/Reunion"])
    assert doc["ruleset"]["name"] == "fr" and doc["rule"] == "fr:window"
    # 20:30 there, 17:30 in Paris: closed, though Paris would still be open.
    at = "2026-03-02T16:30:00Z"
    assert main(["hours", "check", "0692169786", "--at", at, "--rules", "auto", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["rule"] == "fr:window" and doc["local_time"] == {"Indian/Reunion": "2026-03-02T20:30:00+04:00"}
    assert doc["ruleset"]["why"].startswith("auto: RE (La Réunion, France) number: La Réunion is an overseas")
    assert doc["next_allowed_at"] == "2026-03-03T06:00:00Z"  # 10:00 in Réunion


def test_auto_rules_pick_the_country_and_refuse_the_rest() -> None:
    auto = make_rules("auto", None)
    at = datetime(2026, 6, 10, 0, 30, tzinfo=UTC)  # Tue 20:30 in New York, 02:30 in Paris
    us = decide_for(Callee("+12125551234"), at, auto)
    assert (us.allowed, us.rule, us.ruleset, us.timezones) == (True, "us:window", "us", ("America/New_York",))
    assert "TCPA, 47 CFR 64.1200(c)(1)" in us.ruleset_why
    florida = decide_for(Callee("+13055551234"), at, auto)
    assert (florida.allowed, florida.rule) == (False, "us/FL:window")  # Florida: 08:00-20:00
    morocco = decide_for(Callee("0661234567", region="MA"), datetime(2026, 1, 15, 18, 0, tzinfo=UTC), auto)
    assert (morocco.allowed, morocco.ruleset, morocco.timezones) == (True, "ma", ("Africa/Casablanca",))
    canada = decide_for(Callee("+14165551234"), datetime(2026, 6, 13, 22, 30, tzinfo=UTC), auto)
    assert (canada.allowed, canada.rule) == (False, "ca:window")  # Saturday 18:30 in Toronto
    germany = decide_for(Callee("+4930123456"), at, auto)
    assert (germany.allowed, germany.rule, germany.next_allowed_at) == (False, "auto:country", None)
    assert "no calling-hours rule set for Germany" in germany.reason
    fallback = decide_for(Callee("+4930123456"), at, make_rules("auto", None, fallback="fr"))
    assert (fallback.ruleset, fallback.rule) == ("fr", "fr:window")
    premium = decide_for(Callee("+33899123456"), at, auto)
    assert (premium.rule, premium.next_allowed_at) == ("auto:number_type", None)
    limited = decide_for(Callee("+12125551234"), at, make_rules("auto", None, ["FR", "MA"]))
    assert limited.reason == "US (United States) number in a campaign limited to FR, MA"


# (number, country, instant, why it is closed): each territory's own holidays.
OVERSEAS_HOLIDAYS = [
    ("+262692169786", None, "2026-12-21T10:00:00+04:00", None),  # Monday after 20 Dec: open
    ("+262692169786", None, "2026-12-18T10:00:00+04:00", None),
    ("+262639974858", None, "2026-04-27T10:00:00+03:00", "Abolition of Slavery"),  # Mayotte
    ("+596696123456", None, "2026-05-22T10:00:00-04:00", "Abolition of Slavery"),  # Martinique
    ("+594694201234", None, "2026-06-10T10:00:00-03:00", "Abolition of Slavery"),  # Guyane
    ("+590690123456", "MF", "2026-05-28T10:00:00-04:00", "Abolition of Slavery"),  # Saint-Martin
    ("+590690123456", "MF", "2026-05-27T10:00:00-04:00", "27 May, art. L.3422-2"),  # the code's date
    ("+590690123456", None, "2026-05-28T10:00:00-04:00", None),  # the number alone: Guadeloupe
    ("+590590271234", "BL", "2026-10-09T10:00:00-04:00", "Abolition of Slavery"),  # Saint-Barthélemy
    ("+508412345", None, "2026-05-27T10:00:00-03:00", None),  # Saint-Pierre-et-Miquelon: none
]


@pytest.mark.parametrize("case", OVERSEAS_HOLIDAYS, ids=[f"{c[0]}-{c[2][:10]}" for c in OVERSEAS_HOLIDAYS])
def test_each_territory_its_own_holidays(case: tuple[str, str | None, str, str | None]) -> None:
    number, country, at, holiday = case
    decision = decide(Callee(number, country=country), datetime.fromisoformat(at), BUILTIN["fr"])
    if holiday is None:
        assert decision.allowed, decision.reason
    else:
        assert decision.rule == "fr:holiday" and holiday in decision.reason


# ----------------------------------------------------------------------------------- campaigns
async def test_campaign_scope_is_stored_shown_and_kept(db: AsyncEngine, tmp_path: Path) -> None:
    row = await store.create_campaign(db, "c", {"ruleset": "auto", "countries": ["FR", "MA", "US"]})
    doc = store.campaign_json(row)
    assert (doc["ruleset"], doc["countries"], doc["countries_declared"], doc["fallback"]) == (
        "auto", ["FR", "MA", "US"], True, "refuse",
    )  # fmt: skip
    row = await store.update_campaign(db, "c", {"allow_numbers": ["toll_free"]})
    assert store.campaign_json(row)["countries"] == ["FR", "MA", "US"]
    assert store.campaign_json(row)["allow_numbers"] == ["toll_free"]
    custom = tmp_path / "maison.toml"
    custom.write_text(
        'name = "maison"\nextends = "fr"\n[[window]]\nstart = "10:00"\nend = "12:00"\n', "utf-8"
    )
    fields = {"ruleset": "maison", "ruleset_toml": custom.read_text("utf-8")}  # what --rules FILE gives
    row = await store.update_campaign(db, "c", fields)
    spec = store.spec_of(row)
    assert spec.rules.fixed is not None and spec.rules.fixed.name == "maison"
    assert spec.rules.countries() == ("FR", "MA", "US")  # the declared countries stay
    row = await store.update_campaign(db, "c", {"ruleset": "auto", "fallback": "fr"})
    assert store.campaign_json(row)["fallback"] == "fr"
    row = await store.update_campaign(db, "c", {"ruleset": "us"})  # a fixed set has no fallback
    doc = store.campaign_json(row)
    assert (doc["ruleset"], doc["fallback"], doc["countries"]) == ("us", None, ["FR", "MA", "US"])
    plain = await store.create_campaign(db, "plain", {"ruleset": "fr"})
    assert store.campaign_json(plain)["countries"] == ["FR"]
    with pytest.raises(CampaignError, match="not a two-letter country code"):
        await store.create_campaign(db, "bad", {"ruleset": "auto", "countries": ["France"]})
    with pytest.raises(CampaignError, match="unknown number type"):
        await store.create_campaign(db, "bad", {"ruleset": "fr", "allow_numbers": ["premium"]})


@dataclass
class FakeLink:
    sent: list[dict[str, Any]] = field(default_factory=list)

    async def send(self, action: str, headers: Mapping[str, object] | None = None, /, **more: Any) -> Message:
        self.sent.append({"Action": action, **(headers or {}), **more})
        return Message({"Response": "Success", "Message": "Originate successfully queued"})


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def member(interface: str) -> ev.AgentStateChanged:
    return ev.AgentStateChanged("pbx", 0.0, "outbound", interface, interface, 1, False, None, True, False, 0)


async def test_auto_campaign_dials_a_us_number_in_tcpa_hours(db: AsyncEngine, tmp_path: Path) -> None:
    path = tmp_path / "mixed.csv"
    path.write_text("nom;telephone\nParis;06 12 34 56 78\nNew York;+1 212 736 5000\n", encoding="utf-8")
    await store.create_campaign(db, "mixed", {"ruleset": "auto", "countries": ["FR", "US"]})
    assert (await import_contacts(db, path, "mixed")).accepted == 2
    await store.change_state(db, "mixed", "start")
    # Monday 20:30 in Paris (closed), 14:30 in New York (TCPA: 08:00-21:00).
    link, clock = FakeLink(), Clock(datetime(2026, 3, 2, 19, 30, tzinfo=UTC))
    engine = DialerEngine(db, link, DialerSettings(), clock, "pbx")
    await engine.recover()
    for agent in ("PJSIP/1001", "PJSIP/1002"):
        await engine.on_event(member(agent))
    await engine.tick()
    await engine.wait_sent()
    assert [s["Variable"]["CTI_CALLEE"] for s in link.sent] == ["+12127365000"]
    held = await why_not_dialed(db, store.spec_of(await store.get_campaign(db, "mixed")), clock.now)
    assert [(h["phone"], h["why_code"], h["ruleset"]) for h in held] == [("+33612345678", "fr:window", "fr")]
    assert "[fr: auto: FR (metropolitan France) number: Code de la consommation" in held[0]["why_not_dialed"]
    # Tuesday 02:00 UTC: 21:00 in New York, closed until 08:00 there.
    clock.now = datetime(2026, 3, 3, 2, 0, tzinfo=UTC)
    decision = decide_for(
        Callee("+12127365000"), clock.now, store.spec_of(await store.get_campaign(db, "mixed")).rules
    )
    assert (decision.allowed, decision.rule) == (False, "us:window")
    assert decision.next_allowed_at == datetime(2026, 3, 3, 13, 0, tzinfo=UTC)  # 08:00 EST
