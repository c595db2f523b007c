"""Reading contact lists exported from spreadsheets, a row at a time, in constant memory.

UTF-8 with or without a BOM, else Windows-1252/Latin-1 (what Excel writes on a French or
Moroccan Windows); `;`, `,` or tab delimited (Excel's `sep=;` first line understood). A `phone`
column is required (French and English spellings accepted); `timezone`, `country`,
`subdivision`, `consent` and `priority` are read when present; every other column is kept as a
contact field for the agent's screen.

Numbers are normalised to E.164 and validated: a fast path checks the national and
international spellings of the region against phonenumbers' own metadata patterns (what
`is_valid_number` does, without building objects), and anything it does not recognise goes
through phonenumbers itself, which has the last word.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

import phonenumbers

from cti.dialer.timezones import valid_zone

_CHUNK = 1 << 20
_PHONE = ("phone", "telephone", "tel", "numero", "numero_telephone", "num_tel", "mobile", "portable", "gsm")
_KNOWN = {
    "timezone": "timezone",
    "fuseau": "timezone",
    "fuseau_horaire": "timezone",
    "tz": "timezone",
    "country": "country",
    "pays": "country",
    "subdivision": "subdivision",
    "departement": "subdivision",
    "consent": "consent",
    "consentement": "consent",
    "priority": "priority",
    "priorite": "priority",
}
_YES = frozenset({"oui", "o", "yes", "y", "1", "true", "vrai", "x"})
_NO = frozenset({"", "non", "n", "no", "0", "false", "faux"})
_SEPARATORS = str.maketrans("", "", " .-()/\u00a0\t")
MAX_FIELD = 4000


class ImportFileError(Exception):
    """The file as a whole cannot be imported (unreadable, not CSV, no phone column)."""


class RowError(Exception):
    """One row is rejected; the message is the reason shown to the campaign manager."""


@dataclass(frozen=True, slots=True)
class Layout:
    encoding: str
    delimiter: str
    header: tuple[str, ...]
    phone: int
    known: dict[str, int]  # timezone/country/subdivision/consent/priority -> column
    extra: tuple[tuple[int, str], ...]  # other columns: (index, header as written)
    extra_keys: tuple[tuple[int, str], ...] = ()  # the same, names already as JSON strings

    @property
    def width(self) -> int:
        return len(self.header)

    @property
    def country(self) -> int | None:
        return self.known.get("country")

    @property
    def timezone(self) -> int | None:
        return self.known.get("timezone")

    @property
    def subdivision(self) -> int | None:
        return self.known.get("subdivision")

    @property
    def consent(self) -> int | None:
        return self.known.get("consent")

    @property
    def priority(self) -> int | None:
        return self.known.get("priority")


# ----------------------------------------------------------------------------------- the file
def sniff_encoding(path: Path) -> str:
    """utf-8-sig / utf-8 when the whole file decodes as UTF-8, else cp1252 (or latin-1 for the
    five bytes cp1252 leaves undefined). Reads the file once, a chunk at a time."""
    with open(path, "rb") as handle:
        head = handle.read(4)
        if head.startswith((b"PK\x03\x04", b"\xd0\xcf\x11\xe0")):
            raise ImportFileError("this is an Excel workbook, not CSV: save it as 'CSV UTF-8' first")
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            raise ImportFileError("UTF-16 files are not supported: save it as 'CSV UTF-8'")
        bom = head.startswith(codecs.BOM_UTF8)
        handle.seek(0)
        decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            while chunk := handle.read(_CHUNK):
                if b"\x00" in chunk:
                    raise ImportFileError("the file contains NUL bytes: it is not a CSV text file")
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return _single_byte(path)
    return "utf-8-sig" if bom else "utf-8"


def _single_byte(path: Path) -> str:
    undefined = {0x81, 0x8D, 0x8F, 0x90, 0x9D}
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            if undefined.intersection(chunk):
                return "latin-1"
    return "cp1252"


def open_rows(path: Path, encoding: str) -> tuple[IO[str], str, int]:
    """The open text file, its delimiter, and how many lines precede the header (`sep=`)."""
    handle = open(path, encoding=encoding, newline="")  # noqa: SIM115 - the caller closes it
    first = handle.readline()
    hint = re.fullmatch(r"sep=(.)\r?\n?", first)
    if hint:
        return handle, hint.group(1), 1
    handle.seek(0)
    counts = {d: first.count(d) for d in (";", ",", "\t")}
    best = max(counts, key=lambda d: (counts[d], d == ";"))
    return handle, (best if counts[best] else ","), 0


def header_key(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text.strip().lower())
    plain = "".join(c for c in folded if not unicodedata.combining(c))
    return re.sub(r"[^a-z0-9]+", "_", plain).strip("_")


def layout_of(header: list[str], encoding: str, delimiter: str) -> Layout:
    keys = [header_key(h) for h in header]
    phone = next((i for key in _PHONE for i, k in enumerate(keys) if k == key), None)
    if phone is None:
        raise ImportFileError(f"no phone column (expected one of: {', '.join(_PHONE)}); columns: {header}")
    known: dict[str, int] = {}
    extra: list[tuple[int, str]] = []
    for i, key in enumerate(keys):
        if i == phone:
            continue
        name = _KNOWN.get(key)
        if name is not None and name not in known:
            known[name] = i
        elif header[i].strip():
            extra.append((i, header[i].strip()))
    json_keys = tuple((i, _json_string(name)) for i, name in extra)
    stripped = tuple(h.strip() for h in header)
    return Layout(encoding, delimiter, stripped, phone, known, tuple(extra), json_keys)


def records(handle: IO[str], delimiter: str, skipped: int) -> Iterator[tuple[int, list[str]]]:
    """(line number of the record's first line, cells), header first. Blank rows are skipped."""
    reader = csv.reader(handle, delimiter=delimiter)
    previous = 0
    try:
        for cells in reader:
            start, previous = previous + 1, reader.line_num
            if "".join(cells).strip():
                yield start + skipped, cells
    except csv.Error as exc:
        raise ImportFileError(f"line {reader.line_num + skipped}: not valid CSV ({exc})") from None


# ----------------------------------------------------------------------------------- numbers
class NumberCheck:
    """Normalise and validate numbers for one default region; the same answers as phonenumbers
    (parse, is_valid_number, E.164), about ten times faster for the usual spellings."""

    def __init__(self, region: str) -> None:
        self.region = region.upper()
        self._fast = _FastPath.build(self.region)

    def e164(self, raw: str, region: str | None = None) -> str:
        text = raw.strip()
        if not text:
            raise RowError("no phone number")
        if region is None or region == self.region:
            found = self._fast.e164(text) if self._fast is not None else None
            if found is not None:
                return found
        return _slow(text, region or self.region)


def _slow(text: str, region: str) -> str:
    cleaned = text.replace("(0)", "")
    if cleaned.startswith("00"):
        cleaned = "+" + cleaned[2:]
    try:
        parsed = phonenumbers.parse(cleaned, region)
    except phonenumbers.NumberParseException:
        raise RowError(f"{text!r} is not a phone number") from None
    if not phonenumbers.is_valid_number(parsed):
        raise RowError(f"{text!r} is not a valid number (region {region})")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


_TYPES = ("fixed_line", "mobile", "toll_free", "premium_rate", "shared_cost", "personal_number", "voip",
          "pager", "uan", "voicemail")  # fmt: skip


@dataclass(frozen=True)
class _FastPath:
    code: str
    trunk: str
    valid: re.Pattern[str]

    @classmethod
    def build(cls, region: str) -> _FastPath | None:
        meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
        if meta is None or meta.country_code is None:
            return None
        trunk = meta.national_prefix_for_parsing or ""
        if not trunk.isdigit() or meta.national_prefix_transform_rule:
            return None  # a prefix rule more subtle than a digit string: phonenumbers decides
        code = str(meta.country_code)
        return cls(code, trunk, _valid_pattern(code))

    def e164(self, text: str) -> str | None:
        digits = text.translate(_SEPARATORS)
        if digits.startswith("+"):
            national = digits[1 + len(self.code) :] if digits[1:].startswith(self.code) else None
        elif digits.startswith("00"):
            national = digits[2 + len(self.code) :] if digits[2:].startswith(self.code) else None
        elif self.trunk and digits.startswith(self.trunk):
            national = digits[len(self.trunk) :]
        else:
            national = digits  # a national number written without its trunk prefix
        if national and national.isdigit() and national.isascii() and self.valid.fullmatch(national):
            return f"+{self.code}{national}"
        return None


@lru_cache(maxsize=32)
def _valid_pattern(code: str) -> re.Pattern[str]:
    """Every number type of every region sharing the country code (a number is valid when it is
    of some type in one of them)."""
    patterns: list[str] = []
    for region in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(int(code), ()):
        meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
        if meta is None:
            continue
        for kind in _TYPES:
            desc = getattr(meta, kind, None)
            if desc is not None and desc.national_number_pattern:
                patterns.append(desc.national_number_pattern)
    return re.compile("|".join(f"(?:{p})" for p in patterns) or "(?!)")


# ----------------------------------------------------------------------------------- rows
_json_string: Callable[[str], str] = json.encoder.encode_basestring


def checked_values(line: int, cells: list[str], layout: Layout, numbers: NumberCheck) -> tuple[Any, ...]:
    """What the bulk insert writes for a row, in `importer._COLUMNS` order (the fields as JSON
    text), or RowError: the million-row path builds no objects."""
    if len(cells) < layout.width:
        cells += [""] * (layout.width - len(cells))
    known = layout.known
    country = _country(cells[known["country"]]) if "country" in known else None
    e164 = numbers.e164(cells[layout.phone], country)
    zone = cells[known["timezone"]].strip() or None if "timezone" in known else None
    if zone is not None and _known_zone(zone) is None:
        raise RowError(f"unknown time zone {zone!r} (e.g. Europe/Paris, Africa/Casablanca)")
    subdivision = cells[known["subdivision"]].strip() or None if "subdivision" in known else None
    consent = _consent(cells[known["consent"]]) if "consent" in known else False
    priority = _priority(cells[known["priority"]].strip()) if "priority" in known else 0
    # The fields' JSON object, written by hand: json.dumps costs more than the rest of the row.
    fields = ",".join(
        [
            f"{key}:{_json_string(value[:MAX_FIELD])}"
            for i, key in layout.extra_keys
            if (value := cells[i].strip())
        ]
    )
    raw = cells[layout.phone].strip()
    return (e164, raw, "{" + fields + "}", zone, country, subdivision, consent, priority, line)


@lru_cache(maxsize=1024)
def _known_zone(name: str) -> str | None:
    return valid_zone(name)


def _country(text: str) -> str | None:
    if not text:
        return None
    code = text.strip().upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise RowError(f"unknown country {text!r}: use a two-letter code such as FR or MA")
    return code


def _consent(text: str) -> bool:
    key = text.strip().lower()
    if key in _YES:
        return True
    if key in _NO:
        return False
    raise RowError(f"consent {text!r}: use oui/non (yes/no, 1/0)")


def _priority(text: str) -> int:
    if not text:
        return 0
    try:
        return int(text)
    except ValueError:
        raise RowError(f"priority {text!r} is not a whole number") from None
