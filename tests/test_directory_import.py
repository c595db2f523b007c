"""`cti customers import`: spreadsheet exports as they come (UTF-8 with and without BOM, Windows
Latin-1, `;` or `,`, French headers), rejected rows with their line numbers, idempotent
re-imports, dry runs and failures that write nothing, on SQLite and PostgreSQL; and the command
itself in a subprocess."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from cti.db.models import Customer, CustomerPhone
from cti.directory import importer
from cti.directory.csv_import import ImportFileError, parse_customers_csv, read_customers_csv
from cti.directory.importer import SAMPLE_CUSTOMERS, import_customers, import_sample, write_errors
from cti.directory.lookup import CustomerDirectory
from test_directory_support import BACKENDS, fresh_database, insert_legacy_phone, migrated_engine

DATA = Path(__file__).parent / "data"


@pytest.fixture(params=BACKENDS)
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with fresh_database(request.param, tmp_path) as url, migrated_engine(url) as eng:
        yield eng


async def import_file(engine: AsyncEngine, name: str, region: str = "FR", **kw: Any) -> importer.ImportReport:
    return await import_customers(engine, read_customers_csv(DATA / name, region), region, **kw)


async def counts(engine: AsyncEngine) -> tuple[int, int]:
    async with engine.connect() as conn:
        customers = (await conn.execute(select(func.count()).select_from(Customer))).scalar_one()
        phones = (await conn.execute(select(func.count()).select_from(CustomerPhone))).scalar_one()
    return customers, phones


def outcome(report: importer.ImportReport) -> tuple[int, int, int, list[int]]:
    return report.created, report.updated, report.unchanged, [r.line for r in report.rejected]


# -- reading files ------------------------------------------------------------------------------


def test_good_file_with_several_numbers_per_row() -> None:
    parsed = read_customers_csv(DATA / "customers_good.csv", "FR")
    rows = [
        (r.line, r.name, [(p.e164, p.label) for p in r.phones], r.account, r.vip, r.queue_priority)
        for r in parsed.rows
    ]
    assert (parsed.encoding, parsed.delimiter, parsed.rejected) == ("utf-8", ",", [])
    assert rows == [
        (2, "Jean Dupont", [("+33612345678", None)], "C-1001", True, 10),
        (3, "Boulangerie Riviere", [("+33478123456", None), ("+33478123457", None)], "C-1002", False, 0),
        (4, "Youssef El Amrani", [("+212661234567", None)], "M-2001", False, None),
        (5, "Marie Martin", [("+33145678901", None), ("+33623456789", "mobile")], "C-1003", None, None),
        (6, "Paul Martin", [("+33145678901", None)], "C-1004", False, 0),
        (7, "Fatima Zahra Bennani", [("+212537123456", None), ("+212670112233", None)], "M-2002", True, 5),
        (8, "Garage Moreau & Fils", [("+33240112233", None), ("+33611223344", "phone2")], None, False, 0),
        (9, "Hôtel Atlas Agadir", [("+212528841234", None)], "M-2004", True, None),
    ]
    assert parsed.rows[0].address == "12 rue de la République, 69002 Lyon"


def test_excel_utf8_bom_semicolon_french_headers() -> None:
    parsed = read_customers_csv(DATA / "customers_bom_semicolon.csv", "FR")
    assert (parsed.encoding, parsed.delimiter) == ("utf-8-sig", ";")
    assert parsed.columns[0] == "Nom"  # the BOM did not stick to the first header
    assert [(r.name, r.account, r.vip, r.queue_priority) for r in parsed.rows] == [
        ("Sophie Lefèvre", "C-1006", True, 2),
        ("Crèmerie à l'Ancienne", "C-1015", False, None),
        ("Karim Ouazzani", "M-2003", True, 5),
    ]
    assert parsed.rows[1].phones[1].label == "portable"
    assert parsed.rows[2].address == "Guéliz; Marrakech"


def test_windows_latin1_with_excel_sep_line() -> None:
    raw = (DATA / "customers_latin1.csv").read_bytes()
    assert "é".encode("cp1252") in raw and "é".encode() not in raw
    parsed = parse_customers_csv(raw, "FR")
    assert (parsed.encoding, parsed.delimiter) == ("cp1252", ";")
    assert [(r.line, r.name, r.notes) for r in parsed.rows] == [
        (3, "Élodie Faure", "Déjà cliente à Noël"),
        (4, "Société Générale des Pâtes", "Rappeler à 9 h"),
        (5, "Naïma Benjelloun", None),
    ]


def test_the_documented_example_and_excel_unicode_text() -> None:
    """docs/directory.md's example parses as documented, also saved as Excel's "Unicode text"
    (UTF-16 with BOM, tab separated)."""
    doc = (Path(__file__).parents[1] / "docs" / "directory.md").read_text(encoding="utf-8")
    example = doc.split("```csv\n", 1)[1].split("```", 1)[0]
    for data in (example.encode(), example.replace(";", "\t").encode("utf-16")):
        parsed = parse_customers_csv(data, "FR")
        assert parsed.rejected == []
        assert [(r.name, len(r.phones), r.account) for r in parsed.rows] == [
            ("Jean Dupont", 1, "C-1001"),
            ("Boulangerie Riviere", 2, "C-1002"),
            ("Youssef El Amrani", 1, "M-2001"),
            ("Marie Martin", 2, "C-1003"),
        ]


def test_slashes_separate_numbers_but_not_the_pairs_of_one_number() -> None:
    parsed = parse_customers_csv(
        b"name;phone\nA;06/12/34/56/78\nB;0612345679 / 04 78 12 34 56\nC;04 78 | 06/98/76/54/32\n",
        "FR",
    )
    assert [[p.e164 for p in r.phones] for r in parsed.rows] == [
        ["+33612345678"],
        ["+33612345679", "+33478123456"],
    ]
    assert [(r.line, r.reason) for r in parsed.rejected] == [(4, "invalid phone '04 78': too short")]


def test_moroccan_region_reads_national_numbers_as_moroccan() -> None:
    parsed = parse_customers_csv(b"name,phone\nSaid,0661234567\nRabat,0537123456\n", "MA")
    assert [r.phones[0].e164 for r in parsed.rows] == ["+212661234567", "+212537123456"]


def test_bad_rows_are_rejected_with_line_and_reason() -> None:
    parsed = read_customers_csv(DATA / "customers_bad.csv", "FR")
    assert [(r.line, r.reason) for r in parsed.rejected] == [
        (3, "missing name"),
        (4, "invalid phone '01 23': too short"),
        (5, "missing phone"),
        (6, "duplicate of line 2 (same account C-1001)"),
        (7, "duplicate of line 2 (same name and phone Jean Dupont +33612345678)"),
        (8, "vip 'peut-être' is not one of oui/non, yes/no, 1/0, true/false"),
        (9, "queue_priority 'haute' is not a whole number from 0 to 1000"),
        (14, "7 cells but the header has 6 columns (an unquoted delimiter inside a cell?)"),
        (15, "invalid phone 'anonymous': not a phone number"),
        (16, "invalid phone '+212 6 61 23': too short"),
    ]
    # The quoted cells over three lines (10-12) do not shift the line numbers after them.
    assert [(r.line, r.name) for r in parsed.rows] == [
        (2, "Jean Dupont"),
        (10, "Note sur deux lignes"),
        (17, "Bonne Ligne"),
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the file is empty"),
        (b"nom,adresse,compte\nJean,Lyon,C-1\n", "missing required column(s): phone"),
        (b"phone;vip\n0612345678;oui\n", "missing required column(s): name"),
        (b"PK\x03\x04\x14\x00\x06\x00", "Excel workbook"),
        (b"name,phone\x00\n", "NUL bytes"),
        (b"name,nom,phone\nA,B,0612345678\n", "column 'name' appears twice"),
        (b"\xef\xbb\xbfname,phone\n\xe9,0612345678\n", "the file says utf-8 but is not"),
    ],
)
def test_unusable_files_raise_one_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(ImportFileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_customers_csv(data, "FR")


def test_unreadable_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ImportFileError, match="cannot read"):
        read_customers_csv(tmp_path / "absent.csv", "FR")
    with pytest.raises(ImportFileError, match="cannot read"):
        read_customers_csv(tmp_path, "FR")


# -- importing (SQLite and PostgreSQL) ----------------------------------------------------------


async def test_import_then_reimport_is_idempotent(engine: AsyncEngine) -> None:
    first = await import_file(engine, "customers_good.csv")
    assert outcome(first) == (8, 0, 0, [])
    assert await counts(engine) == (8, 12)
    again = await import_file(engine, "customers_good.csv")
    assert outcome(again) == (0, 0, 8, [])
    assert await counts(engine) == (8, 12)
    directory = CustomerDirectory(engine, "FR")
    assert [c.name for c in (await directory.lookup("0145678901")).customers] == [
        "Marie Martin",
        "Paul Martin",
    ]
    jean = (await directory.lookup("+33612345678")).customer
    assert jean is not None and (jean.vip, jean.queue_priority, jean.account) == (True, 10, "C-1001")


async def test_reimport_updates_changed_rows_and_adds_numbers_once(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    await import_file(engine, "customers_good.csv")
    directory = CustomerDirectory(engine, "FR")
    await directory.update_customer(
        (await directory.search("C-1001"))[0].id or 0, notes="Saisi au poste: ne pas écraser"
    )
    changed = tmp_path / "changed.csv"
    changed.write_text(
        "name,phone,account,address,notes\n"
        "Jean Dupont,06 12 34 56 78 | 07 81 23 45 67,C-1001,,\n"  # a new number; empty cells keep
        'Boulangerie Riviere,04 78 12 34 56,C-1002,"4 place Bellecour, 69002 Lyon",\n'  # moved
        "Paul Martin,+33145678901,C-1004,,\n",
        encoding="utf-8",
    )
    report = await import_customers(engine, read_customers_csv(changed, "FR"), "FR")
    assert outcome(report) == (0, 2, 1, [])
    assert await counts(engine) == (8, 13)
    jean = (await directory.lookup("07 81 23 45 67")).customer
    assert jean is not None
    assert [p.e164 for p in jean.phones] == ["+33612345678", "+33781234567"]
    assert (jean.notes, jean.address) == (
        "Saisi au poste: ne pas écraser",
        "12 rue de la République, 69002 Lyon",
    )
    boulangerie = (await directory.lookup("0478123456")).customer
    assert boulangerie is not None and boulangerie.address == "4 place Bellecour, 69002 Lyon"


async def test_old_national_spelling_is_rewritten_not_doubled(engine: AsyncEngine) -> None:
    legacy = await insert_legacy_phone(engine, "Jean Dupont", "06 12 34 56 78")
    report = await import_file(engine, "customers_good.csv")
    assert outcome(report) == (7, 1, 0, [])
    async with engine.connect() as conn:
        rows = (
            await conn.execute(text("SELECT e164 FROM customer_phones WHERE customer_id = :c"), {"c": legacy})
        ).all()
    assert [r[0] for r in rows] == ["+33612345678"]
    assert (await CustomerDirectory(engine, "FR").lookup("0612345678")).customer is not None


async def test_both_spellings_already_stored_stay_as_they_are(engine: AsyncEngine) -> None:
    legacy = await insert_legacy_phone(engine, "Jean Dupont", "0612345678")
    async with engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO customer_phones (customer_id, e164) VALUES (:c, '+33612345678')"), {"c": legacy}
        )
    report = await import_file(engine, "customers_good.csv")
    assert outcome(report) == (7, 1, 0, [])  # matched, and no unique-constraint clash
    assert await counts(engine) == (8, 13)


async def test_ambiguous_matches_are_rejected_not_guessed(engine: AsyncEngine) -> None:
    directory = CustomerDirectory(engine, "FR")
    await directory.create_customer("Jean Dupont", ["0612345678"], account="C-1001")
    await directory.create_customer("Jean Dupont (doublon)", ["0612345679"], account="C-1001")
    await directory.create_customer("Paul Martin", ["0145678901"])
    await directory.create_customer("Paul Martin", ["0145678901", "0600000001"])
    report = await import_file(engine, "customers_good.csv")
    assert [(r.line, r.reason.split(" (")[0]) for r in report.rejected] == [
        (2, "matches 2 customers"),  # by account
        (6, "matches 2 customers"),  # C-1004 is new, and two Paul Martin hold the number
    ]
    assert outcome(report)[:3] == (6, 0, 0)  # Marie shares Paul's number but not his name


async def test_bad_rows_do_not_stop_the_good_ones(engine: AsyncEngine) -> None:
    report = await import_file(engine, "customers_bad.csv")
    assert outcome(report) == (3, 0, 0, [3, 4, 5, 6, 7, 8, 9, 14, 15, 16])
    assert await counts(engine) == (3, 3)


async def test_dry_run_counts_but_writes_nothing(engine: AsyncEngine) -> None:
    await import_file(engine, "customers_latin1.csv")
    before = await counts(engine)
    report = await import_file(engine, "customers_good.csv", dry_run=True)
    assert outcome(report) == (8, 0, 0, [])
    assert "dry run: nothing was written" in report.summary()
    assert await counts(engine) == before


async def test_a_failure_midway_writes_nothing(engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    await import_file(engine, "customers_good.csv")
    real_insert = importer._insert

    async def insert_then_fail(*args: Any) -> None:
        await real_insert(*args)
        raise RuntimeError("disk full")

    monkeypatch.setattr(importer, "_insert", insert_then_fail)
    with pytest.raises(RuntimeError):
        await import_file(engine, "customers_bom_semicolon.csv")
    assert await counts(engine) == (8, 12)


async def test_sample_customers_for_the_demo(engine: AsyncEngine) -> None:
    report = await import_sample(engine)
    assert outcome(report) == (21, 0, 0, [])
    assert outcome(await import_sample(engine)) == (0, 0, 21, [])
    directory = CustomerDirectory(engine, "FR")
    results = {
        raw: await directory.lookup(raw)
        for raw in ("+33612345678", "0478123456", "+212661234567", "0145678901")
    }
    assert {raw: (r.status, [c.name for c in r.customers]) for raw, r in results.items()} == {
        "+33612345678": ("found", ["Jean Dupont"]),
        "0478123456": ("found", ["Boulangerie Riviere"]),
        "+212661234567": ("found", ["Youssef El Amrani"]),
        "0145678901": ("several", ["Marie Martin", "Paul Martin"]),
    }
    jean = results["+33612345678"].customer
    assert jean is not None and jean.vip
    assert SAMPLE_CUSTOMERS.is_file()


def test_errors_file_lists_every_rejected_row(tmp_path: Path) -> None:
    parsed = read_customers_csv(DATA / "customers_bad.csv", "FR")
    target = tmp_path / "errors.csv"
    write_errors(target, parsed, parsed.rejected)
    assert target.read_bytes().startswith(b"\xef\xbb\xbf")
    with open(target, encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle, delimiter=";"))
    assert rows[0] == ["line", "reason", "name", "phone", "account", "vip", "queue_priority", "notes"]
    assert [r[0] for r in rows[1:]] == ["3", "4", "5", "6", "7", "8", "9", "14", "15", "16"]
    assert rows[2] == ["4", "invalid phone '01 23': too short", "Numéro Faux", "01 23", "C-2001", "", "", ""]
    assert rows[8][:3] == [
        "14",
        "7 cells but the header has 6 columns (an unquoted delimiter inside a cell?)",
        "Trop De Cellules",
    ]


# -- the command --------------------------------------------------------------------------------


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTI_")}
    return subprocess.run(
        [sys.executable, "-m", "cti.cli", "customers", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_import_with_settings_errors_file_and_dry_run(tmp_path: Path) -> None:
    db = tmp_path / "cti.db"
    config = tmp_path / "cti.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{db}"\n[directory]\nregion = "FR"\n', encoding="utf-8")

    dry = run_cli(
        "import", str(DATA / "customers_good.csv"), "--config", str(config), "--dry-run", cwd=tmp_path
    )
    assert dry.returncode == 0, dry.stderr
    assert "customers would be: 8 created, 0 updated, 0 unchanged; 0 rows rejected" in dry.stdout

    errors = tmp_path / "rejets.csv"
    bad = run_cli(
        "import",
        str(DATA / "customers_bad.csv"),
        "--config",
        str(config),
        "--errors",
        str(errors),
        cwd=tmp_path,
    )
    assert bad.returncode == 1, bad.stderr
    assert "line 4: invalid phone '01 23': too short" in bad.stdout
    assert "customers were: 3 created, 0 updated, 0 unchanged; 10 rows rejected" in bad.stdout
    assert len(errors.read_text(encoding="utf-8-sig").splitlines()) == 11

    good = run_cli("import", str(DATA / "customers_good.csv"), "--config", str(config), cwd=tmp_path)
    assert good.returncode == 0, good.stderr
    # Jean came in with the bad file; the good one adds his address and notes.
    assert "customers were: 7 created, 1 updated, 0 unchanged" in good.stdout

    look = run_cli("lookup", "06 12 34 56 78", "--config", str(config), cwd=tmp_path)
    assert look.returncode == 0, look.stderr
    assert "'06 12 34 56 78' -> +33612345678 (06 12 34 56 78): found" in look.stdout
    assert "Jean Dupont VIP account=C-1001" in look.stdout


def test_cli_moroccan_region_from_the_command_line(tmp_path: Path) -> None:
    source = tmp_path / "maroc.csv"
    source.write_text("nom;téléphone\nSaid Alaoui;0661234567\n", encoding="utf-8")
    url = f"sqlite:///{tmp_path}/cti.db"
    done = run_cli("import", str(source), "--url", url, "--region", "ma", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    look = run_cli("lookup", "+212661234567", "--url", url, "--json", cwd=tmp_path)
    assert '"status": "found"' in look.stdout and "Said Alaoui" in look.stdout


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("absent.csv", [], "cannot read"),
        ("customers_missing_columns.csv", [], "missing required column(s): phone"),
        ("customers_good.csv", ["--region", "XX"], "unknown region 'XX'"),
    ],
)
def test_cli_unusable_input_exits_2_without_traceback(
    tmp_path: Path, name: str, args: list[str], message: str
) -> None:
    path = DATA / name if (DATA / name).exists() else tmp_path / name
    done = run_cli("import", str(path), "--url", f"sqlite:///{tmp_path}/cti.db", *args, cwd=tmp_path)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "cti.db").exists()  # the database was not even created


def test_cli_database_down_exits_3_and_writes_nothing(tmp_path: Path) -> None:
    from test_directory_support import closed_port

    url = f"postgresql://postgres:pw@127.0.0.1:{closed_port()}/test"
    done = run_cli("import", str(DATA / "customers_good.csv"), "--url", url, cwd=tmp_path)
    assert done.returncode == 3
    assert "database error" in done.stderr and "nothing was written" in done.stderr
    assert "Traceback" not in done.stderr
    assert ":pw@" not in done.stderr
