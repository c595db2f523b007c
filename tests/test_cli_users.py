"""`cti users list|passwd|disable|enable|remove` as an admin runs them (a separate process on the
same database) while desktops are logged in to a running site over real HTTP and WebSockets."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import aiohttp

from test_security_login import PASSWORD, Site, SiteFactory, make_site_fixture  # noqa: F401 - the fixture
from test_security_sessions import _bearer, _closed_with, _me


def cti(tmp_path: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTI_")}
    env["CTI_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'cti.db'}"
    return subprocess.run(
        [sys.executable, "-c", "import sys; from cti.cli import main; sys.exit(main())", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )


async def acti(tmp_path: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    # In a thread: the site under test runs on this event loop meanwhile.
    return await asyncio.to_thread(cti, tmp_path, *args, stdin=stdin)


async def test_list_shows_every_user_their_state_and_sessions(make_site: SiteFactory, tmp_path: Path) -> None:
    site: Site = await make_site()
    async with aiohttp.ClientSession() as s:
        await site.token(s, "alice")
        await site.token(s, "alice")
    listed = await acti(tmp_path, "users", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    users = {u["username"]: u for u in json.loads(listed.stdout)}
    assert set(users) == {"alice", "bob", "sam"}
    assert users["alice"]["role"] == "agent" and users["alice"]["sessions"] == 2
    assert users["alice"]["interfaces"] == ["Local/agent1@agents/n"] and users["alice"]["last_login"]
    assert users["sam"] == users["sam"] | {
        "role": "supervisor",
        "sessions": 0,
        "last_login": None,
        "active": True,
    }
    table = (await acti(tmp_path, "users", "list")).stdout.splitlines()
    assert table[0].split() == [
        "USER",
        "ROLE",
        "NAME",
        "STATE",
        "SESSIONS",
        "LAST",
        "LOGIN",
        "INTERFACES",
        "/",
        "DEVICES",
    ]
    alice = next(line for line in table if line.startswith("alice"))
    assert (
        alice.split()[:5] == ["alice", "agent", "Alice", "active", "2"] and "Local/agent1@agents/n" in alice
    )
    assert "never" in next(line for line in table if line.startswith("sam"))
    only = json.loads((await acti(tmp_path, "users", "list", "--role", "supervisor", "--json")).stdout)
    assert [u["username"] for u in only] == ["sam"]


async def test_passwd_ends_the_open_desktop_and_the_new_password_works(
    make_site: SiteFactory, tmp_path: Path
) -> None:
    site = await make_site(session_recheck_s=0.2)
    async with aiohttp.ClientSession() as s:
        token = await site.token(s, "alice")
        ws = await s.ws_connect(site.url("/ws"), headers=_bearer(token))
        await ws.receive_json(timeout=5)
        done = await acti(tmp_path, "users", "passwd", "alice", "--password-stdin", stdin="a brand new one\n")
        assert done.returncode == 0, done.stderr
        assert done.stdout == "password of alice changed; their sessions are ended\n"
        assert await _closed_with(ws) == 4001
        assert await _me(site, _bearer(token)) == 401
        assert (await site.login(s, "alice"))[0] == 401
        assert (await site.login(s, "alice", "a brand new one"))[0] == 200


async def test_disable_then_enable(make_site: SiteFactory, tmp_path: Path) -> None:
    site = await make_site(session_recheck_s=0.2)
    async with aiohttp.ClientSession() as s:
        token = await site.token(s, "bob")
        done = await acti(tmp_path, "users", "disable", "bob")
        assert done.returncode == 0 and "disabled" in done.stdout
        await asyncio.sleep(0.3)
        assert await _me(site, _bearer(token)) == 401
        assert (await site.login(s, "bob"))[0] == 401
        listed = json.loads((await acti(tmp_path, "users", "list", "--json")).stdout)
        assert next(u for u in listed if u["username"] == "bob")["active"] is False
        assert (await acti(tmp_path, "users", "enable", "bob")).returncode == 0
        assert (await site.login(s, "bob"))[0] == 200
        assert await _me(site, _bearer(token)) == 401  # the old session stays ended


async def test_remove_asks_for_confirmation_then_removes(make_site: SiteFactory, tmp_path: Path) -> None:
    site = await make_site(session_recheck_s=0.2)
    async with aiohttp.ClientSession() as s:
        token = await site.token(s, "sam")
        unconfirmed = await acti(tmp_path, "users", "remove", "sam")
        assert unconfirmed.returncode == 2
        assert unconfirmed.stderr == (
            "cti users remove: removing is final: confirm with --yes (or `cti users disable`)\n"
        )
        assert await _me(site, _bearer(token)) == 200  # nothing happened
        removed = await acti(tmp_path, "users", "remove", "sam", "--yes")
        assert removed.returncode == 0 and removed.stdout == "user sam removed\n"
        await asyncio.sleep(0.3)
        assert await _me(site, _bearer(token)) == 401
        assert (await site.login(s, "sam"))[0] == 401
    names = [u["username"] for u in json.loads((await acti(tmp_path, "users", "list", "--json")).stdout)]
    assert names == ["alice", "bob"]
    again = await acti(tmp_path, "users", "remove", "sam", "--yes")
    assert (again.returncode, again.stderr) == (2, "cti users remove: no user 'sam' (cti users list)\n")


async def test_mistakes_get_one_line_and_change_nothing(make_site: SiteFactory, tmp_path: Path) -> None:
    site = await make_site()
    for args, stdin, message in (
        (("passwd", "nobody", "--password-stdin"), "long enough pw\n", "cti users passwd: no user 'nobody'"),
        (("disable", "nobody"), "", "cti users disable: no user 'nobody'"),
        (("passwd", "alice", "--password-stdin"), "short\n", "at least 8 characters"),
        (("passwd", "alice"), "", "no terminal to ask the password on; pipe it in with --password-stdin"),
        (("add", "zoe", "--password-stdin"), "\n", "at least 8 characters"),
    ):
        done = await acti(tmp_path, "users", *args, stdin=stdin)
        assert done.returncode == 2, (args, done.stdout)
        assert message in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
        assert "Traceback" not in done.stderr
    async with aiohttp.ClientSession() as s:
        assert (await site.login(s, "alice", PASSWORD))[0] == 200
    names = [u["username"] for u in json.loads((await acti(tmp_path, "users", "list", "--json")).stdout)]
    assert names == ["alice", "bob", "sam"]


def test_list_on_a_new_install_says_how_to_begin(tmp_path: Path) -> None:
    done = cti(tmp_path, "users", "list")
    assert done.returncode == 0 and done.stdout == ""
    assert done.stderr == "no users yet: cti users add NAME --role admin\n"
