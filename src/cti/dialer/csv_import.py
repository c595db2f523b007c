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

from cti.dialer.jurisdiction import SUBSCRIBER_TYPES, CampaignRules
from cti.dialer.territories import (
    FRENCH_TERRITORIES,
    Place,
    PlaceConflict,
    address_place,
    combine,
    country_code,
    department_place,
    number_place_conflict,
    overseas_hint,
    short_name,
)
from cti.dialer.territories import country_place as _country_place
from cti.dialer.timezones import valid_zone
from cti.directory.numbers import FRENCH_PLAN_REGIONS, OVERSEAS_LEADS, overseas_e164, regions_of

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
# Columns that say where the contact lives (kept as contact fields too): read for the place check.
_PLACE_KEYS = frozenset({"cp", "code_postal", "codepostal", "postal_code", "postcode", "zip", "zip_code",
                         "zipcode", "region", "territoire", "territory"})  # fmt: skip
_PLACE_PREFIXES = ("adresse", "address")
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
    places: tuple[int, ...] = ()  # address-like columns: postal codes, territory names

    has_place: bool = False  # any column that says where the contact is

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


def bytes_read(handle: IO[str]) -> int:
    """Bytes of the file read so far, for a progress bar (a text file's own tell() is barred
    while it is iterated; its buffer's runs a few kilobytes ahead, which a bar does not mind)."""
    buffer = getattr(handle, "buffer", None)
    return int(buffer.tell()) if buffer is not None else 0


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
    places: list[int] = []
    for i, key in enumerate(keys):
        if i == phone:
            continue
        name = _KNOWN.get(key)
        if name is not None and name not in known:
            known[name] = i
        elif header[i].strip():
            extra.append((i, header[i].strip()))
            if key in _PLACE_KEYS or key.startswith(_PLACE_PREFIXES):
                places.append(i)
    json_keys = tuple((i, _json_string(name)) for i, name in extra)
    stripped = tuple(h.strip() for h in header)
    has_place = bool(places) or "country" in known or "subdivision" in known
    extras = tuple(extra)
    return Layout(encoding, delimiter, stripped, phone, known, extras, json_keys, tuple(places), has_place)


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
    (parse, is_valid_number, E.164), about ten times faster for the usual spellings.

    National numbers of any French territory are read in the French plan: 0692 16 97 86 is
    +262 692 16 97 86 (La Réunion), not the +33 number phonenumbers makes of it. With a
    campaign's `rules`, special numbers (premium rate, shared cost...) and numbers of countries
    the campaign does not call are refused (RowError with the reason)."""

    def __init__(self, region: str, rules: CampaignRules | None = None) -> None:
        self.region = region.upper()
        self.plan = _plan(self.region)
        self.rules = rules
        self._fast = _FastPath.build(self.plan, rules)
        self._in_scope = _scope_prefixes(rules)
        self.note: str | None = None  # about the last number read
        self._nanp: dict[str, str | None] = {}

    def e164(self, raw: str, region: str | None = None) -> str:
        """The number in E.164; `note` then says when it was read otherwise than written (a
        wrong +33), else it is None."""
        self.note = None
        text = raw.strip()
        if not text:
            raise RowError("no phone number")
        plan = self.plan if region is None else _plan(region)
        if plan == self.plan and self._fast is not None:
            found = self._fast.e164(text)
            if found is not None:
                if self._in_scope is not None and not found.startswith(self._in_scope):
                    self._check_country(found, None)
                return found
        parsed, self.note = _parse(text, plan)
        e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
        if self.rules is not None:
            refusal = self.rules.special_refusal(_TYPE_NAMES.get(phonenumbers.number_type(parsed), "unknown"))
            if refusal is not None:
                raise RowError(f"{text!r} is {refusal}")
            self._check_country(e164, parsed)
        return e164

    def _check_country(self, e164: str, parsed: phonenumbers.PhoneNumber | None) -> None:
        if self.rules is None:
            return
        if e164.startswith("+1"):  # one region per NANP area code: asked once per area code
            region = self._nanp.get(e164[:5])
            if region is None:
                region = self._nanp[e164[:5]] = phonenumbers.region_code_for_number(
                    parsed or phonenumbers.parse(e164)
                )
        else:
            regions = regions_of(parsed or phonenumbers.parse(e164))
            region = regions[0] if regions else None
        refusal = self.rules.country_refusal(region)
        if refusal is not None:
            raise RowError(refusal)


def _plan(region: str) -> str:
    """The numbering plan national numbers of `region` are read in: France's is one plan."""
    region = region.upper()
    return "FR" if region in FRENCH_PLAN_REGIONS else region


def _scope_prefixes(rules: CampaignRules | None) -> tuple[str, ...] | None:
    """'+CC' of the country codes whose every region the campaign calls (the others are checked
    number by number); None: every country."""
    if rules is None:
        return None
    allowed = rules.allowed_regions()
    if allowed is None and not rules.auto:
        return None
    if rules.auto and rules.fallback is None:
        from cti.dialer.jurisdiction import COUNTRY_RULES

        allowed = frozenset(COUNTRY_RULES) if allowed is None else allowed & frozenset(COUNTRY_RULES)
    if allowed is None:
        return None
    return tuple(
        f"+{code}"
        for code, regions in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.items()
        if regions and all(r in allowed for r in regions)
    )


