"""Reading customer spreadsheets exported as CSV: no I/O beyond the bytes it is given.

What spreadsheets really produce: UTF-8 with or without a BOM, or Windows-1252/Latin-1 (Excel's
"CSV (séparateur: point-virgule)"), `;` or `,` delimited, sometimes an Excel `sep=;` first line,
French or English headers, several numbers in one cell. Every row is either a `CsvRow` ready to
import or a `Rejected` with its line number and the reason, never an exception; only a file that
cannot be read as a customer list at all raises `ImportFileError`.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import phonenumbers

from cti.directory.customer import Phone
from cti.directory.numbers import normalize

FIELD_LIMITS = {"name": 200, "account": 64, "address": 500, "notes": 4000}
MAX_PRIORITY = 1000
MAX_FILE_BYTES = 64 * 1024 * 1024
# Told (rows, characters read, characters in all) while a file is parsed, for a progress bar.
Progress = Callable[[int, int, int], None]
PROGRESS_EVERY = 2048

# Header spellings seen in exports, after `_header_key` (lower case, no accents, "_" separators).
_ALIASES = {
    "name": "name",
    "nom": "name",
    "nom_client": "name",
    "client": "name",
    "customer": "name",
    "raison_sociale": "name",
    "full_name": "name",
    "account": "account",
    "account_number": "account",
    "compte": "account",
    "numero_client": "account",
    "n_client": "account",
    "no_client": "account",
    "code_client": "account",
    "reference_client": "account",
    "address": "address",
    "adresse": "address",
    "notes": "notes",
    "note": "notes",
    "remarques": "notes",
    "commentaire": "notes",
    "commentaires": "notes",
    "comments": "notes",
    "vip": "vip",
    "queue_priority": "queue_priority",
    "priority": "queue_priority",
    "priorite": "queue_priority",
}
# phone, phone2, tel, telephone, telephone_2, tel_bureau, mobile, portable, gsm, fixe...
_PHONE_COLUMN = re.compile(r"^(phone|tel|telephone|mobile|portable|gsm|fixe)(_?[a-z0-9]*)$")
_MAIN_PHONE = frozenset(
    {"phone", "tel", "telephone", "numero", "numero_telephone", "numero_de_telephone", "num_tel", "n_tel"}
)
_PHONE_SPLIT = re.compile(r"[|\n]")
_NON_DIGITS = re.compile(r"\D")
_YES = frozenset({"oui", "o", "yes", "y", "1", "true", "vrai", "x"})
_NO = frozenset({"non", "n", "no", "0", "false", "faux"})


class ImportFileError(Exception):
    """The file as a whole cannot be imported (unreadable, not CSV, required columns missing)."""


@dataclass(frozen=True, slots=True)
class CsvRow:
    line: int
    name: str
    phones: tuple[Phone, ...]
    account: str | None
    address: str | None
    notes: str | None
    # None: the cell is empty or the column absent, so an update leaves the stored value alone.
    vip: bool | None
    queue_priority: int | None
    cells: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Rejected:
    line: int
    reason: str
    # The row as read, in the file's column order, for the errors file.
    cells: tuple[str, ...]


@dataclass
class CustomerCsv:
    encoding: str
    delimiter: str
    columns: list[str]
    ignored_columns: list[str]
    rows: list[CsvRow] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


class _RowError(Exception):
    pass


@dataclass(frozen=True)
class _Layout:
    """Which CSV column feeds which field; phone columns keep their label."""

    single: dict[str, int]
    phones: list[tuple[int, str | None]]
    ignored: list[str]


def read_customers_csv(path: str | Path, region: str, progress: Progress | None = None) -> CustomerCsv:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ImportFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ImportFileError(f"{path} is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB; split it")
    return parse_customers_csv(data, region, progress)


def parse_customers_csv(data: bytes, region: str, progress: Progress | None = None) -> CustomerCsv:
    """`progress(rows, characters read, characters in all)` is told every PROGRESS_EVERY rows."""
    text, encoding = decode(data)
    lines = io.StringIO(text, newline="")
    delimiter, skipped = _delimiter(lines)
    reader = csv.reader(lines, delimiter=delimiter)
    header_line, header = _header(reader)
    layout = _layout(header)
    parsed = CustomerCsv(encoding, delimiter, header, layout.ignored)
    seen: dict[tuple[str, ...], int] = {}
    for count, (line, cells) in enumerate(_records(reader, header_line, skipped), 1):
        if progress is not None and count % PROGRESS_EVERY == 0:
            progress(count, lines.tell(), len(text))
        if not any(c.strip() for c in cells):
            continue  # spreadsheets export trailing empty rows as ";;;;"
        try:
            row = _row(line, cells, header, layout, region)
            _check_duplicate(row, seen)
        except _RowError as exc:
            parsed.rejected.append(Rejected(line, str(exc), tuple(cells)))
            continue
        parsed.rows.append(row)
    return parsed


def decode(data: bytes) -> tuple[str, str]:
    """Text and the encoding it was read with. Windows-1252 is tried before Latin-1: it is what
    Excel writes on a French Windows, and it equals Latin-1 for every accented letter."""
    if data.startswith((b"PK\x03\x04", b"\xd0\xcf\x11\xe0")):
        raise ImportFileError("this is an Excel workbook, not CSV: save it as 'CSV UTF-8' first")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return _decode(data, "utf-16"), "utf-16"
    if data.startswith(codecs.BOM_UTF8):
        return _decode(data[len(codecs.BOM_UTF8) :], "utf-8"), "utf-8-sig"
    if b"\x00" in data:
        raise ImportFileError("the file contains NUL bytes: it is not a CSV text file")
    for encoding in ("utf-8", "cp1252"):
        try:
            return data.decode(encoding), encoding
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1"), "latin-1"


def _decode(data: bytes, encoding: str) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise ImportFileError(
            f"the file says {encoding} but is not ({exc.reason} at byte {exc.start})"
        ) from None


def _delimiter(lines: io.StringIO) -> tuple[str, int]:
    """`;` or `,` (or tab), judged on the header line, and how many lines were used up: Excel's
    `sep=;` first line says it outright and is not part of the table."""
    first = lines.readline()
    hint = re.fullmatch(r"sep=(.)\r?\n?", first)
    if hint:
        return hint.group(1), 1
    lines.seek(0)
    counts = {d: first.count(d) for d in (";", ",", "\t")}
    best = max(counts, key=lambda d: (counts[d], d == ";"))
    return (best if counts[best] else ","), 0


def _header(reader: Iterator[list[str]]) -> tuple[int, list[str]]:
    """The first non-empty record, and the reader's line count after it."""
    try:
        for cells in reader:
            if any(c.strip() for c in cells):
                return reader.line_num, [c.strip() for c in cells]  # type: ignore[attr-defined]
    except csv.Error as exc:
        raise ImportFileError(f"unreadable CSV header: {exc}") from None
    raise ImportFileError("the file is empty: expected a header row with at least 'name' and 'phone'")


