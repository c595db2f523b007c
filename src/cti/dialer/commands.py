"""`cti hours ...` and `cti campaign ...`: the command-line side of the dialer (argument parsing
is in cti.cli). Messages are for people; results are JSON or tables on stdout."""

from __future__ import annotations

import asyncio
import csv
import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO, TypeVar

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from cti.config import redact_url
from cti.db.engine import create_engine
from cti.db.migrate import upgrade
from cti.dialer import store
from cti.dialer.campaigns import CampaignError, scope_of
from cti.dialer.csv_import import ImportFileError
from cti.dialer.hours import Callee, decide_for
from cti.dialer.jurisdiction import AUTO, CampaignRules, make_rules
from cti.dialer.rulesets import BUILTIN, RuleSetError, load_ruleset
from cti.dialer.timezones import NumberError

T = TypeVar("T")

EXIT_BAD_INPUT = 2


def parse_instant(text: str | None) -> datetime:
    """ISO-8601; a time without a zone is UTC; none at all is now."""
    if text is None:
        return datetime.now(UTC)
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"--at {text!r} is not an ISO-8601 instant (e.g. 2026-03-02T10:30:00+01:00)"
        ) from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def run_hours_check(
    number: str,
    *,
    at: str | None,
    rules: str,
    region: str,
    timezone: str | None = None,
    subdivision: str | None = None,
    consent: bool = False,
    countries: str | None = None,
    allow_numbers: str | None = None,
    fallback: str | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Print the decision as JSON; exit 0 allowed, 1 not allowed, 2 bad input. The number is
    judged as a campaign with these rules would judge it: `auto` picks its country's rule set,
    and a number outside the rules' countries or of a special type is refused."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        instant = parse_instant(at)
        campaign_rules = load_rules(rules, _listed(countries), _listed(allow_numbers), fallback)
        callee = Callee(number, timezone, None, subdivision, consent, region.upper())
        decision = decide_for(callee, instant, campaign_rules)
    except (NumberError, RuleSetError, ValueError) as exc:
        print(f"cti hours check: {exc}", file=err)
        return EXIT_BAD_INPUT
    json.dump(decision.to_json(), out, ensure_ascii=False, indent=1)
    out.write("\n")
    return 0 if decision.allowed else 1


def load_rules(
    rules: str,
    countries: list[str] | None = None,
    allow_numbers: list[str] | None = None,
    fallback: str | None = None,
) -> CampaignRules:
    """Campaign rules from a built-in name, `auto` or a TOML file (whose own countries,
    allow_numbers and fallback keys apply unless given here)."""
    if rules == AUTO:
        return make_rules(AUTO, None, countries, allow_numbers, fallback)
    ruleset = load_ruleset(rules)
    scope: dict[str, Any] = {}
    if rules not in BUILTIN:
        scope = scope_of(Path(rules).read_text(encoding="utf-8"))
    return make_rules(
        ruleset.name,
        ruleset,
        countries if countries is not None else scope.get("countries"),
        allow_numbers if allow_numbers is not None else scope.get("allow_numbers"),
        fallback if fallback is not None else scope.get("fallback"),
    )


def _listed(text: str | None) -> list[str] | None:
    """`FR,MA` or `FR MA` → ['FR', 'MA']."""
    if text is None:
        return None
    return [item for item in text.replace(",", " ").split() if item]


# ----------------------------------------------------------------------------------- campaigns
EXIT_REJECTED = 1
EXIT_DATABASE = 3


def _engine(url: str) -> AsyncEngine:
    return create_engine(url, poolclass=NullPool)


async def _with_engine(url: str, work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    await asyncio.to_thread(upgrade, url)
    engine = _engine(url)
    try:
        return await work(engine)
    finally:
        await engine.dispose()


@dataclass(frozen=True)
class Failed:
    code: int


def _run(url: str, name: str, work: Callable[[AsyncEngine], Awaitable[T]], err: TextIO) -> T | Failed:
    """Run `work` against the database; a domain or database error is one line on stderr."""
    try:
        return asyncio.run(_with_engine(url, work))
    except CampaignError as exc:
        print(f"cti campaign {name}: {exc}", file=err)
        return Failed(EXIT_BAD_INPUT)
    except (SQLAlchemyError, OSError) as exc:
        print(f"cti campaign {name}: database error ({redact_url(url)}): {_first_line(exc)}", file=err)
        return Failed(EXIT_DATABASE)


def _first_line(exc: BaseException) -> str:
    original = getattr(exc, "orig", None) or exc
    text = str(original).strip().splitlines()
    return text[0] if text else type(original).__name__


def _dump(doc: object, out: TextIO) -> None:
    json.dump(doc, out, ensure_ascii=False, indent=1)
    out.write("\n")


def parse_retry(items: list[str]) -> dict[str, dict[str, str | int]]:
    """`busy=15m:3` → {"busy": {"delay": "15m", "max": 3}}."""
    policy: dict[str, dict[str, str | int]] = {}
    for item in items:
        outcome, _, rule = item.partition("=")
        delay, _, count = rule.partition(":")
        if not outcome or not delay or not count.isdigit():
            raise CampaignError(f"--retry {item!r}: use OUTCOME=DELAY:MAX, e.g. busy=15m:3")
        policy[outcome.strip()] = {"delay": delay.strip(), "max": int(count)}
    return policy


def campaign_fields(args: Any) -> dict[str, Any]:
    """Campaign columns from `cti campaign create/update` arguments (only those given)."""
    fields: dict[str, Any] = {}
    simple = {
        "queue": "queue",
        "mode": "dial_mode",
        "caller_id": "caller_id",
        "region": "region",
        "principal": "principal",
        "max_attempts": "max_attempts",
        "priority": "priority",
        "ring_timeout": "ring_timeout_s",
        "max_ratio": "max_ratio",
        "abandon_window": "abandon_window_s",
        "start": "starts_at",
        "stop": "stops_at",
    }
    for arg, column in simple.items():
        value = getattr(args, arg, None)
        if value is not None:
            fields[column] = value
    if getattr(args, "amd", False):
        fields["amd"] = True
    if getattr(args, "agent", None):
        fields["agent_group"] = list(args.agent)
    if getattr(args, "retry", None):
        fields["retry_policy"] = parse_retry(args.retry)
    rules = getattr(args, "rules", None)
    if rules is not None:
        fields.update(_ruleset_fields(rules))
    for option in ("countries", "allow_numbers"):
        value = getattr(args, option, None)
        if value is not None:
            fields[option] = _listed(value)
    if getattr(args, "fallback", None) is not None:
        fields["fallback"] = args.fallback
    return fields


def _ruleset_fields(rules: str) -> dict[str, Any]:
    if rules == AUTO:
        return {"ruleset": AUTO, "ruleset_toml": None}
    try:
        ruleset = load_ruleset(rules)
    except RuleSetError as exc:
        raise CampaignError(str(exc)) from None
    if rules in BUILTIN:
        return {"ruleset": rules, "ruleset_toml": None}
    return {"ruleset": ruleset.name, "ruleset_toml": Path(rules).read_text(encoding="utf-8")}


def run_campaign_create(
    name: str, fields: dict[str, Any], *, url: str, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    out, err = out or sys.stdout, err or sys.stderr

    async def work(engine: AsyncEngine) -> int:
        row = await store.create_campaign(engine, name, fields)
        _dump(store.campaign_json(row), out)
        return 0

    return _code(_run(url, "create", work, err))


def run_campaign_update(
    name: str, fields: dict[str, Any], *, url: str, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    out, err = out or sys.stdout, err or sys.stderr

    async def work(engine: AsyncEngine) -> int:
        row = await store.update_campaign(engine, name, fields)
        _dump(store.campaign_json(row), out)
        return 0

    return _code(_run(url, "update", work, err))


def run_campaign_state(
    name: str, action: str, *, url: str, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    out, err = out or sys.stdout, err or sys.stderr

    async def work(engine: AsyncEngine) -> int:
        row = await store.change_state(engine, name, action)
        print(f"campaign {row.name}: {row.state}", file=out)
        return 0

    return _code(_run(url, action, work, err))


def run_campaign_list(*, url: str, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr

    async def work(engine: AsyncEngine) -> int:
        rows = await store.list_campaigns(engine)
        print(f"{'name':<20} {'state':<9} {'mode':<12} {'rules':<8} {'queue':<12}", file=out)
        for row in rows:
            line = f"{row.name:<20} {row.state:<9} {row.dial_mode:<12} {row.ruleset:<8} {row.queue:<12}"
            print(line, file=out)
        return 0

    return _code(_run(url, "list", work, err))


def run_campaign_show(
    name: str, *, url: str, drop_after_s: float = 2.0, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    out, err = out or sys.stdout, err or sys.stderr

    async def work(engine: AsyncEngine) -> int:
        from cti.dialer.dispositions import campaign_stats
        row = await store.get_campaign(engine, name)
        doc = store.campaign_json(row)
        doc["contacts"] = await store.contact_counts(engine, row.id)
        doc["stats"] = await campaign_stats(engine, store.spec_of(row), store.utcnow(), drop_after_s)
        _dump(doc, out)
        return 0

    return _code(_run(url, "show", work, err))


def run_campaign_why(
    name: str,
    *,
    url: str,
    code: str | None = None,
    limit: int = 100,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Every contact not being dialled, why and from when, judged from the database as the
    engine would judge it now: a daemon need not be running."""
    from cti.dialer.why import why_not_dialed

    out, err = out or sys.stdout, err or sys.stderr

    async def work(engine: AsyncEngine) -> int:
        row = await store.get_campaign(engine, name)
        _dump(await why_not_dialed(engine, store.spec_of(row), store.utcnow(), limit, code), out)
        return 0

    return _code(_run(url, "why", work, err))


def run_campaign_import(
    path: str,
    *,
    campaign: str,
    url: str,
    dry_run: bool = False,
    errors_path: str | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Exit 0 every row imported, 1 some rows rejected (the others imported), 2 the file or the
    campaign is unusable, 3 the database failed (nothing written either way)."""
    from cti.dialer.importer import ImportReport, import_contacts

    out, err = out or sys.stdout, err or sys.stderr
    counter = TtyCounter(err)

    async def work(engine: AsyncEngine) -> ImportReport:
        return await import_contacts(
            engine, path, campaign, dry_run=dry_run, errors_path=errors_path, progress=counter
        )

    try:
        report = _run(url, "import", work, err)
    except ImportFileError as exc:
        counter.done()
        print(f"cti campaign import: {exc}", file=err)
        return EXIT_BAD_INPUT
    counter.done()
    if isinstance(report, Failed):
        return report.code
    print(report.summary(), file=out)
    if errors_path:
        print(f"rejected rows written to {errors_path}", file=out)
    return EXIT_REJECTED if report.rejected else 0


def run_dnc_import(
    path: str,
    *,
    campaign: str | None,
    region: str,
    url: str,
    reason: str | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """A do-not-call file: one number per line (or a CSV whose first column is the number)."""
    from cti.dialer.csv_import import NumberCheck, RowError, sniff_encoding

    out, err = out or sys.stdout, err or sys.stderr
    checker = NumberCheck(region)
    numbers: list[str] = []
    bad = 0
    try:
        with open(path, encoding=sniff_encoding(Path(path)), newline="") as handle:
            for row in csv.reader(handle, delimiter=";"):
                cell = row[0].split(",")[0].strip() if row else ""
                if not cell or not any(c.isdigit() for c in cell):
                    continue  # blank lines and headers
                try:
                    numbers.append(checker.e164(cell))
                except RowError:
                    bad += 1
    except (OSError, ImportFileError) as exc:
        print(f"cti campaign dnc: {exc}", file=err)
        return EXIT_BAD_INPUT
    scope = campaign or store.GLOBAL_DNC

    async def work(engine: AsyncEngine) -> int:
        if campaign is not None:
            await store.get_campaign(engine, campaign)
        return await store.add_dnc(engine, numbers, scope, reason)

    added = _run(url, "dnc", work, err)
    if isinstance(added, Failed):
        return added.code
    where = "the global list" if campaign is None else f"campaign {campaign}'s list"
    print(f"{len(numbers)} numbers read, {added} added to {where}; {bad} invalid numbers skipped", file=out)
    return 0


def _code(result: int | Failed) -> int:
    return result.code if isinstance(result, Failed) else result


class TtyCounter:
    """A one-line progress counter on a terminal (nothing when redirected): no dependency for
    what a carriage return does."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.active = stream.isatty()
        self.shown = False

    def __call__(self, phase: str, count: int) -> None:
        if self.active:
            self.stream.write(f"\r{phase}: {count:,} rows ")
            self.stream.flush()
            self.shown = True

    def done(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()
            self.shown = False