def _parse(text: str, region: str) -> tuple[phonenumbers.PhoneNumber, str | None]:
    """phonenumbers' reading of `text`, French plan included, or RowError saying why not; and a
    note when the number was read otherwise than written."""
    cleaned = text.replace("(0)", "")
    if cleaned.startswith("00"):
        cleaned = "+" + cleaned[2:]
    try:
        parsed = phonenumbers.parse(cleaned, region)
    except phonenumbers.NumberParseException:
        raise RowError(f"{text!r} is not a phone number") from None
    note = None
    significant = phonenumbers.national_significant_number(parsed)
    if parsed.country_code == 33:
        overseas = overseas_e164(significant)
        if overseas is not None:
            parsed = phonenumbers.parse(overseas)
            if cleaned.lstrip().startswith("+"):
                where = short_name(phonenumbers.region_code_for_number(parsed))
                note = f"{text!r} read as {overseas}, a {where} number: +33 is metropolitan France only"
    if not phonenumbers.is_valid_number(parsed):
        hint = overseas_hint(significant) if parsed.country_code == 33 else None
        extra = f": {hint}, but no operator holds this block" if hint else ""
        raise RowError(f"{text!r} is not a valid number (region {region}){extra}")
    return parsed, note


def _slow(text: str, region: str) -> str:
    parsed, _ = _parse(text, _plan(region))
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


_TYPES = ("fixed_line", "mobile", "toll_free", "premium_rate", "shared_cost", "personal_number", "voip",
          "pager", "uan", "voicemail")  # fmt: skip
_TYPE_NAMES = {
    getattr(phonenumbers.PhoneNumberType, name.upper()): name for name in (*_TYPES, "fixed_line_or_mobile")
}


@dataclass(frozen=True)
class _FastPath:
    code: str
    trunk: str
    valid: re.Pattern[str]
    # Types a campaign refuses come first in `valid`, marked by an empty `special` group: when
    # it matches, the slow path says why (phonenumbers ranks them before fixed and mobile too).
    refuses: bool
    overseas: bool  # the French plan: overseas blocks first

    @classmethod
    def build(cls, region: str, rules: CampaignRules | None = None) -> _FastPath | None:
        meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
        if meta is None or meta.country_code is None:
            return None
        trunk = meta.national_prefix_for_parsing or ""
        if not trunk.isdigit() or meta.national_prefix_transform_rule:
            return None  # a prefix rule more subtle than a digit string: phonenumbers decides
        code = str(meta.country_code)
        if rules is None:
            return cls(code, trunk, _valid_pattern(code), False, region == "FR")
        callable_ = tuple(t for t in _TYPES if t in SUBSCRIBER_TYPES or t in rules.allow_numbers)
        refused = tuple(t for t in _TYPES if t not in callable_)
        if not refused:
            return cls(code, trunk, _valid_pattern(code, callable_), False, region == "FR")
        special, valid = _valid_pattern(code, refused).pattern, _valid_pattern(code, callable_).pattern
        both = re.compile(f"(?:{special})(?P<special>)|(?:{valid})")
        return cls(code, trunk, both, True, region == "FR")

    def e164(self, text: str) -> str | None:
        digits = text.translate(_SEPARATORS)
        international = True
        if digits.startswith("+"):
            national = digits[1 + len(self.code) :] if digits[1:].startswith(self.code) else None
        elif digits.startswith("00"):
            national = digits[2 + len(self.code) :] if digits[2:].startswith(self.code) else None
        else:
            international = False
            # A national number, with its trunk prefix or without it.
            national = digits[len(self.trunk) :] if self.trunk and digits.startswith(self.trunk) else digits
        if not (national and national.isdigit() and national.isascii()):
            return None
        if self.overseas and national[:2] in OVERSEAS_LEADS:
            if international:
                return None  # +33 6 92…: the slow path reads it and says so
            found = overseas_e164(national)
            if found is not None:
                return found
        match = self.valid.fullmatch(national)
        if match is None or (self.refuses and match.group("special") is not None):
            return None
        return f"+{self.code}{national}"


@lru_cache(maxsize=64)
def _valid_pattern(code: str, kinds: tuple[str, ...] = _TYPES) -> re.Pattern[str]:
    """Every number type in `kinds` of every region sharing the country code (a number is valid
    when it is of some type in one of them)."""
    patterns: list[str] = []
    for region in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(int(code), ()):
        meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
        if meta is None:
            continue
        for kind in kinds:
            desc = getattr(meta, kind, None)
            if desc is not None and desc.national_number_pattern:
                patterns.append(desc.national_number_pattern)
    return re.compile("|".join(f"(?:{p})" for p in patterns) or "(?!)")


# ----------------------------------------------------------------------------------- rows
_json_string: Callable[[str], str] = json.encoder.encode_basestring


