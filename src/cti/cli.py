"""The `cti` command."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from cti import __version__
from cti.config import ConfigError, load_settings


def _replay(args: argparse.Namespace) -> int:
    from cti.calls.queue_log import parse_lines
    from cti.replay import replay_files

    missing = [p for p in args.files if not Path(p).is_file()]
    if missing:
        print(f"cti replay: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    entries = []
    if args.queue_log:
        with open(args.queue_log, encoding="utf-8", errors="replace") as handle:
            entries = list(parse_lines(handle))
    result = replay_files(args.files, server=args.server, region=args.region, queue_log=entries)
    doc = result.to_json(args.service_level, args.short_abandon)
    if args.json:
        json.dump(doc, sys.stdout, ensure_ascii=False, indent=1 if args.pretty else None)
        sys.stdout.write("\n")
        return 0
    _print_table(doc)
    return 0


def _print_table(doc: dict[str, object]) -> None:
    calls = doc["calls"]
    assert isinstance(calls, list)
    header = (
        f"{'linkedid':<20} {'dir':<8} {'caller':<16} {'queue':<10} {'outcome':<20} {'agent':<10} "
        f"{'wait':>6} {'talk':>6} {'hangup':<7}"
    )
    print(header)
    for c in calls:
        print(
            f"{c['linkedid']:<20} {c['direction']:<8} {c['caller_e164'] or c['caller_raw'] or '-'!s:<16} "
            f"{c['queue'] or '-'!s:<10} {c['outcome']:<20} {c['agent'] or '-'!s:<10} "
            f"{_num(c['wait_s']):>6} {_num(c['talk_s']):>6} {c['hangup_by']:<7}"
        )
    stats = doc["stats"]
    assert isinstance(stats, dict)
    print()
    print(f"{'queue':<12} {'presented':>9} {'answered':>9} {'abandoned':>9} {'timed_out':>9} {'QS':>6}")
    for queue, c in stats["queues"].items():
        qs = "-" if c["qs"] is None else f"{c['qs'] * 100:.0f}%"
        counts = f"{c['presented']:>9} {c['answered']:>9} {c['abandoned']:>9} {c['timed_out']:>9}"
        print(f"{queue:<12} {counts} {qs:>6}")


def _num(value: object) -> str:
    return "-" if value is None else f"{float(value):.1f}"  # type: ignore[arg-type]


def _serve(args: argparse.Namespace) -> int:
    import errno

    from cti.app import run_daemon

    settings = load_settings(args.config)
    try:
        code: int = run_daemon(settings)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            print(
                f"cti serve: {settings.web.host}:{settings.web.port} is already in use (another cti?); "
                "choose another with [web] port or CTI_WEB_PORT",
                file=sys.stderr,
            )
            return 1
        print(f"cti serve: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return code


def _db_upgrade(args: argparse.Namespace) -> int:
    from cti.db.migrate import upgrade

    settings = load_settings(args.config)
    upgrade(args.url or settings.database.url)
    return 0


def _customers_import(args: argparse.Namespace) -> int:
    from cti.directory.commands import run_import

    settings = load_settings(args.config)
    return run_import(
        args.file,
        url=args.url or settings.database.url,
        region=args.region or settings.directory.region,
        dry_run=args.dry_run,
        errors_path=args.errors,
    )


def _customers_lookup(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from cti.directory.commands import run_lookup

    settings = load_settings(args.config)
    directory = replace(settings.directory, region=args.region or settings.directory.region)
    return run_lookup(
        args.number, url=args.url or settings.database.url, settings=directory, as_json=args.json
    )


def _stats(args: argparse.Namespace) -> int:
    from cti.stats.commands import run

    return run(args, load_settings(args.config))


def _add_stats(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from cti.stats.commands import add_parser

    add_parser(sub)
    sub.choices["stats"].set_defaults(func=_stats)


def _add_customers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    customers = sub.add_parser("customers", help="the customer directory")
    customers_sub = customers.add_subparsers(dest="customers_command", required=True)
    imp = customers_sub.add_parser(
        "import", help="import customers from a CSV export (idempotent; one transaction)"
    )
    imp.add_argument("file", help="CSV with a header row: name, phone (required), account, address, ...")
    imp.add_argument("--region", help="region for national numbers, e.g. FR or MA (default: settings)")
    imp.add_argument("--dry-run", action="store_true", help="check and count, write nothing")
    imp.add_argument("--errors", metavar="FILE", help="write the rejected rows (line, reason, row) as CSV")
    imp.add_argument("--config")
    imp.add_argument("--url", help="database URL (default: from settings)")
    imp.set_defaults(func=_customers_import)
    look = customers_sub.add_parser("lookup", help="look a caller number up as a screen pop would")
    look.add_argument("number")
    look.add_argument("--region", help="region for national numbers (default: settings)")
    look.add_argument("--json", action="store_true", help="print the pop's LookupResult JSON")
    look.add_argument("--config")
    look.add_argument("--url", help="database URL (default: from settings)")
    look.set_defaults(func=_customers_lookup)


def _hours_check(args: argparse.Namespace) -> int:
    from cti.dialer.commands import run_hours_check

    return run_hours_check(
        args.number,
        at=args.at,
        rules=args.rules,
        region=args.region or load_settings(args.config).dialer.region,
        timezone=args.timezone,
        subdivision=args.subdivision,
        consent=args.consent,
        countries=args.countries,
        allow_numbers=args.allow_numbers,
        fallback=args.fallback,
        as_json=args.json,
    )


_WHEN = "today, yesterday, tomorrow, a date (2026-03-02) or ISO 8601 (2026-03-02T10:30, +01:00...)"


def _add_hours(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    hours = sub.add_parser(
        "hours",
        help="legal calling hours of the outbound dialer",
        description="The calling-hours rules the dialer applies (docs/dialer.md).",
    )
    hours_sub = hours.add_subparsers(dest="hours_command", required=True, metavar="COMMAND")
    check = hours_sub.add_parser(
        "check",
        help="may NUMBER be called at that instant, and if not, from when?",
        description="Judge NUMBER as a campaign with these rules would: the verdict, the rule that "
        "decided, the callee's local time and, when it may not be called, from when it may. "
        "Exit status: 0 it may be called, 1 it may not, 2 bad input.",
    )
    check.add_argument("number", help="the number: E.164 (+33612345678) or national in --region")
    check.add_argument(
        "--at", metavar="WHEN", help=f"the instant to judge (default: now): {_WHEN}; no zone = this machine's"
    )
    check.add_argument(
        "--rules", default="fr", help="rule set: fr, ma, us, ca, auto (the number's country's) or a TOML file"
    )
    check.add_argument("--region", help="region of national numbers (default: [dialer] region, FR)")
    check.add_argument("--timezone", help="the contact's own time zone (overrides the number's)")
    check.add_argument("--subdivision", help="holiday subdivision, e.g. 57, 67, 68 for Alsace-Moselle")
    check.add_argument(
        "--consent", action="store_true", help="the consumer consented to calls outside the hours"
    )
    _scope_options(check)
    check.add_argument("--json", action="store_true", help="print the decision as JSON (for scripts)")
    check.add_argument("--config", help="settings file (default: $CTI_CONFIG, ./cti.toml, /etc/cti/cti.toml)")
    check.set_defaults(func=_hours_check)


def _scope_options(parser: argparse.ArgumentParser) -> None:
    """The countries and number types a campaign calls (docs/dialer.md, "Territories")."""
    parser.add_argument(
        "--countries", help="countries called, e.g. FR,MA (default: the rule set's; FR includes overseas)"
    )
    parser.add_argument(
        "--allow-numbers", help="special number types called anyway, e.g. toll_free (default: none)"
    )
    parser.add_argument("--fallback", help="auto: rule set for countries without one (default: refuse)")


def _campaign(args: argparse.Namespace) -> int:
    from cti.dialer import commands as dialer
    from cti.dialer.campaigns import CampaignError, check_server

    settings = load_settings(args.config)
    url = args.url or settings.database.url
    what = args.campaign_command
    as_json = args.json
    try:
        if what in ("create", "update"):
            run = dialer.run_campaign_create if what == "create" else dialer.run_campaign_update
            fields = dialer.campaign_fields(args)
            check_server(fields.get("server"), [server.name for server in settings.asterisk])
            return run(args.name, fields, url=url, as_json=as_json)
        at = dialer.parse_instant(args.at) if what == "why" else None
    except (CampaignError, ValueError) as exc:
        print(f"cti campaign {what}: {exc}", file=sys.stderr)
        return 2
    if what in ("start", "pause", "stop"):
        return dialer.run_campaign_state(args.name, what, url=url, as_json=as_json)
    if what == "list":
        return dialer.run_campaign_list(url=url, as_json=as_json)
    if what == "show":
        drop_after_s = settings.dialer.abandon_after_s
        return dialer.run_campaign_show(args.name, url=url, drop_after_s=drop_after_s, as_json=as_json)
    if what == "why":
        return dialer.run_campaign_why(
            args.name, url=url, code=args.code, limit=args.limit, at=at, as_json=as_json
        )
    if what == "dnc":
        region = args.region or settings.dialer.region
        return dialer.run_dnc_import(
            args.file, campaign=args.campaign, region=region, url=url, reason=args.reason, as_json=as_json
        )
    return dialer.run_campaign_import(
        args.file,
        campaign=args.campaign,
        url=url,
        dry_run=args.dry_run,
        errors_path=args.errors,
        as_json=as_json,
    )


def _campaign_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--queue", help="Asterisk queue the answered calls join (default: outbound)")
    parser.add_argument(
        "--agent", action="append", help="member interface of the agent group, e.g. PJSIP/1001; repeatable"
    )
    parser.add_argument(
        "--mode", choices=("preview", "progressive", "predictive"), help="default: progressive"
    )
    parser.add_argument("--caller-id", help="caller ID presented to the callee")
    parser.add_argument(
        "--rules", help="calling-hours rule set: fr (default), ma, us, ca, auto or a TOML file"
    )
    _scope_options(parser)
    parser.add_argument("--region", help="region of national numbers in the CSV files (default: FR)")
    parser.add_argument("--principal", help="on whose behalf we call: caps per consumer span their campaigns")
    parser.add_argument("--server", help="the [[asterisk]] server it dials on (default: the first)")
    parser.add_argument("--max-attempts", type=int, help="attempts per contact at most (default: 4)")
    parser.add_argument("--priority", type=int, help="higher campaigns are served first (default: 0)")
    parser.add_argument("--ring-timeout", type=int, help="seconds a call rings (at least 15; default: 25)")
    parser.add_argument("--max-ratio", type=float, help="predictive: at most this many calls per free agent")
    parser.add_argument("--abandon-window", help="abandon-rate window: 30d (TCPA, default) or 24h (Ofcom)")
    parser.add_argument("--amd", action="store_true", help="detect answering machines (CTI_AMD=1)")
    parser.add_argument(
        "--retry",
        action="append",
        metavar="OUTCOME=DELAY:MAX",
        help="retry OUTCOME (busy, no_answer, ...) after DELAY, MAX times, e.g. busy=15m:3; repeatable",
    )
    parser.add_argument("--start", metavar="WHEN", help=f"when it may start dialling: {_WHEN}")
    parser.add_argument(
        "--stop", metavar="WHEN", help="when it stops; a day (tomorrow, 2026-03-31) means through that day"
    )


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


_WHY_EPILOG = """Each contact is judged from the database as the running dialer would judge it when it next
looks at it: calling hours in the callee's own zone and holidays, caps on calls per consumer,
the 72 h lock after an abandoned call, refusals, the countries and number types the campaign
calls, a retry's or a callback's own time, the campaign's start and stop. Contacts that are
done or blocked (do-not-call list, maximum attempts, a result) keep the reason they were
given. Reason codes: RULESET:window, RULESET:holiday, RULESET:cap, RULESET:abandon_lock,
RULESET:refusal_cooldown, RULESET:zone, RULESET:country, RULESET:number_type, retry:OUTCOME,
callback, dnc, max_attempts, max_OUTCOME, invalid_number, contacted or the agent's disposition,
due (may be called now, waits for an agent), campaign_draft/paused/stopped,
campaign_not_started, campaign_ended.
"""


def _add_campaign(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    import textwrap

    campaign = sub.add_parser(
        "campaign",
        help="outbound dialer campaigns",
        description="Outbound campaigns: create one, import its contacts, start it; `cti serve` dials. "
        "Output is for people; --json prints the JSON document scripts read (docs/dialer.md).",
    )
    campaign_sub = campaign.add_subparsers(dest="campaign_command", required=True, metavar="COMMAND")

    def command(name: str, text: str, description: str, epilog: str | None = None) -> argparse.ArgumentParser:
        return campaign_sub.add_parser(
            name,
            help=text,
            # A raw epilog (a list of codes) makes the description raw too: wrapped here.
            description=textwrap.fill(description, 88) if epilog else description,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter if epilog else argparse.HelpFormatter,
        )

    named: list[argparse.ArgumentParser] = []
    create = command(
        "create",
        "create a campaign (a draft: nothing is dialled before start)",
        "Create a campaign in the draft state; the options left out take their defaults.",
    )
    update = command(
        "update", "change a campaign's settings", "Change the settings given; the others are kept."
    )
    for p in (create, update):
        p.add_argument("name", help="the campaign's name (1 to 80 characters, no commas)")
        _campaign_options(p)
        named.append(p)
    for action, text, description in (
        ("start", "start or resume dialling", "The running daemon dials from now, or from --start."),
        ("pause", "stop dialling for now", "Calls in progress go on; start resumes the campaign."),
        ("stop", "stop the campaign", "Calls in progress go on; start would dial the contacts left."),
    ):
        p = command(action, text, description)
        p.add_argument("name", help="the campaign")
        named.append(p)
    show = command(
        "show",
        "a campaign's settings, contacts by status and figures",
        "A campaign's settings, its contacts by status, and its figures: calls placed and answered "
        "(contact rate), taken by an agent, abandoned and late connects (the drop rate the pacing "
        "keeps under the limit), argued and converted contacts, outcomes and dispositions.",
    )
    show.add_argument("name", help="the campaign")
    named.append(show)
    why = command(
        "why",
        "why contacts are not being dialled, and from when they may be",
        "Every contact of the campaign that is not in a call: why it is not being dialled and from "
        "when it may be. No daemon need be running.",
        _WHY_EPILOG,
    )
    why.add_argument("name", help="the campaign")
    why.add_argument(
        "--code", help="only this reason: a code (dnc, max_attempts, fr:window) or a rule set (fr, us)"
    )
    why.add_argument(
        "--limit", type=_positive, default=100, help="at most this many contacts, in contact order (100)"
    )
    why.add_argument("--at", metavar="WHEN", help=f"judge at this instant (default: now): {_WHEN}")
    named.append(why)
    listing = command("list", "list the campaigns", "The campaigns, their state and their contacts.")
    imp = command(
        "import",
        "import contacts from a CSV file (all rows or none)",
        "Import a CSV contact list into a campaign, in one transaction. A row needs a phone column "
        "(telephone, phone, ...); timezone, country, subdivision, consent and priority columns are "
        "read, other columns are kept as contact fields. Exit status: 0 every row imported, 1 some "
        "rows rejected (the others imported), 2 unusable file or campaign, 3 database failure.",
    )
    imp.add_argument("file", help="the CSV file (; , or tab delimited, UTF-8 or Windows-1252)")
    imp.add_argument("--campaign", required=True, help="the campaign the contacts join")
    imp.add_argument("--dry-run", action="store_true", help="check everything, write nothing")
    imp.add_argument("--errors", metavar="FILE", help="write the rejected rows (line, reason, row) as CSV")
    dnc = command(
        "dnc",
        "add a file of numbers to a do-not-call list",
        "Add numbers to the global do-not-call list, or to a campaign's own. Contacts with these "
        "numbers stop being dialled at once; later imports reject them.",
    )
    dnc.add_argument("file", help="one number per line (or a CSV whose first column is the number)")
    dnc.add_argument("--campaign", help="the campaign's own list (default: the global list)")
    dnc.add_argument("--region", help="region of national numbers (default: [dialer] region)")
    dnc.add_argument("--reason", help="kept beside each number, e.g. 'Bloctel 2026-03'")
    for p in [*named, listing, imp, dnc]:
        p.add_argument("--json", action="store_true", help="print the JSON document instead (for scripts)")
        p.add_argument("--config", help="settings file (default: $CTI_CONFIG, ./cti.toml, /etc/cti/cti.toml)")
        p.add_argument("--url", help="database URL (default: from settings)")
        p.set_defaults(func=_campaign)


def _sim(args: argparse.Namespace) -> int:
    from cti.sim.cli import main as run_sim

    return run_sim(args)


def _demo(args: argparse.Namespace) -> int:
    import asyncio

    from cti.demo import DemoOptions, run

    options = DemoOptions(args.host, args.port, args.agents, args.calls_per_minute, args.seed, args.db)
    try:
        asyncio.run(run(options))
    except OSError as exc:
        print(f"cti demo: {exc} (is port {args.port} taken? try --port 8090)", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cti", description="CTI middleware for Asterisk call centres")
    parser.add_argument("--version", action="version", version=f"cti {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    replay = sub.add_parser("replay", help="feed recorded raw AMI traffic through the tracker")
    replay.add_argument(
        "files", nargs="+", help="raw AMI transcripts; several files = successive connections"
    )
    replay.add_argument("--json", action="store_true", help='print {"calls": [...], "stats": {...}}')
    replay.add_argument("--pretty", action="store_true", help="indent the JSON")
    replay.add_argument("--service-level", type=float, default=20.0, metavar="SECONDS")
    replay.add_argument("--short-abandon", type=float, default=5.0, metavar="SECONDS")
    replay.add_argument("--queue-log", help="Asterisk queue_log to fill gaps between connections")
    replay.add_argument("--server", default="default", help="server name stamped on the records")
    replay.add_argument("--region", default="FR", help="default region for national caller numbers")
    replay.set_defaults(func=_replay)

    serve = sub.add_parser("serve", help="run the daemon against the configured Asterisk server(s)")
    serve.add_argument("--config", help="settings file (default: $CTI_CONFIG, ./cti.toml, /etc/cti/cti.toml)")
    serve.set_defaults(func=_serve)

    from cti.sim.cli import add_arguments as add_sim_arguments

    sim = sub.add_parser("sim", help="run a simulated Asterisk call centre (AMI server) for tests and demos")
    add_sim_arguments(sim)
    sim.set_defaults(func=_sim)

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_sub.add_parser("upgrade", help="apply migrations up to the latest schema")
    upgrade.add_argument("--config")
    upgrade.add_argument("--url", help="database URL (default: from settings)")
    upgrade.set_defaults(func=_db_upgrade)

    demo = sub.add_parser(
        "demo", help="the daemon against a simulated PBX, with sample customers and live calls"
    )
    demo.add_argument("--host", default="127.0.0.1", help="where the desktop is served")
    demo.add_argument("--port", type=int, default=8080)
    demo.add_argument("--agents", type=int, default=6)
    demo.add_argument("--calls-per-minute", type=float, default=6.0)
    demo.add_argument("--seed", type=int, default=1)
    demo.add_argument("--db", help="SQLite file (default: a new one in a temporary folder)")
    demo.set_defaults(func=_demo)

    from cti.web.user_commands import add_arguments as add_user_arguments

    add_user_arguments(sub)
    _add_stats(sub)
    _add_customers(sub)
    _add_hours(sub)
    _add_campaign(sub)
    from cti.config_commands import add_arguments as add_config_arguments

    add_config_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if argv is None:
        from cti.logs import configure_logging

        # As a command: results on stdout, logs on stderr, quietly (serve reconfigures). Callers
        # that pass argv (tests, embedding code) keep their own logging set-up.
        configure_logging("warning", "auto")
    try:
        code: int = args.func(args)
        sys.stdout.flush()
    except ConfigError as exc:
        print(f"cti: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `cti replay ... | head`: the reader has gone; what is left is nobody's business. Point
        # stdout at /dev/null so the interpreter's own final flush fails silently too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