def _records(reader: Iterator[list[str]], after: int, skipped: int) -> Iterator[tuple[int, list[str]]]:
    """(file line where the record starts, cells) for the records after reader line `after`; a
    quoted cell may span several lines, and `skipped` lines were read before the reader began."""
    line = after
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise ImportFileError(f"line {line + skipped + 1}: unreadable CSV ({exc})") from None
        yield line + skipped + 1, cells
        line = reader.line_num  # type: ignore[attr-defined]


def _header_key(text: str) -> str:
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "_", plain.casefold()).strip("_")


def _layout(header: list[str]) -> _Layout:
    single: dict[str, int] = {}
    phones: list[tuple[int, str | None]] = []
    ignored: list[str] = []
    for index, title in enumerate(header):
        key = _header_key(title)
        if key in _ALIASES:
            target = _ALIASES[key]
            if target in single:
                raise ImportFileError(
                    f"column '{target}' appears twice ('{header[single[target]]}', '{title}')"
                )
            single[target] = index
        elif key in _MAIN_PHONE or _PHONE_COLUMN.match(key):
            phones.append((index, None if key in _MAIN_PHONE else key))
        elif title:
            ignored.append(title)
    missing = [name for name, ok in (("name", "name" in single), ("phone", bool(phones))) if not ok]
    if missing:
        found = ", ".join(repr(h) for h in header) or "nothing"
        raise ImportFileError(f"missing required column(s): {', '.join(missing)}; the header has {found}")
    return _Layout(single, phones, ignored)


def _cell(cells: list[str], index: int | None) -> str:
    if index is None or index >= len(cells):
        return ""
    return cells[index].strip()


