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
