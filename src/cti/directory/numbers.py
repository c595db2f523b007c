"""Caller ID normalisation to E.164, with withheld numbers recognised explicitly."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import phonenumbers

# What Asterisk and carriers put in CallerIDNum when there is no usable number.
_WITHHELD = frozenset(
    {
        "",
        "anonymous",
        "unknown",
        "<unknown>",
        "private",
        "restricted",
        "withheld",
        "unavailable",
        "asterisk",
        "s",
    }
)
_DIGITS = re.compile(r"[^\d+]")

NumberKind = Literal["e164", "withheld", "invalid"]


@dataclass(frozen=True, slots=True)
class CallerNumber:
    raw: str
    e164: str | None
    kind: NumberKind

    @property
    def withheld(self) -> bool:
        return self.kind == "withheld"


@lru_cache(maxsize=65536)
def normalize(raw: str | None, region: str = "FR") -> CallerNumber:
    """`raw` as E.164 when it is a possible number, else say withheld or invalid. Never raises."""
    text = (raw or "").strip()
    if text.lower() in _WITHHELD:
        return CallerNumber(text, None, "withheld")
    cleaned = _DIGITS.sub("", text)
    if cleaned.startswith("00"):
        cleaned = "+" + cleaned[2:]
    if not cleaned.strip("+"):
        return CallerNumber(text, None, "withheld" if cleaned in ("", "+") else "invalid")
    try:
        parsed = phonenumbers.parse(cleaned, region.upper())
    except phonenumbers.NumberParseException:
        return CallerNumber(text, None, "invalid")
    if not phonenumbers.is_possible_number(parsed):
        return CallerNumber(text, None, "invalid")
    return CallerNumber(text, phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164), "e164")


def national_forms(e164: str) -> list[str]:
    """Other spellings a directory may hold for the same number (national, digits only)."""
    try:
        parsed = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return []
    national = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)
    digits = _DIGITS.sub("", national)
    return sorted({national, digits, "00" + e164.lstrip("+")})


def stored_forms(e164: str, region: str | None = None) -> list[str]:
    """Every spelling of `e164` a directory row may hold: E.164 first (what we write), then the
    international and national forms left by older imports and hand-typed rows.

    National spellings are ambiguous across countries (06 12 34 56 78 is a French and a Moroccan
    mobile), and old rows were typed in the directory's own region: with `region` given, a foreign
    number is only matched on its unambiguous spellings."""
    try:
        parsed = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return [e164]
    international = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    forms = {international, "00" + e164.lstrip("+")}
    if region is None or phonenumbers.region_code_for_number(parsed) == region.upper():
        forms.update(national_forms(e164))
    forms.discard(e164)
    return [e164, *sorted(forms)]


def display_form(e164: str | None, region: str = "FR") -> str | None:
    """How an agent in `region` reads the number: national for local numbers, international else."""
    if e164 is None:
        return None
    try:
        parsed = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return e164
    local = phonenumbers.region_code_for_number(parsed) == region.upper()
    style = phonenumbers.PhoneNumberFormat.NATIONAL if local else phonenumbers.PhoneNumberFormat.INTERNATIONAL
    return phonenumbers.format_number(parsed, style)


def national_digits(e164: str) -> str:
    """The national number as dialled inside its country, digits only ("0612345678")."""
    try:
        parsed = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return e164
    national = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)
    return _DIGITS.sub("", national)


# ----------------------------------------------------------------------------------- the French plan
# France has one national numbering plan for metropolitan France and the overseas territories
# (ARCEP): a number is written 0 + nine digits wherever it is dialled in France, but +33 is
# metropolitan France only; the overseas territories have their own country codes. Read as
# national numbers of region FR, phonenumbers turns 0692 16 97 86 into +33 692 16 97 86, which
# does not exist (its FR metadata even counts some overseas blocks, 0269 and 0596 among them, as
# metropolitan fixed lines). The overseas territories' own metadata says which blocks are theirs.
FRENCH_PLAN_REGIONS = ("FR", "GP", "BL", "MF", "MQ", "GF", "RE", "YT", "PM")
_OVERSEAS = ("RE", "YT", "GP", "BL", "MF", "MQ", "GF", "PM")
_SUBSCRIBER_TYPES = ("fixed_line", "mobile", "voip")
# The first two significant digits of every overseas subscriber block (0262/0263/0269 fixed,
# 0639/069x and 0709x mobiles, 0590/0594/0596 fixed, 0939x/0947x/0976x VoIP, 0508 and 0708 for
# Saint-Pierre-et-Miquelon): only numbers starting so are looked up (a test checks the list
# against phonenumbers' metadata).
OVERSEAS_LEADS = frozenset({"26", "50", "59", "63", "69", "70", "93", "94", "97"})
# Saint-Pierre-et-Miquelon's six-digit numbers are dialled 05 08 + the six digits from France.
_SPM_PREFIX = "508"


@lru_cache(maxsize=1)
def _overseas_blocks() -> tuple[tuple[str, re.Pattern[str]], ...]:
    """(country code, pattern of its subscriber numbers) for each overseas country code."""
    by_code: dict[str, list[str]] = {}
    for region in _OVERSEAS:
        meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
        if meta is None:
            continue
        for kind in _SUBSCRIBER_TYPES:
            desc = getattr(meta, kind, None)
            if desc is not None and desc.national_number_pattern:
                by_code.setdefault(str(meta.country_code), []).append(desc.national_number_pattern)
    return tuple((code, re.compile("|".join(f"(?:{p})" for p in pats))) for code, pats in by_code.items())


def overseas_e164(significant: str) -> str | None:
    """The E.164 number of an overseas territory's subscriber written in the French national plan,
    from its nine significant digits (what follows the trunk 0, or a wrong +33): 692169786 →
    +262692169786, 508412345 → +508412345; None when no overseas territory has that block.
    Numbers starting with 8 (0800, 0806, 0899...) are national service numbers, never overseas."""
    if len(significant) != 9 or significant[:2] not in OVERSEAS_LEADS:
        return None
    if significant.startswith(_SPM_PREFIX):
        six = significant[len(_SPM_PREFIX) :]
        spm = phonenumbers.PhoneMetadata.metadata_for_region("PM")
        if spm is not None and any(
            (desc := getattr(spm, kind, None)) is not None
            and desc.national_number_pattern
            and re.fullmatch(desc.national_number_pattern, six)
            for kind in _SUBSCRIBER_TYPES
        ):
            return f"+508{six}"
    for code, pattern in _overseas_blocks():
        if pattern.fullmatch(significant):
            return f"+{code}{significant}"
    return None


def regions_of(parsed: phonenumbers.PhoneNumber) -> tuple[str, ...]:
    """Every region whose metadata has this number (phonenumbers' own answer first): a Saint-Martin
    or Saint-Barthélemy mobile is in Guadeloupe's block too, and phonenumbers then says GP."""
    first = phonenumbers.region_code_for_number(parsed)
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(parsed.country_code or 0, ())
    if len(regions) > 4:
        return (first,) if first else ()  # +1: each area code is one region's (and 25 checks cost 40 µs)
    others = tuple(r for r in regions if r != first and phonenumbers.is_valid_number_for_region(parsed, r))
    return ((first,) if first else ()) + others
