"""What people read and type at the command line: durations, instants, tables, dates.

Machines get JSON (`--json`); these helpers are for the default, human output. Instants a person
types are read in the machine's zone ($TZ, else /etc/localtime), the way `cti stats` reads
them: `today`, `yesterday`, `tomorrow`, a bare date (its midnight) or an ISO-8601 date-time.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAY_WORDS = ("today", "yesterday", "tomorrow")
_UNITS = (("d", 86400), ("h", 3600), ("min", 60), ("s", 1))


# ----------------------------------------------------------------------------------- zones
def default_timezone() -> str:
    """The machine's zone name ($TZ, else /etc/localtime's target), else UTC."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    localtime = Path("/etc/localtime")
    if localtime.is_symlink():
        target = str(localtime.resolve())
        if "zoneinfo/" in target:
            candidates.append(target.split("zoneinfo/", 1)[1])
    for name in candidates:
        if name:
            try:
                ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                continue
            return name
    return "UTC"


def local_zone() -> ZoneInfo:
    return ZoneInfo(default_timezone())


# ----------------------------------------------------------------------------------- reading
def is_day(text: str) -> bool:
    """A whole day (`today`, `2026-03-02`) rather than an instant."""
    bare = text.strip().lower()
    return bare in DAY_WORDS or (len(bare) == 10 and bare[4] == "-")


def parse_when(text: str, tz: ZoneInfo, today: date, name: str) -> datetime:
    """An instant a person typed: a day word or a bare date is that day's midnight in `tz`, an
    ISO-8601 date-time without a zone is in `tz`. ValueError names the option (`name`)."""
    value = text.strip()
    words = {"today": today, "yesterday": today - timedelta(days=1), "tomorrow": today + timedelta(days=1)}
    if value.lower() in words:
        day = words[value.lower()]
        return datetime(day.year, day.month, day.day, tzinfo=tz)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "T"))
    except ValueError:
        raise ValueError(
            f"{name} must be a date or date-time (ISO 8601, e.g. 2026-11-23 or 2026-11-23T08:00) "
            f"or today/yesterday/tomorrow, got {text!r}"
        ) from None
    return parsed.replace(tzinfo=tz) if parsed.tzinfo is None else parsed


def parse_until(text: str, tz: ZoneInfo, today: date, name: str) -> datetime:
    """An exclusive end: a day means through that day (`--to today` is the end of today)."""
    end = parse_when(text, tz, today, name)
    if not is_day(text):
        return end
    following = end.date() + timedelta(days=1)
    return datetime(following.year, following.month, following.day, tzinfo=tz)


def instant_option(
    text: str | None, name: str, *, until: bool = False, now: datetime | None = None
) -> datetime | None:
    """A command-line instant in the machine's zone, as an aware UTC datetime (None stays None)."""
    if text is None:
        return None
    tz = local_zone()
    today = (now or datetime.now(UTC)).astimezone(tz).date()
    at = (parse_until if until else parse_when)(text, tz, today, name)
    return at.astimezone(UTC)


# ----------------------------------------------------------------------------------- writing
def duration(span: float | timedelta) -> str:
    """`900` → "15 min", `5400` → "1 h 30 min", `172800` → "2 d": the two largest units, so a
    figure stays readable (a remainder smaller than those is dropped)."""
    seconds = round(span.total_seconds() if isinstance(span, timedelta) else span)
    if seconds == 0:
        return "0 s"
    sign, seconds = ("-", -seconds) if seconds < 0 else ("", seconds)
    parts: list[str] = []
    for unit, size in _UNITS:
        if seconds >= size:
            parts.append(f"{seconds // size} {unit}")
            seconds %= size
        elif parts:
            break  # "1 d 0 h 5 min" would read as a typo: stop at the first empty unit
        if len(parts) == 2:
            break
    return sign + " ".join(parts)


def when(at: datetime | None, tz: ZoneInfo | None = None, *, now: datetime | None = None) -> str:
    """`2026-03-03 09:00 CET (in 19 h 30 min)` in the machine's zone (or `tz`); "-" for None."""
    if at is None:
        return "-"
    local = at.astimezone(tz or local_zone())
    text = local.strftime("%Y-%m-%d %H:%M ") + (local.tzname() or "")
    if now is None:
        return text.rstrip()
    delta = (at - now).total_seconds()
    if abs(delta) < 60:
        return f"{text.rstrip()} (now)"
    relative = f"in {duration(delta)}" if delta > 0 else f"{duration(-delta)} ago"
    return f"{text.rstrip()} ({relative})"


def percent(ratio: float | None, digits: int = 1) -> str:
    return "-" if ratio is None else f"{ratio * 100:.{digits}f} %"


def count(value: int) -> str:
    return f"{value:,}"


def plural(n: int, word: str) -> str:
    """`1 contact`, `2,000 contacts`."""
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def table_lines(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> list[str]:
    """Columns padded to their widest cell; the `right` columns (numbers) aligned right. The
    last column is not padded, so a long value does not drag spaces behind it."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        out = [
            c.rjust(w) if i in right else (c if i == len(cells) - 1 else c.ljust(w))
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    return [line(header), *(line(r) for r in rows)]


def block(pairs: Sequence[tuple[str, str]]) -> str:
    """`key: value` lines with the values aligned; a value's later lines are indented to match."""
    width = max((len(k) for k, _ in pairs), default=0) + 2
    lines: list[str] = []
    for key, value in pairs:
        first, *rest = value.splitlines() or [""]
        lines.append(f"{key + ':':<{width}}{first}".rstrip())
        lines += [" " * width + more for more in rest]
    return "\n".join(lines)