def _row(line: int, cells: list[str], header: list[str], layout: _Layout, region: str) -> CsvRow:
    if len(cells) > len(header) and any(c.strip() for c in cells[len(header) :]):
        raise _RowError(
            f"{len(cells)} cells but the header has {len(header)} columns "
            "(an unquoted delimiter inside a cell?)"
        )
    name = " ".join(_cell(cells, layout.single["name"]).split())
    if not name:
        raise _RowError("missing name")
    get = layout.single.get
    return CsvRow(
        line=line,
        name=_limited("name", name),
        phones=_phones(cells, layout, region),
        account=_optional("account", " ".join(_cell(cells, get("account")).split())),
        address=_optional("address", _cell(cells, get("address"))),
        notes=_optional("notes", _cell(cells, get("notes"))),
        vip=_vip(_cell(cells, get("vip"))),
        queue_priority=_priority(_cell(cells, get("queue_priority"))),
        cells=tuple(cells),
    )


def _limited(key: str, value: str) -> str:
    if len(value) > FIELD_LIMITS[key]:
        raise _RowError(f"{key} longer than {FIELD_LIMITS[key]} characters")
    return value


def _optional(key: str, value: str) -> str | None:
    return _limited(key, value) if value else None


def _vip(value: str) -> bool | None:
    if not value:
        return None
    word = value.casefold()
    if word in _YES:
        return True
    if word in _NO:
        return False
    raise _RowError(f"vip '{value}' is not one of oui/non, yes/no, 1/0, true/false")


def _priority(value: str) -> int | None:
    if not value:
        return None
    if not value.isdigit() or int(value) > MAX_PRIORITY:
        raise _RowError(f"queue_priority '{value}' is not a whole number from 0 to {MAX_PRIORITY}")
    return int(value)


def _phones(cells: list[str], layout: _Layout, region: str) -> tuple[Phone, ...]:
    phones: dict[str, Phone] = {}
    for index, label in layout.phones:
        for raw in split_numbers(_cell(cells, index)):
            e164 = valid_e164(raw, region)
            phones.setdefault(e164, Phone(e164, label))
    if not phones:
        raise _RowError("missing phone")
    return tuple(phones.values())


def split_numbers(cell: str) -> list[str]:
    """The numbers in one cell: separated by `|` or `/` — but `06/12/34/56/78` is one number
    written with slashes, which no piece of a real list of numbers is as short as."""
    numbers: list[str] = []
    for part in _PHONE_SPLIT.split(cell):
        pieces = [p.strip() for p in part.split("/")]
        if all(len(_NON_DIGITS.sub("", p)) >= 6 for p in pieces):
            numbers += pieces
        else:
            numbers.append(part.strip())
    return [n for n in numbers if n]


def valid_e164(raw: str, region: str) -> str:
    """`raw` in E.164, or _RowError saying why not. Stricter than caller-ID normalisation: a
    spreadsheet typo must be caught here, not discovered when the customer calls."""
    number = normalize(raw, region)
    if number.e164 is None:
        raise _RowError(f"invalid phone '{raw}': {_why_impossible(raw, region)}")
    parsed = phonenumbers.parse(number.e164, None)
    if not phonenumbers.is_valid_number(parsed):
        where = phonenumbers.region_code_for_country_code(parsed.country_code or 0)
        raise _RowError(f"invalid phone '{raw}': not a valid number in {where} ({number.e164})")
    return number.e164


_IMPOSSIBLE = {
    phonenumbers.ValidationResult.TOO_SHORT: "too short",
    phonenumbers.ValidationResult.INVALID_LENGTH: "wrong length",
    phonenumbers.ValidationResult.TOO_LONG: "too long",
    phonenumbers.ValidationResult.INVALID_COUNTRY_CODE: "unknown country code",
}


def _why_impossible(raw: str, region: str) -> str:
    cleaned = "+" + raw.strip()[2:] if raw.strip().startswith("00") else raw
    try:
        parsed = phonenumbers.parse(cleaned, region)
    except phonenumbers.NumberParseException:
        return "not a phone number"
    reason = phonenumbers.is_possible_number_with_reason(parsed)
    return _IMPOSSIBLE.get(reason, "not a phone number")


def _check_duplicate(row: CsvRow, seen: dict[tuple[str, ...], int]) -> None:
    """The same customer twice in one file is a mistake to show, not to merge silently."""
    keys: list[tuple[str, ...]] = [("account", row.account)] if row.account else []
    keys += [("name and phone", row.name, p.e164) for p in row.phones]
    for key in keys:
        first = seen.get(key)
        if first is not None:
            raise _RowError(f"duplicate of line {first} (same {key[0]} {' '.join(key[1:])})")
    for key in keys:
        seen[key] = row.line