def checked_values(
    line: int,
    cells: list[str],
    layout: Layout,
    numbers: NumberCheck,
    notes: list[tuple[int, str]] | None = None,
) -> tuple[Any, ...]:
    """What the bulk insert writes for a row, in `importer._COLUMNS` order (the fields as JSON
    text), or RowError: the million-row path builds no objects. A number read otherwise than
    written is noted in `notes` (line, what was done)."""
    if len(cells) < layout.width:
        cells += [""] * (layout.width - len(cells))
    known = layout.known
    country = _country(cells[known["country"]]) if "country" in known else None
    e164 = numbers.e164(cells[layout.phone], country)
    if numbers.note is not None and notes is not None:
        notes.append((line, numbers.note))
    if layout.has_place:
        country = _placed(e164, cells, layout) or country
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
    """The region a country cell names: an ISO code or a name ('La Réunion', 'Maroc', 'France')."""
    if not text.strip():
        return None
    code = _country_code(text)
    if code is None:
        raise RowError(f"unknown country {text!r}: use a two-letter code such as FR or MA")
    return code


@lru_cache(maxsize=1024)
def _country_code(text: str) -> str | None:
    code = country_code(text)
    if code == "FR*":
        return "FR"
    return code if code in phonenumbers.SUPPORTED_REGIONS else None


def _placed(e164: str, cells: list[str], layout: Layout) -> str | None:
    """Check the number against where the row says the contact is (address, department, country);
    RowError on a conflict. The territory the row names when the number alone cannot tell it (a
    Saint-Martin mobile is in Guadeloupe's block too), else None.

    Postal and department codes are French ones only for a number of the French plan or a row
    whose country is France: 20250 is Casablanca in Morocco, 97401 Eugene in Oregon."""
    regions = _number_regions(e164)
    known = layout.known
    places: list[Place] = []
    country = _cached_country_place(cells[known["country"]].strip()) if "country" in known else None
    if country is not None:
        places.append(country)
    french = regions[0] in FRENCH_TERRITORIES if len(regions) == 1 else _all_french(regions)
    codes = french or (country is not None and country.regions <= FRENCH_TERRITORIES.keys())
    if codes and "subdivision" in known and (found := _department(cells[known["subdivision"]].strip())):
        places.append(found)
    places += [p for index in layout.places if (p := _address(cells[index], codes)) is not None]
    if not places:
        return None
    clash, elsewhere, narrowed = _verdict(regions, tuple(places))
    if clash is not None:
        raise RowError(clash)
    if elsewhere is not None:
        raise RowError(number_place_conflict(e164, regions, elsewhere))
    return narrowed


@lru_cache(maxsize=4096)
def _verdict(
    regions: tuple[str, ...], places: tuple[Place, ...]
) -> tuple[str | None, Place | None, str | None]:
    """(the columns' own conflict, the place the number contradicts, the region the place picks
    among the number's): the same few answers for most rows of a file, so kept."""
    try:
        place = combine(list(places))
    except PlaceConflict as exc:
        return str(exc), None, None
    if place is None:
        return None, None, None
    if not set(regions) & place.regions:
        return None, place, None
    narrowed = [r for r in regions if r in place.regions]
    return None, None, narrowed[0] if len(regions) > 1 and len(narrowed) == 1 else None


@lru_cache(maxsize=65536)
def _address(text: str, codes: bool) -> Place | None:
    """What an address cell says (a postal code column repeats the same few values)."""
    return address_place(text, codes) if text else None


@lru_cache(maxsize=1024)
def _cached_country_place(text: str) -> Place | None:
    return _country_place(text) if text else None


@lru_cache(maxsize=1024)
def _department(text: str) -> Place | None:
    return department_place(text) if text else None


def _all_french(regions: tuple[str, ...]) -> bool:
    return bool(regions) and all(r in FRENCH_TERRITORIES for r in regions)


def _number_regions(e164: str) -> tuple[str, ...]:
    """The regions a valid E.164 number may be in (one for most country codes), as
    `directory.numbers.regions_of` says, without parsing the number."""
    for size in (2, 3, 4):
        regions = _CODE_REGIONS.get(e164[:size])
        if regions is None:
            continue
        if len(regions) == 1:
            return regions
        patterns = _region_patterns(e164[1:size])
        if patterns is None:
            return regions_of(phonenumbers.parse(e164))
        significant = e164[size:]
        return tuple(region for region, pattern in patterns if pattern.fullmatch(significant))
    return ()


_CODE_REGIONS = {f"+{code}": tuple(r) for code, r in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.items()}


@lru_cache(maxsize=64)
def _region_patterns(code: str) -> tuple[tuple[str, re.Pattern[str]], ...] | None:
    """Each region of a shared country code with the pattern of its valid numbers, in
    phonenumbers' order; None where phonenumbers decides by leading digits or the code is +1."""
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(int(code), ())
    out = []
    for region in regions:
        meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
        if meta is None or meta.leading_digits or len(regions) > 4:
            return None
        patterns = [d.national_number_pattern for k in _TYPES if (d := getattr(meta, k, None)) is not None]
        out.append((region, re.compile("|".join(f"(?:{p})" for p in patterns if p) or "(?!)")))
    return tuple(out)


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
