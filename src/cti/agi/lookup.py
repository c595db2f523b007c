"""The `lookup` FastAGI route: who is calling? Asked by the inbound dialplan before the first menu.

    exten => s,n,AGI(agi://${CTI_AGI_HOST}/lookup,${CTI_REGION}[,NAME_POLICY])

Reads the caller number from the AGI environment, normalises it in REGION, asks the daemon's own
customer directory (`CustomerDirectory.lookup`, the screen pops' lookup) and sets:

- `CTI_CUSTOMER_ID`  the customer's id (one owner only),
- `CALLERID(name)`   the customer's name, when the network gave none (NAME_POLICY `ifunknown`,
                     the default; `always` overwrites it, `never` leaves it alone),
- `CTI_VIP=1` and `QUEUE_PRIO` (the customer's `queue_priority`) for VIP customers: app_queue
                     reads QUEUE_PRIO as the caller's priority, so VIPs are answered first,
- `CTI_LOOKUP`       hit | miss | multiple | withheld | error, always, and last,

then one VERBOSE line for Asterisk's console. A call is never held up: a directory that does not
answer within `[agi] timeout_s` is `CTI_LOOKUP=error`, and the session itself is bounded by the
server (cti.agi.server).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import structlog

from cti.agi.protocol import exec_mset, one_line, set_variable, verbose
from cti.agi.server import AgiSession
from cti.directory.customer import CustomerFile, LookupResult
from cti.directory.numbers import normalize
from cti.latency import LatencyHistogram

log = structlog.get_logger(__name__)

NAME_MAX = 64

Status = Literal["hit", "miss", "multiple", "withheld", "error"]
NamePolicy = Literal["ifunknown", "always", "never"]

# Caller names that say nothing: set by Asterisk, carriers or softphones when there is no name.
_EMPTY_NAMES = frozenset({"", "unknown", "<unknown>", "anonymous", "unavailable", "private", "asterisk"})


class Directory(Protocol):
    """What the lookup needs of `cti.directory.lookup.CustomerDirectory`."""

    async def lookup(self, raw_caller_id: str | None) -> LookupResult: ...


@dataclass(frozen=True)
class Outcome:
    status: Status
    customer: CustomerFile | None = None
    vip: bool = False
    priority: int = 0
    detail: str = ""


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def name_is_unknown(name: str, raw_number: str) -> bool:
    """True when the caller name carries no information (empty, a placeholder, or the number)."""
    cleaned = name.strip().strip('"').strip().lower()
    if cleaned in _EMPTY_NAMES:
        return True
    digits = _digits(cleaned)
    return bool(digits) and (digits == _digits(raw_number) or cleaned.lstrip("+").isdigit())


def decide(result: LookupResult) -> Outcome:
    """What the directory's answer means for the call."""
    found = result.customers
    vips = [c for c in found if c.vip]
    priority = max((c.queue_priority for c in vips), default=0)
    if result.status == "found":
        return Outcome("hit", found[0], bool(vips), priority)
    if result.status == "several":
        # A shared number (a switchboard, a family line): naming one owner would pop the wrong
        # file, but routing priority is safe to keep.
        return Outcome("multiple", None, bool(vips), priority, detail=f"{len(found)} owners")
    if result.status == "withheld":
        return Outcome("withheld")
    if result.status == "unavailable":
        failed = ", ".join(f"{source} {state}" for source, state in result.sources if state != "ok")
        return Outcome("error", detail=f"directory unavailable ({failed})")
    if result.status == "invalid":
        return Outcome("miss", detail="not a phone number")
    return Outcome("miss")


def plan_variables(
    outcome: Outcome, caller_name: str, raw_number: str, policy: NamePolicy
) -> list[tuple[str, str]]:
    """The channel variables to set, in order; CTI_LOOKUP comes last so it also means 'done'."""
    planned: list[tuple[str, str]] = []
    customer = outcome.customer
    if customer is not None:
        if customer.id is not None:  # a CRM-only customer has no id of ours
            planned.append(("CTI_CUSTOMER_ID", str(customer.id)))
        wanted = policy == "always" or (policy == "ifunknown" and name_is_unknown(caller_name, raw_number))
        name = one_line(customer.name, NAME_MAX)
        if wanted and name:
            planned.append(("CALLERID(name)", name))
    if outcome.vip:
        planned.append(("CTI_VIP", "1"))
        if outcome.priority > 0:
            planned.append(("QUEUE_PRIO", str(outcome.priority)))
    planned.append(("CTI_LOOKUP", outcome.status))
    return planned


# What MSet takes without escaping: it splits its argument on commas (honouring quotes,
# parentheses and backslashes) and each pair on its first "=".
_MSET_NAME = re.compile(r"^[A-Za-z0-9_]+(\([A-Za-z0-9_]+\))?$")
_MSET_VALUE = re.compile(r"^[^,\"'\\()=|;\x00-\x1f]*$")


