"""`cti config check` and `cti config show`: what the daemon would run with, before it runs.

`show` prints the effective settings as TOML (secrets masked), each value with where it came
from (the file, a CTI_* variable, or the default); `check` reads them, says what is unwise for
production, and with --connect logs in to each Asterisk server and opens the database.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TextIO

from cti.config import (
    SECTIONS,
    AsteriskServer,
    Secret,
    Settings,
    load_settings,
    read_settings_file,
    redact_url,
    settings_file,
)

MASK = "********"
CONFIG_HELP = "settings file (default: $CTI_CONFIG, ./cti.toml, /etc/cti/cti.toml)"


def _plain(value: Any) -> Any:
    if isinstance(value, Secret):
        return MASK if value else ""
    if isinstance(value, tuple):
        return list(value)
    return value


def _server_env(server: AsteriskServer, index: int, name: str, env: Mapping[str, str]) -> str | None:
    if index == 0 and f"CTI_AMI_{name.upper()}" in env:
        return f"CTI_AMI_{name.upper()}"
    if name == "secret":
        var = "CTI_AMI_" + "".join(c if c.isalnum() else "_" for c in server.name).upper() + "_SECRET"
        if var in env:
            return var
    return None


def describe(settings: Settings, path: Path | None, env: Mapping[str, str]) -> dict[str, Any]:
    """{section: {name: {"value": ..., "from": "file" | "default" | "CTI_..."}}}; secrets masked."""
    raw = read_settings_file(path)
    doc: dict[str, Any] = {}
    servers = raw.get("asterisk", [])
    servers = [servers] if isinstance(servers, Mapping) else servers
    doc["asterisk"] = []
    for i, server in enumerate(settings.asterisk):
        in_file = servers[i] if i < len(servers) else {}
        entry: dict[str, Any] = {}
        for f in fields(AsteriskServer):
            source = _server_env(server, i, f.name, env) or ("file" if f.name in in_file else "default")
            value = _plain(getattr(server, f.name))
            if f.name == "records_url":
                value = redact_url(value)  # a password may be in it
            entry[f.name] = {"value": value, "from": source}
        doc["asterisk"].append(entry)
    for section, cls in SECTIONS.items():
        current, in_file = getattr(settings, section), raw.get(section, {})
        entries: dict[str, Any] = {}
        for f in fields(cls):
            var = f"CTI_{section.upper()}_{f.name.upper()}"
            source = var if var in env else ("file" if f.name in in_file else "default")
            value = _plain(getattr(current, f.name))
            if section == "database" and f.name == "url":
                value = redact_url(value)
            entries[f.name] = {"value": value, "from": source}
        doc[section] = entries
    return doc


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() and key.isascii() else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(f"{_toml_key(str(k))} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    raise TypeError(f"no TOML for {value!r}")


def _toml_lines(entries: Mapping[str, Any]) -> list[str]:
    lines = []
    for name, entry in entries.items():
        value, source = entry["value"], entry["from"]
        note = "" if source == "default" else f"  # {source}"
        if value is None:
            lines.append(f"# {name} = (not set){note}")
        else:
            lines.append(f"{name} = {_toml_value(value)}{note}")
    return lines


def as_toml(doc: Mapping[str, Any], path: Path | None) -> str:
    lines = [f"# Effective settings: {path or 'no file, defaults'} and CTI_* variables. Secrets masked."]
    for server in doc["asterisk"]:
        lines += ["", "[[asterisk]]", *_toml_lines(server)]
    for section in SECTIONS:
        lines += ["", f"[{section}]", *_toml_lines(doc[section])]
    return "\n".join(lines) + "\n"


def run_show(config: str | None, *, as_json: bool, env: Mapping[str, str], out: TextIO) -> int:
    settings = load_settings(config, env)
    path = settings_file(config, env)
    doc = describe(settings, path, env)
    if as_json:
        out.write(json.dumps({"file": str(path) if path else None, "settings": doc}, indent=2) + "\n")
    else:
        out.write(as_toml(doc, path))
    return 0


@dataclass(frozen=True)
class Finding:
    level: str  # "warning": works, but unwise in production; "error": will not work
    setting: str
    text: str


def _loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def review(settings: Settings) -> list[Finding]:
    """What a production admin should know about these settings (they are valid already)."""
    found: list[Finding] = []
    for server in settings.asterisk:
        if not server.secret:
            found.append(Finding("warning", f"asterisk[{server.name}].secret", "empty: AMI login will fail"))
        if server.trace_dir:
            found.append(
                Finding(
                    "warning",
                    f"asterisk[{server.name}].trace_dir",
                    f"{server.trace_dir}: every AMI byte is kept there (callers' numbers: personal "
                    "data); turn it off once the bug report has its files",
                )
            )
        if server.queue_log is None:
            found.append(
                Finding(
                    "warning",
                    f"asterisk[{server.name}].queue_log",
                    "not set: outcomes of calls ended during an AMI outage are guessed, not read back",
                )
            )
    web = settings.web
    if not web.secret:
        found.append(Finding("warning", "web.secret", "empty: every desktop is logged out at each restart"))
    if not _loopback(web.host) and not web.behind_tls_proxy:
        found.append(
            Finding(
                "warning",
                "web.host",
                f"{web.host} is reachable from the network without TLS: passwords and sessions travel "
                "in clear (docs/security.md, behind_tls_proxy)",
            )
        )
    if settings.agi.host and not _loopback(settings.agi.host):
        found.append(
            Finding(
                "warning",
                "agi.host",
                f"{settings.agi.host}: FastAGI has no authentication; only the PBX may reach this port",
            )
        )
    if settings.dialer.clock_start or settings.dialer.clock_speed != 1.0:
        found.append(
            Finding("warning", "dialer.clock_start", "a demo clock: calling hours follow a fake time")
        )
    found += _ha_review(settings)
    found += _bus_review(settings)
    url = settings.database.url
    if url.startswith("sqlite") and ":///" in url and not url.split(":///", 1)[1].startswith("/"):
        found.append(
            Finding(
                "warning",
                "database.url",
                f"a relative SQLite path: {Path(url.split(':///', 1)[1]).resolve()} from this directory",
            )
        )
    return found


def _ha_review(settings: Settings) -> list[Finding]:
    """[ha] (docs/scale-out.md, "Stream ownership"): what several nodes need."""
    if not settings.ha.enabled:
        return []
    found = []
    if not settings.database.url.startswith("postgres"):
        found.append(Finding("error", "ha.enabled", "needs PostgreSQL: cti serve refuses to start on SQLite"))
    for server in settings.asterisk:
        if not server.records_url:
            found.append(
                Finding(
                    "warning",
                    f"asterisk[{server.name}].records_url",
                    "not set: calls that begin and end between an owner's death and the takeover "
                    "are not recorded",
                )
            )
        if len(settings.asterisk) > 1 and not server.phones:
            found.append(
                Finding(
                    "warning",
                    f"asterisk[{server.name}].phones",
                    "empty with several servers: a node that owns none of their streams cannot tell "
                    "which one an agent's phone is on (409 unknown-server)",
                )
            )
    return found


def _bus_review(settings: Settings) -> list[Finding]:
    """[bus] nats_url (docs/scale-out.md, "The bus"): what nodes that share desktops need."""
    if not settings.bus.nats_url:
        return []
    found = []
    if not settings.web.secret:
        found.append(
            Finding("warning", "web.secret", "empty with [bus]: each node refuses the sessions of the others")
        )
    if not settings.database.url.startswith("postgres"):
        found.append(
            Finding(
                "warning",
                "database.url",
                "not PostgreSQL with [bus]: nodes share no users, sessions, tickets",
            )
        )
    if not settings.bus.node and not settings.ha.node:
        found.append(
            Finding(
                "warning",
                "bus.node",
                "empty: the host name names its durable consumer; two nodes on one host would share it",
            )
        )
    return found


async def _connect_checks(settings: Settings) -> list[Finding]:
    from cti.ami.probe import ProbeError, probe

    found: list[Finding] = []
    for server in settings.asterisk:
        where = f"asterisk[{server.name}]"
        try:
            result = await probe(server)
        except ProbeError as exc:
            found.append(Finding("error", where, str(exc)))
        else:
            version = f", Asterisk {result.version}" if result.version else ""
            found.append(Finding("ok", where, f"logged in as {server.username!r} ({result.banner}{version})"))
        if server.records_url:
            found.append(await _records_check(server.name, server.records_url, settings.recovery.timeout_s))
    found.append(await _database_check(settings.database.url))
    return found


async def _records_check(server: str, url: str, timeout_s: float) -> Finding:
    """Asterisk's CEL and queue_log in PostgreSQL (`records_url`): readable, and written to."""
    import asyncpg  # type: ignore[import-untyped]

    from cti.calls.cel_source import AsteriskRecords

    where = f"asterisk[{server}].records_url"
    source = AsteriskRecords(url, timeout_s)
    try:
        cel, queue_log = await source.probe()
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Finding("error", where, f"cannot read {source.display_url}: {reason}")
    if cel is None:
        return Finding(
            "warning",
            where,
            f"{source.display_url}: no CEL row yet; is Asterisk writing them? (docs/asterisk.md,"
            ' "The queue_log and CEL in PostgreSQL")',
        )
    last_line = _iso(queue_log) if queue_log is not None else "none"
    return Finding("ok", where, f"{source.display_url}: latest CEL row {_iso(cel)}, queue_log {last_line}")


