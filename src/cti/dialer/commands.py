"""`cti hours ...` and `cti campaign ...`: the command-line side of the dialer (argument parsing
is in cti.cli). Results go to stdout for people (cti.dialer.display), or as JSON with `--json`
for scripts; errors are one line on stderr, exit 2 for bad input, 3 for a database failure."""

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
from cti.dialer import display, store
from cti.dialer.campaigns import CampaignError, scope_of
from cti.dialer.csv_import import ImportFileError
from cti.dialer.hours import Callee, decide_for
from cti.dialer.jurisdiction import AUTO, CampaignRules, make_rules
from cti.dialer.rulesets import BUILTIN, RuleSetError, load_ruleset
from cti.dialer.timezones import NumberError
from cti.humanize import instant_option, plural, when
from cti.progress import Bar

T = TypeVar("T")

EXIT_BAD_INPUT = 2


def parse_instant(text: str | None, name: str = "--at") -> datetime:
    """An instant typed on the command line, the way `cti stats` reads them: today, yesterday,
    tomorrow, a bare date (its midnight) or ISO 8601, in the machine's zone unless it says its
    own; none at all is now."""
    return instant_option(text, name) or datetime.now(UTC)


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
    as_json: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Print the decision (JSON with `as_json`); exit 0 allowed, 1 not allowed, 2 bad input. The number is
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
    if as_json:
        _dump(decision.to_json(), out)
    else:
        print(display.hours_text(decision.to_json(), instant, datetime.now(UTC)), file=out)
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
        "server": "server",
        "max_attempts": "max_attempts",
        "priority": "priority",
        "ring_timeout": "ring_timeout_s",
        "max_ratio": "max_ratio",
        "abandon_window": "abandon_window_s",
    }
    for arg, column in simple.items():
        value = getattr(args, arg, None)
        if value is not None:
            fields[column] = value
    for option, column, until in (("start", "starts_at", False), ("stop", "stops_at", True)):
        text = getattr(args, option, None)
        if text is not None:
            try:
                # --stop 2026-03-31: through that day, as `cti stats --to` reads a day.
                fields[column] = instant_option(text, f"--{option}", until=until)
            except ValueError as exc:
                raise CampaignError(str(exc)) from None
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


def _campaign_out(row: Any, as_json: bool, out: TextIO) -> None:
    doc = store.campaign_json(row)
    if as_json:
        _dump(doc, out)
    else:
        print(display.campaign_text(doc, store.utcnow()), file=out)


