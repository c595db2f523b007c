"""Calling-hours rule sets: the built-in ones (fr, ma, us, ca) and custom ones read from TOML.

A rule set is data: weekly windows in the callee's local time, public holidays, caps on calls over
a rolling period, a cool-down after a refusal, a redial lock after an abandoned call, and
stricter rules for some area codes (US states). `hours.decide` applies it. Sources are cited in
docs/dialer.md ("Calling hours").
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, replace
from datetime import time, timedelta
from pathlib import Path
from typing import Any, Literal

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WEEKDAYS = frozenset(range(5))
WEEKEND = frozenset({5, 6})
EVERY_DAY = frozenset(range(7))
END_OF_DAY = time(23, 59, 59, 999999)
# "Per consumer" counts every campaign run for the same principal (the professional on whose
# behalf we call); "campaign" counts this campaign only ("on the same subject").
CapScope = Literal["principal", "campaign"]


class RuleSetError(ValueError):
    """A rule set that cannot be used (unknown name, bad TOML, bad value)."""


@dataclass(frozen=True, slots=True)
class Window:
    days: frozenset[int]  # 0 = Monday
    start: time
    end: time  # exclusive; END_OF_DAY stands for 24:00

    def label(self) -> str:
        end = "24:00" if self.end == END_OF_DAY else self.end.strftime("%H:%M")
        return f"{_days_label(self.days)} {self.start.strftime('%H:%M')}–{end}"


@dataclass(frozen=True, slots=True)
class Cap:
    max_calls: int
    period: timedelta
    scope: CapScope = "principal"

    def label(self) -> str:
        return f"at most {self.max_calls} calls or attempts per {_span(self.period)}"


@dataclass(frozen=True, slots=True)
class AreaRule:
    """Stricter rules for numbers whose E.164 starts with one of `prefixes` (a US state by area
    code). Its windows replace the rule set's; its caps add to them."""

    name: str
    prefixes: tuple[str, ...]
    windows: tuple[Window, ...] | None = None
    caps: tuple[Cap, ...] = ()

    def matches(self, e164: str) -> bool:
        return e164.startswith(self.prefixes)


@dataclass(frozen=True, slots=True)
class RuleSet:
    name: str
    windows: tuple[Window, ...]
    # Public holidays: none, or a `holidays` country (whose subdivision comes from the number's
    # overseas region or the contact, else `holiday_subdivision`).
    holiday_country: str | None = None
    holiday_subdivision: str | None = None
    caps: tuple[Cap, ...] = ()
    refusal_cooldown: timedelta | None = None
    abandon_lock: timedelta | None = timedelta(hours=72)
    # D.223-9: the consumer's prior express consent lifts the days and hours (not the caps).
    consent_waives_hours: bool = False
    areas: tuple[AreaRule, ...] = ()
    source: str = ""

    def area_for(self, e164: str) -> AreaRule | None:
        return next((a for a in self.areas if a.matches(e164)), None)


def _days_label(days: frozenset[int]) -> str:
    if days == WEEKDAYS:
        return "Mon–Fri"
    if days == WEEKEND:
        return "Sat–Sun"
    if days == EVERY_DAY:
        return "every day"
    return ",".join(DAYS[d].capitalize() for d in sorted(days))


def _span(period: timedelta) -> str:
    if period % timedelta(days=1) == timedelta(0):
        return f"{period.days} days"
    return f"{period / timedelta(hours=1):g} h"