def _iso(epoch: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def _missing_sqlite_file(url: str) -> Path | None:
    # Opening a missing SQLite file would create an empty one: say so instead.
    if not (url.startswith("sqlite") and ":///" in url):
        return None
    name = url.split(":///", 1)[1].split("?", 1)[0]
    if not name or name == ":memory:" or Path(name).is_file():
        return None
    return Path(name).resolve()


async def _database_check(url: str) -> Finding:
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.pool import NullPool

    from cti.db.engine import create_engine
    from cti.db.migrate import current_revision, head_revision

    missing = _missing_sqlite_file(url)
    if missing:
        return Finding("error", "database.url", f"{missing} does not exist: run cti db upgrade")
    engine = create_engine(url, poolclass=NullPool)
    try:
        async with asyncio.timeout(10):
            current = await current_revision(engine)
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0] or type(exc).__name__
        return Finding("error", "database.url", f"cannot open {redact_url(url)}: {reason}")
    finally:
        await engine.dispose()
    head = head_revision()
    if current != head:
        return Finding(
            "error", "database.url", f"schema at {current}, this version needs {head}: cti db upgrade"
        )
    return Finding("ok", "database.url", f"{redact_url(url)}, schema {head}")


def run_check(
    config: str | None, *, connect: bool, as_json: bool, env: Mapping[str, str], out: TextIO, err: TextIO
) -> int:
    """0: usable (warnings aside); 1: --connect found a server or the database unusable.
    Settings that cannot be read at all raise ConfigError (exit 2, one line naming the setting)."""
    settings = load_settings(config, env)
    path = settings_file(config, env)
    findings = review(settings)
    if connect:
        findings += asyncio.run(_connect_checks(settings))
    failed = any(f.level == "error" for f in findings)
    if as_json:
        doc = {
            "file": str(path) if path else None,
            "ok": not failed,
            "findings": [{"level": f.level, "setting": f.setting, "text": f.text} for f in findings],
        }
        out.write(json.dumps(doc, indent=2) + "\n")
        return 1 if failed else 0
    out.write(f"settings: {path or 'no file (defaults)'} and CTI_* variables: readable\n")
    for f in findings:
        out.write(f"{f.level}: {f.setting}: {f.text}\n")
    if failed:
        err.write("cti config check: not usable as is (see the errors above)\n")
    return 1 if failed else 0


def add_arguments(sub: Any) -> None:
    config = sub.add_parser("config", help="check or show the settings the daemon would use")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser(
        "check", help="read the settings, list what is unwise; exit 0 usable, 1 unusable, 2 unreadable"
    )
    check.add_argument(
        "--connect", action="store_true", help="also log in to each AMI server and open the database"
    )
    check.add_argument("--json", action="store_true")
    check.add_argument("--config", help=CONFIG_HELP)
    check.set_defaults(func=_check)
    show = config_sub.add_parser(
        "show", help="print the effective settings as TOML, with where each came from"
    )
    show.add_argument("--json", action="store_true")
    show.add_argument("--config", help=CONFIG_HELP)
    show.set_defaults(func=_show)


def _check(args: Any) -> int:
    import os

    return run_check(
        args.config, connect=args.connect, as_json=args.json, env=os.environ, out=sys.stdout, err=sys.stderr
    )


def _show(args: Any) -> int:
    import os

    return run_show(args.config, as_json=args.json, env=os.environ, out=sys.stdout)
