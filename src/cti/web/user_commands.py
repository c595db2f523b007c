"""`cti users add|list|passwd|disable|enable|remove`: the desktop's users, from the admin's shell.

Every change that takes a user's rights away (a new password, disabling, removing) ends their
sessions in the database: a running daemon refuses them within `web.session_recheck_s`, its own
desktops are closed at the next check, and nobody needs to restart anything.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from cti.config import Settings, load_settings
from cti.web.roles import ROLES

if TYPE_CHECKING:
    from cti.web.auth import UserListing, UserStore

T = TypeVar("T")
MIN_PASSWORD = 8


def _fail(command: str, text: str) -> int:
    print(f"cti users {command}: {text}", file=sys.stderr)
    return 2


def _read_password(command: str, username: str, from_stdin: bool) -> str | None:
    """The password from standard input (scripts) or asked twice on the terminal; None after
    printing why there is none."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif not sys.stdin.isatty():
        _fail(command, "no terminal to ask the password on; pipe it in with --password-stdin")
        return None
    else:
        try:
            password = getpass.getpass(f"password for {username}: ")
            again = getpass.getpass("the same again: ")
        except EOFError:
            _fail(command, "no password given")
            return None
        if again != password:
            _fail(command, "the two passwords differ; nothing changed")
            return None
    if len(password) < MIN_PASSWORD:
        _fail(command, f"the password must have at least {MIN_PASSWORD} characters")
        return None
    return password


def _with_store(settings: Settings, work: Callable[[UserStore], Awaitable[T]]) -> T:
    from cti.db.engine import create_engine
    from cti.db.migrate import upgrade_async
    from cti.web.auth import UserStore

    async def run() -> T:
        engine = create_engine(settings.database.url)
        try:
            await upgrade_async(engine)  # a new install: `cti users add` comes before `cti serve`
            return await work(UserStore(engine))
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _add(args: argparse.Namespace) -> int:
    password = _read_password("add", args.username, args.password_stdin)
    if password is None:
        return 2
    settings = load_settings(args.config)
    _with_store(
        settings,
        lambda store: store.add(
            args.username, password, args.role, args.name, args.language, args.interface, args.device
        ),
    )
    print(f"user {args.username} ({args.role}) saved")
    return 0


def _passwd(args: argparse.Namespace) -> int:
    password = _read_password("passwd", args.username, args.password_stdin)
    if password is None:
        return 2
    if not _with_store(load_settings(args.config), lambda store: store.set_password(args.username, password)):
        return _fail("passwd", f"no user {args.username!r} (cti users list)")
    print(f"password of {args.username} changed; their sessions are ended")
    return 0


def _set_active(args: argparse.Namespace) -> int:
    active = args.users_command == "enable"
    if not _with_store(load_settings(args.config), lambda store: store.set_active(args.username, active)):
        return _fail(args.users_command, f"no user {args.username!r} (cti users list)")
    if active:
        print(f"user {args.username} enabled: they may log in again")
    else:
        print(f"user {args.username} disabled: their sessions are ended, they can't log in")
    return 0


def _remove(args: argparse.Namespace) -> int:
    if not args.yes:
        if not sys.stdin.isatty():
            return _fail("remove", "removing is final: confirm with --yes (or `cti users disable`)")
        try:
            answer = input(f"remove user {args.username} for good? (tickets and calls keep the name) [y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes", "o", "oui"):
            print("nothing removed")
            return 1
    if not _with_store(load_settings(args.config), lambda store: store.remove(args.username)):
        return _fail("remove", f"no user {args.username!r} (cti users list)")
    print(f"user {args.username} removed")
    return 0


def _when(instant: datetime | None) -> str:
    return instant.astimezone().strftime("%Y-%m-%d %H:%M") if instant else "never"


def listing_json(entry: UserListing) -> dict[str, Any]:
    p = entry.principal
    return {
        "username": p.username,
        "role": p.role,
        "name": p.display_name,
        "language": p.language,
        "active": entry.active,
        "interfaces": list(p.interfaces),
        "devices": list(p.devices),
        "sessions": entry.sessions,
        "last_login": entry.last_login.isoformat() if entry.last_login else None,
        "created_at": entry.created_at.isoformat() if entry.created_at else None,
    }


def listing_table(entries: list[UserListing]) -> str:
    header = ("USER", "ROLE", "NAME", "STATE", "SESSIONS", "LAST LOGIN", "INTERFACES / DEVICES")
    rows = [header]
    for entry in entries:
        p = entry.principal
        phones = sorted({*p.interfaces, *p.devices})
        rows.append(
            (
                p.username,
                p.role,
                p.display_name,
                "active" if entry.active else "disabled",
                str(entry.sessions),
                _when(entry.last_login),
                ", ".join(phones) or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1]
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _list(args: argparse.Namespace) -> int:
    entries = _with_store(load_settings(args.config), lambda store: store.listing())
    if args.role:
        entries = [e for e in entries if e.principal.role == args.role]
    if args.json:
        print(json.dumps([listing_json(e) for e in entries], indent=2, ensure_ascii=False))
    elif not entries:
        print("no users yet: cti users add NAME --role admin", file=sys.stderr)
    else:
        sys.stdout.write(listing_table(entries))
    return 0


CONFIG_HELP = "settings file (default: $CTI_CONFIG, ./cti.toml, /etc/cti/cti.toml)"


def add_arguments(sub: Any) -> None:
    users = sub.add_parser(
        "users", help="desktop and wallboard users: add, list, passwd, disable, enable, remove"
    )
    users_sub = users.add_subparsers(dest="users_command", required=True)

    add = users_sub.add_parser(
        "add", help="create a user, or update every field of one (their sessions then end)"
    )
    add.add_argument("username")
    add.add_argument("--role", choices=ROLES, default="agent", help="agent (default), supervisor, admin")
    add.add_argument("--name", help="display name (default: the username)")
    add.add_argument("--language", choices=("fr", "en"), default="fr", help="desktop language")
    add.add_argument(
        "--interface",
        action="append",
        default=[],
        help="queue-member interface as AMI names it (PJSIP/1001, Local/1001@agents); repeatable",
    )
    add.add_argument(
        "--device", action="append", default=[], help="phone device (e.g. PJSIP/1001); repeatable"
    )
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add.add_argument("--config", help=CONFIG_HELP)
    add.set_defaults(func=_add)

    listing = users_sub.add_parser("list", help="every user, with role, state, live sessions, last login")
    listing.add_argument("--role", choices=ROLES, help="only this role")
    listing.add_argument("--json", action="store_true", help="JSON for scripts")
    listing.add_argument("--config", help=CONFIG_HELP)
    listing.set_defaults(func=_list)

    passwd = users_sub.add_parser("passwd", help="set a user's password; their sessions end")
    passwd.add_argument("username")
    passwd.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    passwd.add_argument("--config", help=CONFIG_HELP)
    passwd.set_defaults(func=_passwd)

    for verb, text in (
        ("disable", "stop a user logging in; their sessions end (their history stays)"),
        ("enable", "let a disabled user log in again"),
    ):
        parser = users_sub.add_parser(verb, help=text)
        parser.add_argument("username")
        parser.add_argument("--config", help=CONFIG_HELP)
        parser.set_defaults(func=_set_active)

    remove = users_sub.add_parser(
        "remove", help="delete a user for good (tickets and calls keep their name); asks first"
    )
    remove.add_argument("username")
    remove.add_argument("--yes", action="store_true", help="do not ask (scripts)")
    remove.add_argument("--config", help=CONFIG_HELP)
    remove.set_defaults(func=_remove)