# ----------------------------------------------------------------------------------- TOML
def load_ruleset(name_or_file: str) -> RuleSet:
    """A built-in rule set by name, or a custom one from a TOML file."""
    if name_or_file in BUILTIN:
        return BUILTIN[name_or_file]
    path = Path(name_or_file)
    if not path.is_file():
        known = ", ".join(sorted(BUILTIN))
        raise RuleSetError(f"no rule set {name_or_file!r}: use one of {known} or a TOML file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RuleSetError(f"{path}: {exc}") from None
    return ruleset_from_toml(data, default_name=path.stem)


def ruleset_from_toml(data: dict[str, Any], default_name: str = "custom") -> RuleSet:
    """Build a rule set from parsed TOML (format in docs/dialer.md); `extends` starts from a
    built-in one and replaces what the file gives."""
    base_name = data.get("extends")
    if base_name is not None and base_name not in BUILTIN:
        raise RuleSetError(f"extends: no built-in rule set {base_name!r}")
    base = BUILTIN[base_name] if base_name else RuleSet(default_name, ())
    changes: dict[str, Any] = {"name": str(data.get("name", default_name)), "source": "custom"}
    if "window" in data:
        changes["windows"] = tuple(_window(w) for w in _tables(data, "window"))
    if "holidays" in data:
        holidays = data["holidays"]
        if not isinstance(holidays, dict):
            raise RuleSetError("[holidays] must be a table")
        changes["holiday_country"] = holidays.get("country")
        changes["holiday_subdivision"] = holidays.get("subdivision")
    if "cap" in data:
        changes["caps"] = tuple(_cap(c) for c in _tables(data, "cap"))
    for key in ("refusal_cooldown", "abandon_lock"):
        if key in data:
            changes[key] = parse_duration(data[key]) if data[key] else None
    if "consent_waives_hours" in data:
        changes["consent_waives_hours"] = bool(data["consent_waives_hours"])
    if "area" in data:
        changes["areas"] = tuple(_area(a) for a in _tables(data, "area"))
    ruleset = replace(base, **changes)
    if not ruleset.windows:
        raise RuleSetError("a rule set needs at least one [[window]]")
    return ruleset


def _tables(data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    items = data[key]
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise RuleSetError(f"{key} must be an array of tables ([[{key}]])")
    return items


def _window(item: dict[str, Any]) -> Window:
    days = item.get("days", list(DAYS))
    if isinstance(days, str):
        days = [days]
    try:
        numbers = frozenset(_day(d) for d in days)
        window = Window(numbers, _time(str(item["start"])), _time(str(item["end"])))
    except KeyError as exc:
        raise RuleSetError(f"[[window]] needs {exc.args[0]!r}") from None
    if window.end <= window.start:
        raise RuleSetError(f"window {window.label()}: the end must come after the start (split at 24:00)")
    return window


def _day(text: str) -> int:
    key = str(text).strip().lower()[:3]
    if key not in DAYS:
        raise RuleSetError(f"unknown day {text!r}: use mon, tue, wed, thu, fri, sat, sun")
    return DAYS.index(key)


def _time(text: str) -> time:
    if text in ("24:00", "24:00:00"):
        return END_OF_DAY
    try:
        return time.fromisoformat(text)
    except ValueError:
        raise RuleSetError(f"bad time {text!r}: use HH:MM") from None


def _cap(item: dict[str, Any]) -> Cap:
    scope = item.get("scope", "principal")
    if scope not in ("principal", "campaign"):
        raise RuleSetError(f"cap scope {scope!r}: use principal or campaign")
    try:
        return Cap(int(item["max"]), parse_duration(item["period"]), scope)
    except KeyError as exc:
        raise RuleSetError(f"[[cap]] needs {exc.args[0]!r}") from None


def _area(item: dict[str, Any]) -> AreaRule:
    prefixes = item.get("prefixes")
    if not isinstance(prefixes, list) or not prefixes:
        raise RuleSetError('[[area]] needs prefixes = ["+1305", ...]')
    windows = tuple(_window(w) for w in item["window"]) if "window" in item else None
    caps = tuple(_cap(c) for c in item.get("cap", []))
    return AreaRule(str(item.get("name", prefixes[0])), tuple(str(p) for p in prefixes), windows, caps)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)?\s*$")
_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: object) -> timedelta:
    """`90` (seconds), `"10m"`, `"2h"`, `"30d"`, `"1w"`."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=float(value))
    match = _DURATION.match(str(value))
    if match is None:
        raise RuleSetError(f"bad duration {value!r}: use e.g. 90, '10m', '2h', '30d'")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2) or "s"])


# ----------------------------------------------------------------------------------- built-in
def _w(days: frozenset[int], start: str, end: str) -> Window:
    return Window(days, _time(start), _time(end))


# Area codes by state, for the US states whose "mini-TCPA" laws are stricter than the TCPA.
FLORIDA = ("239", "305", "321", "324", "352", "386", "407", "448", "561", "645", "656", "689", "727",
           "728", "754", "772", "786", "813", "850", "863", "904", "941", "954")  # fmt: skip
OKLAHOMA = ("405", "539", "572", "580", "918")
MARYLAND = ("227", "240", "301", "410", "443", "667")


def _us_state(name: str, area_codes: tuple[str, ...]) -> AreaRule:
    return AreaRule(
        name,
        tuple(f"+1{code}" for code in area_codes),
        (_w(EVERY_DAY, "08:00", "20:00"),),
        (Cap(3, timedelta(hours=24), "campaign"),),
    )


BUILTIN: dict[str, RuleSet] = {
    "fr": RuleSet(
        "fr",
        (_w(WEEKDAYS, "10:00", "13:00"), _w(WEEKDAYS, "14:00", "20:00")),
        holiday_country="FR",
        caps=(Cap(4, timedelta(days=30), "principal"),),
        refusal_cooldown=timedelta(days=60),
        consent_waives_hours=True,
        source="Code de la consommation, art. D.223-9 (décret n° 2022-1313), since 2023-03-01",
    ),
    "ma": RuleSet(
        "ma",
        (_w(EVERY_DAY, "08:00", "19:30"),),
        source="Moroccan call-centre practice: no outbound calling before 08:00 or after 19:30",
    ),
    "us": RuleSet(
        "us",
        (_w(EVERY_DAY, "08:00", "21:00"),),
        areas=(_us_state("FL", FLORIDA), _us_state("OK", OKLAHOMA), _us_state("MD", MARYLAND)),
        source="TCPA, 47 CFR 64.1200(c)(1); Fla. Stat. 501.616; Okla. Stat. tit. 15 §775C.4; "
        "Md. Com. Law §14-4503",
    ),
    "ca": RuleSet(
        "ca",
        (_w(WEEKDAYS, "09:00", "21:30"), _w(WEEKEND, "10:00", "18:00")),
        source="CRTC Unsolicited Telecommunications Rules, Part III (Telemarketing Rules)",
    ),
}
