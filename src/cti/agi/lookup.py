"""`cti-agi lookup`: who is calling? Run by the inbound dialplan before the first menu.

    exten => s,n,AGI(cti-agi,lookup[,REGION[,NAME_POLICY]])

Reads the caller number from the AGI environment, normalises it exactly as the daemon does
(`cti.directory.numbers.normalize`), looks its owners up in the cti database and sets:

- `CTI_CUSTOMER_ID`  the customer's id (one owner only),
- `CALLERID(name)`   the customer's name, when the network gave none (NAME_POLICY `ifunknown`,
                     the default; `always` overwrites it, `never` leaves it alone),
- `CTI_VIP=1` and `QUEUE_PRIO` (the customer's `queue_priority`) for VIP customers: app_queue
                     reads QUEUE_PRIO as the caller's priority, so VIPs are answered first,
- `CTI_LOOKUP`       hit | miss | multiple | withheld | error, always, and last.

A call is never held up: any failure (no settings, database down, slow, schema missing, even a
bug here) ends in `CTI_LOOKUP=error`, one VERBOSE line and one stderr line, and exit status 0,
so the dialplan simply carries on. The database part has a hard deadline (CTI_AGI_TIMEOUT_MS,
default 100 ms from the script's start), which with Python's start-up keeps the whole run under
200 ms. Deliberately absent from this import path: SQLAlchemy, asyncio, asyncpg, structlog and
cti.config (see docs/asterisk.md, "The AGI lookup", for the measurements).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TextIO

from asterisk.agi import AGI

from cti.agi.customers import CustomerMatch, DirectoryUnavailable, find_customers
from cti.directory.numbers import normalize

# The same files, in the same order, as cti.config.DEFAULT_CONFIG_PATHS (a test keeps them equal);
# not imported from there because cti.config costs ~30 ms of imports we do not need.
CONFIG_PATHS = ("cti.toml", "/etc/cti/cti.toml")
DEFAULT_TIMEOUT_MS = 100
DEFAULT_REGION = "FR"
NAME_MAX = 64

Status = Literal["hit", "miss", "multiple", "withheld", "error"]
NamePolicy = Literal["ifunknown", "always", "never"]

# Caller names that say nothing: set by Asterisk, carriers or softphones when there is no name.
_EMPTY_NAMES = frozenset({"", "unknown", "<unknown>", "anonymous", "unavailable", "private", "asterisk"})


@dataclass(frozen=True)
class AgiSettings:
    database_url: str | None
    region: str
    timeout_s: float
    problem: str = ""  # why the settings could not be read, when they could not


@dataclass(frozen=True)
class Outcome:
    status: Status
    customer: CustomerMatch | None = None
    vip: bool = False
    priority: int = 0
    detail: str = ""


def _read_toml(env: Mapping[str, str]) -> dict[str, Any]:
    import tomllib  # ~10 ms, only paid when the environment does not say everything

    chosen = env.get("CTI_CONFIG")
    candidates = [chosen] if chosen else list(CONFIG_PATHS)
    for candidate in candidates:
        try:
            with open(candidate, "rb") as handle:
                return tomllib.load(handle)
        except FileNotFoundError:
            if chosen:
                raise
    return {}


def read_settings(env: Mapping[str, str]) -> AgiSettings:
    """CTI_* environment first, then the cti TOML file, as the daemon reads them."""
    url = env.get("CTI_DATABASE_URL") or None
    region = env.get("CTI_DIRECTORY_REGION") or None
    problem = ""
    if url is None or region is None:
        try:
            raw = _read_toml(env)
            url = url or raw.get("database", {}).get("url")
            region = region or raw.get("directory", {}).get("region")
        except (OSError, ValueError, AttributeError) as exc:  # TOMLDecodeError is a ValueError
            problem = f"settings unreadable: {type(exc).__name__}: {exc}"
    try:
        timeout_ms = float(env.get("CTI_AGI_TIMEOUT_MS", DEFAULT_TIMEOUT_MS))
    except ValueError:
        timeout_ms = DEFAULT_TIMEOUT_MS
    return AgiSettings(str(url) if url else None, str(region or DEFAULT_REGION), timeout_ms / 1000, problem)


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def name_is_unknown(name: str, raw_number: str) -> bool:
    """True when the caller name carries no information (empty, a placeholder, or the number)."""
    cleaned = name.strip().strip('"').strip().lower()
    if cleaned in _EMPTY_NAMES:
        return True
    digits = _digits(cleaned)
    return bool(digits) and (digits == _digits(raw_number) or cleaned.lstrip("+").isdigit())


def decide(matches: Sequence[CustomerMatch]) -> Outcome:
    if not matches:
        return Outcome("miss")
    vips = [m for m in matches if m.vip]
    priority = max((m.queue_priority for m in vips), default=0)
    if len({m.id for m in matches}) == 1:
        return Outcome("hit", matches[0], bool(vips), priority)
    # A shared number (a switchboard, a family line): naming one owner would pop the wrong file,
    # but routing priority is safe to keep.
    return Outcome("multiple", None, bool(vips), priority, detail=f"{len(matches)} owners")


def look_up(raw_number: str, region: str, settings: AgiSettings, deadline: float) -> Outcome:
    number = normalize(raw_number, region)
    if number.kind == "withheld":
        return Outcome("withheld")
    if number.e164 is None:
        return Outcome("miss", detail="not a phone number")
    if settings.database_url is None:
        return Outcome(
            "error", detail=settings.problem or "no database URL (CTI_DATABASE_URL or [database].url)"
        )
    try:
        return decide(find_customers(settings.database_url, number.e164, deadline))
    except DirectoryUnavailable as exc:
        return Outcome("error", detail=str(exc))


def _clean(text: str, limit: int = 200) -> str:
    """Text fit for one quoted AGI argument: no line breaks (they would end the command)."""
    flat = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    return flat[:limit]


def _quoted(text: str) -> str:
    # pyst2 wraps values in double quotes without escaping; Asterisk's AGI parser honours \ escapes.
    return text.replace("\\", "\\\\").replace('"', '\\"')


def plan_variables(
    outcome: Outcome, caller_name: str, raw_number: str, policy: NamePolicy
) -> list[tuple[str, str]]:
    """The channel variables to set, in order; CTI_LOOKUP comes last so it also means 'done'."""
    planned: list[tuple[str, str]] = []
    customer = outcome.customer
    if customer is not None:
        planned.append(("CTI_CUSTOMER_ID", str(customer.id)))
        wanted = policy == "always" or (policy == "ifunknown" and name_is_unknown(caller_name, raw_number))
        if wanted and _clean(customer.name):
            planned.append(("CALLERID(name)", _quoted(_clean(customer.name, NAME_MAX))))
    if outcome.vip:
        planned.append(("CTI_VIP", "1"))
        if outcome.priority > 0:
            planned.append(("QUEUE_PRIO", str(outcome.priority)))
    planned.append(("CTI_LOOKUP", outcome.status))
    return planned


def summary(outcome: Outcome, elapsed_ms: float) -> str:
    parts = [f"cti-agi: {outcome.status}"]
    if outcome.customer is not None:
        parts.append(f"customer {outcome.customer.id}")
    if outcome.vip:
        parts.append(f"vip priority {outcome.priority}")
    if outcome.detail:
        parts.append(f"({_clean(outcome.detail, 160)})")
    parts.append(f"in {elapsed_ms:.0f} ms")
    return _quoted(" ".join(parts))


def _policy(value: str) -> NamePolicy:
    lowered = value.strip().lower()
    if lowered == "always":
        return "always"
    if lowered == "never":
        return "never"
    return "ifunknown"


def run(agi: AGI, args: Sequence[str], env: Mapping[str, str], started: float, errors: TextIO) -> Outcome:
    """One lookup over an open AGI session; returns what it decided (for tests and logs)."""
    settings = read_settings(env)
    region = args[1].strip().upper() if len(args) > 1 and args[1].strip() else settings.region
    policy = _policy(args[2]) if len(args) > 2 else "ifunknown"
    raw_number = agi.env.get("agi_callerid", "")
    caller_name = agi.env.get("agi_calleridname", "")
    if args and args[0] != "lookup":
        outcome = Outcome("error", detail=f"unknown command {args[0]!r}")
    else:
        outcome = look_up(raw_number, region, settings, started + settings.timeout_s)
    for name, value in plan_variables(outcome, caller_name, raw_number, policy):
        agi.set_variable(name, value)
    elapsed_ms = (time.monotonic() - started) * 1000
    agi.verbose(summary(outcome, elapsed_ms), 1 if outcome.status == "error" else 3)
    if outcome.status == "error":
        # Asterisk passes its own stderr to AGI scripts: in `asterisk -f` this is the console/log.
        print(f"cti-agi: lookup error: {outcome.detail}", file=errors)
    return outcome


class _Discard:
    """pyst2 narrates every line (caller numbers included) to stderr; the console needs none of it."""

    def write(self, _text: str) -> int:
        return 0

    def flush(self) -> None:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    started = time.monotonic()
    args = list(sys.argv[1:] if argv is None else argv)
    for stream in (sys.stdin, sys.stdout):
        # Customer names are UTF-8 whatever locale Asterisk was started under.
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(encoding="utf-8", errors="replace")
    try:
        agi = AGI(stdin=sys.stdin, stdout=sys.stdout, stderr=_Discard())
        run(agi, args, os.environ, started, sys.stderr)
    except Exception as exc:  # hang-up mid-way, a closed pipe, a bug: the call goes on regardless
        print(f"cti-agi: gave up: {type(exc).__name__}: {exc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