def run_campaign_create(
    name: str,
    fields: dict[str, Any],
    *,
    url: str,
    as_json: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    out, err = out or sys.stdout, err or sys.stderr

    async def work(engine: AsyncEngine) -> int:
        _campaign_out(await store.create_campaign(engine, name, fields), as_json, out)
        return 0

    return _code(_run(url, "create", work, err))


def run_campaign_update(
    name: str,
    fields: dict[str, Any],
    *,
    url: str,
    as_json: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    out, err = out or sys.stdout, err or sys.stderr

    async def work(engine: AsyncEngine) -> int:
        _campaign_out(await store.update_campaign(engine, name, fields), as_json, out)
        return 0

    return _code(_run(url, "update", work, err))


def run_campaign_state(
    name: str,
    action: str,
    *,
    url: str,
    as_json: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    out, err = out or sys.stdout, err or sys.stderr

    async def work(engine: AsyncEngine) -> int:
        row = await store.change_state(engine, name, action)
        if as_json:
            _dump(store.campaign_json(row), out)
            return 0
        line = f"campaign {row.name}: {row.state}"
        now = store.utcnow()
        if row.state == "running" and row.starts_at is not None and row.starts_at > now:
            line += f"; dials from {when(row.starts_at, now=now)}"
        if row.state == "running" and row.stops_at is not None and row.stops_at <= now:
            line += (
                f"; but its stop, {when(row.stops_at, now=now)}, has passed: nothing will be dialled "
                f"(cti campaign update {row.name} --stop WHEN)"
            )
        elif row.state == "running" and row.stops_at is not None:
            line += f"; stops at {when(row.stops_at, now=now)}"
        print(line, file=out)
        return 0

    return _code(_run(url, action, work, err))


def run_campaign_list(
    *, url: str, as_json: bool = False, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    out, err = out or sys.stdout, err or sys.stderr

    async def work(engine: AsyncEngine) -> int:
        docs = [store.campaign_json(row) for row in await store.list_campaigns(engine)]
        if as_json:
            _dump({"campaigns": docs}, out)  # the REST API's document
            return 0
        counts = {doc["name"]: await store.contact_counts(engine, doc["id"]) for doc in docs}
        print(display.list_text(docs, counts, store.utcnow()), file=out)
        return 0

    return _code(_run(url, "list", work, err))


def run_campaign_show(
    name: str,
    *,
    url: str,
    drop_after_s: float = 2.0,
    as_json: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    out, err = out or sys.stdout, err or sys.stderr

    async def work(engine: AsyncEngine) -> int:
        from cti.dialer.dispositions import campaign_stats

        row = await store.get_campaign(engine, name)
        doc = store.campaign_json(row)
        doc["contacts"] = await store.contact_counts(engine, row.id)
        doc["stats"] = await campaign_stats(engine, store.spec_of(row), store.utcnow(), drop_after_s)
        if as_json:
            _dump(doc, out)
        else:
            print(display.show_text(doc, store.utcnow()), file=out)
        return 0

    return _code(_run(url, "show", work, err))


def run_campaign_why(
    name: str,
    *,
    url: str,
    code: str | None = None,
    limit: int = 100,
    at: datetime | None = None,
    as_json: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Every contact not being dialled, why and from when, judged from the database as the
    engine would judge it at `at` (default now): a daemon need not be running."""
    from cti.dialer.why import why_not_dialed

    out, err = out or sys.stdout, err or sys.stderr

    async def work(engine: AsyncEngine) -> int:
        row = await store.get_campaign(engine, name)
        now = at or store.utcnow()
        items = await why_not_dialed(engine, store.spec_of(row), now, limit, code)
        if as_json:
            _dump(items, out)
        else:
            print(display.why_text(items, store.campaign_json(row), now, limit, code), file=out)
        return 0

    return _code(_run(url, "why", work, err))


def run_campaign_import(
    path: str,
    *,
    campaign: str,
    url: str,
    dry_run: bool = False,
    errors_path: str | None = None,
    as_json: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Exit 0 every row imported, 1 some rows rejected (the others imported), 2 the file or the
    campaign is unusable, 3 the database failed (nothing written either way)."""
    from cti.dialer.importer import ImportReport, import_contacts

    out, err = out or sys.stdout, err or sys.stderr
    try:
        # An unreadable file is bad input, not a database failure: found before anything else.
        size = Path(path).stat().st_size
        with open(path, "rb"):
            pass
    except OSError as exc:
        print(f"cti campaign import: cannot read {path}: {exc.strerror or exc}", file=err)
        return EXIT_BAD_INPUT
    bar = Bar(err, "reading", size, then="saving")

    async def work(engine: AsyncEngine) -> ImportReport:
        return await import_contacts(
            engine,
            path,
            campaign,
            dry_run=dry_run,
            errors_path=errors_path,
            progress=lambda rows, position: bar.update(position, rows),
        )

    try:
        with bar:
            report = _run(url, "import", work, err)
    except ImportFileError as exc:
        print(f"cti campaign import: {exc}", file=err)
        return EXIT_BAD_INPUT
    if isinstance(report, Failed):
        return report.code
    if as_json:
        _dump({**report.to_json(), "errors_file": errors_path}, out)
    else:
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
    as_json: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """A do-not-call file: one number per line (or a CSV whose first column is the number)."""
    from cti.dialer.csv_import import NumberCheck, RowError, bytes_read, sniff_encoding

    out, err = out or sys.stdout, err or sys.stderr
    checker = NumberCheck(region)
    numbers: list[str] = []
    bad = 0
    try:
        with (
            open(path, encoding=sniff_encoding(Path(path)), newline="") as handle,
            Bar(err, "reading", Path(path).stat().st_size) as bar,
        ):
            for count, row in enumerate(csv.reader(handle, delimiter=";"), 1):
                if count % 2048 == 0:
                    bar.update(bytes_read(handle), count)
                cell = row[0].split(",")[0].strip() if row else ""
                if not cell or not any(c.isdigit() for c in cell):
                    continue  # blank lines and headers
                try:
                    numbers.append(checker.e164(cell))
                except RowError:
                    bad += 1
    except (OSError, ImportFileError) as exc:
        text = f"cannot read {path}: {exc.strerror}" if isinstance(exc, OSError) and exc.strerror else exc
        print(f"cti campaign dnc: {text}", file=err)
        return EXIT_BAD_INPUT
    scope = campaign or store.GLOBAL_DNC

    async def work(engine: AsyncEngine) -> int:
        if campaign is not None:
            await store.get_campaign(engine, campaign)
        return await store.add_dnc(engine, numbers, scope, reason)

    added = _run(url, "dnc", work, err)
    if isinstance(added, Failed):
        return added.code
    if as_json:
        _dump({"read": len(numbers), "added": added, "invalid": bad, "scope": scope}, out)
        return 0
    where = "the global list" if campaign is None else f"campaign {campaign}'s list"
    read, invalid = plural(len(numbers), "number"), plural(bad, "invalid number")
    print(f"{read} read, {added:,} added to {where}; {invalid} skipped", file=out)
    return 0


def _code(result: int | Failed) -> int:
    return result.code if isinstance(result, Failed) else result
