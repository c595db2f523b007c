"""CSV contact import: encodings, delimiters, rejections with line numbers, atomicity, dry run."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import phonenumbers
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from cti.cli import main
from cti.db.engine import create_engine
from cti.db.migrate import upgrade_async
from cti.db.models import DialerContact
from cti.dialer import importer, store
from cti.dialer.csv_import import ImportFileError, NumberCheck, RowError, _slow
from cti.dialer.importer import import_contacts

DATA = Path(__file__).parent / "data"
GOOD_FILE = DATA / "campaign_fr.csv"
EXPECTED_REJECTED = [
    (5, "duplicate of line 2 (+33612345671)"),
    (6, "'12345' is not a valid number (region FR)"),
    (7, "no phone number"),
    (8, "consent 'peut-être': use oui/non (yes/no, 1/0)"),
    (9, "unknown time zone 'Mars/Olympus' (e.g. Europe/Paris, Africa/Casablanca)"),
    (10, "+33612345676 on the global do-not-call list"),
]


@pytest.fixture
async def db(tmp_path: Path) -> AsyncEngine:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'cti.db'}")
    await upgrade_async(engine)
    # The file has a Moroccan number: the campaign declares it calls Morocco too.
    await store.create_campaign(engine, "promo", {"ruleset": "fr", "countries": ["FR", "MA"]})
    await store.add_dnc(engine, ["+33612345676"])
    yield engine  # type: ignore[misc]
    await engine.dispose()


async def contacts(engine: AsyncEngine) -> list[DialerContact]:
    async with store.session_factory(engine)() as session:
        return list((await session.scalars(select(DialerContact).order_by(DialerContact.line))).all())


async def test_import_accepts_good_rows_and_names_every_rejected_one(db: AsyncEngine, tmp_path: Path) -> None:
    errors = tmp_path / "errors.csv"
    report = await import_contacts(db, GOOD_FILE, "promo", errors_path=errors)
    assert (report.rows, report.accepted, report.rejected) == (10, 4, 6)
    assert report.reasons == EXPECTED_REJECTED
    assert report.fields == ["Nom", "Prénom", "Ville"]
    rows = await contacts(db)
    assert [(c.line, c.phone_e164, c.consent, c.timezone) for c in rows] == [
        (2, "+33612345671", True, None),
        (3, "+33612345672", False, None),
        (4, "+212661234571", False, "Africa/Casablanca"),
        (12, "+33387123451", False, None),
    ]
    assert rows[0].fields == {"Nom": "Dupont", "Prénom": "Zoë", "Ville": "Paris"}
    assert rows[0].status == "pending" and rows[0].updated_at is not None
    written = list(csv.reader(errors.read_text(encoding="utf-8-sig").splitlines(), delimiter=";"))
    assert written[0] == ["line", "reason", "Nom", "Prénom", "Téléphone", "Ville", "consentement", "fuseau"]
    assert [(int(r[0]), r[1]) for r in written[1:]] == EXPECTED_REJECTED
    assert written[1][2:] == ["Durand", "Léa", "0612345671", "Paris", "", ""]


async def test_latin1_comma_file_reads_the_same(db: AsyncEngine, tmp_path: Path) -> None:
    text = GOOD_FILE.read_text(encoding="utf-8").replace(";", ",")
    path = tmp_path / "latin1.csv"
    path.write_bytes(text.encode("cp1252"))
    report = await import_contacts(db, path, "promo")
    assert (report.encoding, report.delimiter, report.accepted) == ("cp1252", ",", 4)
    assert (await contacts(db))[0].fields["Prénom"] == "Zoë"


async def test_bom_and_excel_sep_line(db: AsyncEngine, tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbfsep=;\r\n" + GOOD_FILE.read_bytes())
    report = await import_contacts(db, path, "promo")
    assert report.encoding == "utf-8-sig" and report.accepted == 4
    assert report.reasons[0][0] == 6  # line numbers count the sep= line


async def test_dry_run_writes_nothing(db: AsyncEngine) -> None:
    report = await import_contacts(db, GOOD_FILE, "promo", dry_run=True)
    assert report.accepted == 4 and "nothing was written" in report.summary()
    assert await contacts(db) == []


async def test_second_import_rejects_numbers_already_there(db: AsyncEngine) -> None:
    await import_contacts(db, GOOD_FILE, "promo")
    report = await import_contacts(db, GOOD_FILE, "promo")
    assert report.accepted == 0
    assert (2, "+33612345671 already in the campaign") in report.reasons


async def test_campaign_dnc_list(db: AsyncEngine) -> None:
    await store.add_dnc(db, ["+33612345672"], "promo")
    report = await import_contacts(db, GOOD_FILE, "promo")
    assert (3, "+33612345672 on the campaign's do-not-call list") in report.reasons


async def test_import_is_atomic(db: AsyncEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importer, "CHUNK", 2)
    calls = 0
    real_write = importer._ContactWriter._write

    async def failing_write(self: importer._ContactWriter, rows: list[tuple[object, ...]]) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError("disk full")
        await real_write(self, rows)

    monkeypatch.setattr(importer._ContactWriter, "_write", failing_write)
    with pytest.raises(OSError):
        await import_contacts(db, GOOD_FILE, "promo")
    async with db.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(DialerContact)) == 0


async def test_unusable_files(db: AsyncEngine, tmp_path: Path) -> None:
    no_phone = tmp_path / "nophone.csv"
    no_phone.write_text("nom;ville\nDupont;Paris\n", encoding="utf-8")
    with pytest.raises(ImportFileError, match="no phone column"):
        await import_contacts(db, no_phone, "promo")
    xlsx = tmp_path / "book.xlsx"
    xlsx.write_bytes(b"PK\x03\x04rest")
    with pytest.raises(ImportFileError, match="Excel workbook"):
        await import_contacts(db, xlsx, "promo")


def test_fast_number_path_agrees_with_phonenumbers() -> None:
    rng = random.Random(5)
    for region in ("FR", "MA", "US"):
        check = NumberCheck(region)
        code = str(phonenumbers.country_code_for_region(region))
        for _ in range(3000):
            digits = "".join(rng.choice("0123456789") for _ in range(rng.choice((9, 10, 11))))
            for text in (
                digits,
                "+" + code + digits[1:],
                " ".join(digits[i : i + 2] for i in range(0, 10, 2)),
            ):
                fast: str | None
                slow: str | None
                try:
                    fast = check.e164(text)
                except RowError:
                    fast = None
                try:
                    slow = _slow(text, region)
                except RowError:
                    slow = None
                assert fast == slow, (region, text)


def test_cli_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    assert main(["campaign", "create", "promo", "--rules", "fr", "--countries", "FR,MA", "--url", url]) == 0
    capsys.readouterr()
    errors = tmp_path / "rejected.csv"
    code = main(
        ["campaign", "import", str(GOOD_FILE), "--campaign", "promo", "--url", url, "--errors", str(errors)]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "line 5: duplicate of line 2 (+33612345671)" in out
    assert "campaign promo: 5 contacts imported; 5 rows rejected" in out
    assert errors.is_file()
    assert main(["campaign", "import", str(GOOD_FILE), "--campaign", "nope", "--url", url]) == 2
    assert "no campaign 'nope'" in capsys.readouterr().err