def agi_commands(planned: Sequence[tuple[str, str]]) -> list[str]:
    """The AGI commands that set `planned`, in as few round trips as possible: every command is
    a round trip through Asterisk's channel thread (the lookup's cost on the real PBX), so the
    values go in one `EXEC MSet`. A value MSet would have to escape (a name with a comma, a
    quote...) keeps its own SET VARIABLE. The order is kept: CTI_LOOKUP still comes last."""
    commands: list[str] = []
    batch: list[str] = []
    for name, value in planned:
        if _MSET_NAME.match(name) and _MSET_VALUE.match(value) and value == value.strip():
            batch.append(f"{name}={value}")
            continue
        if batch:
            commands.append(exec_mset(batch))
            batch = []
        commands.append(set_variable(name, value))
    if batch:
        commands.append(exec_mset(batch))
    return commands


def summary(outcome: Outcome, elapsed_ms: float) -> str:
    """The VERBOSE line for Asterisk's console (no caller number: consoles are logged)."""
    parts = [f"cti lookup: {outcome.status}"]
    if outcome.customer is not None and outcome.customer.id is not None:
        parts.append(f"customer {outcome.customer.id}")
    if outcome.vip:
        parts.append(f"vip priority {outcome.priority}")
    if outcome.detail:
        parts.append(f"({one_line(outcome.detail, 160)})")
    parts.append(f"in {elapsed_ms:.0f} ms")
    return " ".join(parts)


def name_policy(value: str) -> NamePolicy:
    lowered = value.strip().lower()
    if lowered == "always":
        return "always"
    if lowered == "never":
        return "never"
    return "ifunknown"


def _call_args(args: Sequence[str], default_region: str) -> tuple[str, NamePolicy]:
    region = args[0].strip().upper() if args and args[0].strip() else default_region
    return region, name_policy(args[1]) if len(args) > 1 else "ifunknown"


class CallerLookup:
    """The `lookup` route, over the daemon's customer directory."""

    def __init__(self, directory: Directory, default_region: str = "FR", timeout_s: float = 0.5) -> None:
        self.directory = directory
        self.default_region = default_region.upper()
        self.timeout_s = timeout_s

    async def look_up(self, raw_number: str, region: str) -> Outcome:
        number = normalize(raw_number, region)
        if number.kind == "withheld":
            return Outcome("withheld")
        if number.e164 is None:
            return Outcome("miss", detail="not a phone number")
        try:
            async with asyncio.timeout(self.timeout_s):
                # In E.164 already, so that the directory reads it the same whatever its region.
                return decide(await self.directory.lookup(number.e164))
        except TimeoutError:
            return Outcome("error", detail=f"directory did not answer in {self.timeout_s * 1000:.0f} ms")
        except Exception as exc:  # lookup() does not raise by contract; a bug must not cost the call
            log.exception("caller lookup failed unexpectedly")
            return Outcome("error", detail=type(exc).__name__)

    async def __call__(self, session: AgiSession) -> None:
        started = time.monotonic()
        env = session.env
        region, policy = _call_args(env.args, self.default_region)
        outcome = await self.look_up(env.caller_number, region)
        commands = agi_commands(plan_variables(outcome, env.caller_name, env.caller_number, policy))
        if outcome.status == "error":
            # Only a failure is worth a console line; `agi set debug on` shows every lookup.
            commands.append(verbose(summary(outcome, (time.monotonic() - started) * 1000), 1))
        for n, command in enumerate(commands, 1):
            # The last one goes with the end of our side: Asterisk reads the end right after
            # it, and the dialplan goes on without waiting for our close after its reply.
            await session.command(command, last=n == len(commands))
        customer = outcome.customer.id if outcome.customer is not None else None
        session.log.debug(
            "caller lookup",
            status=outcome.status,
            customer=customer,
            detail=outcome.detail,
            ms=round((time.monotonic() - started) * 1000, 1),
            caller=env.caller_number,
        )


# Seconds: the lookup's target is p99 <= 5 ms on the real PBX; coarse buckets for the tail.
AGI_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class MeasuredLookup(CallerLookup):
    """The `lookup` route, counting its outcomes and timing each session's route (directory
    lookup and the AGI commands that set the channel's variables), for the metrics."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.histogram = LatencyHistogram(AGI_BUCKETS)
        self.outcomes: Counter[str] = Counter()

    async def look_up(self, raw_number: str, region: str) -> Outcome:
        outcome = await super().look_up(raw_number, region)
        self.outcomes[outcome.status] += 1
        return outcome

    async def __call__(self, session: AgiSession) -> None:
        started = time.monotonic()
        try:
            await super().__call__(session)
        finally:
            self.histogram.observe(time.monotonic() - started)
