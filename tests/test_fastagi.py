"""The FastAGI caller lookup, over real TCP on 127.0.0.1, with a client playing Asterisk 22's side
exactly as res/res_agi.c does: `agi_network: yes`, `agi_network_script`, the environment block
of setup_env line by line, an empty line, then one reply per command, commands split into words
by a copy of Asterisk's own parse_args. The directory is the daemon's own `CustomerDirectory`
over a real SQLite file and a throwaway PostgreSQL database.

The last part reproduces the faults of panoramisk 1.4's FastAGI server that made us write ours
(docs/asterisk.md, "Why not panoramisk's FastAGI server"), each next to what ours does instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from cti.agi import protocol
from cti.agi.lookup import CallerLookup, Outcome, decide, name_is_unknown, plan_variables, summary
from cti.agi.protocol import (
    AgiProtocolError,
    LineReader,
    LineTooLong,
    ReplyParser,
    parse_environment,
    quote,
    set_variable,
)
from cti.agi.server import AgiSession, FastAgiServer, ProblemLog, Route
from cti.config import AgiSettings, DatabaseSettings, Settings, WebSettings, load_settings
from cti.db.engine import create_engine
from cti.db.migrate import upgrade_async
from cti.directory.customer import CustomerFile, LookupResult
from cti.directory.lookup import CustomerDirectory
from cti.directory.numbers import normalize

PG_HOST = os.environ.get("CTI_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("CTI_TEST_PG_PORT", "5432"))
UNIQUEID = "1795390635.595"


# ----------------------------------------------------------------- Asterisk's side of FastAGI


def asterisk_parse_args(line: str) -> list[str]:
    """res_agi.c parse_args, transcribed: blanks split words, quotes group, a backslash makes the
    next character literal."""
    words: list[list[str]] = []
    quoted = escaped = False
    whitespace = True
    for ch in line:
        if ch == '"' and not escaped:
            quoted = not quoted
            if quoted and whitespace:
                words.append([])
                whitespace = False
            continue
        if ch in " \t" and not quoted and not escaped:
            whitespace = True
            continue
        if ch == "\\" and not escaped:
            escaped = True
            continue
        if whitespace:
            words.append([])
            whitespace = False
        words[-1].append(ch)
        escaped = False
    return ["".join(w) for w in words]


def environment(
    port: int,
    caller: str,
    name: str = "unknown",
    args: Sequence[str] = ("FR",),
    script: str = "lookup",
    uniqueid: str = UNIQUEID,
) -> list[bytes]:
    """What launch_netscript then setup_env write, one write per line, as Asterisk 22.10.1 does."""
    fields = [
        ("agi_network", "yes"),
        ("agi_network_script", script),
        ("agi_request", f"agi://127.0.0.1:{port}/{script}"),
        ("agi_channel", "PJSIP/trunk-0000002a"),
        ("agi_language", "fr"),
        ("agi_type", "PJSIP"),
        ("agi_uniqueid", uniqueid),
        ("agi_version", "22.10.1"),
        ("agi_callerid", caller),
        ("agi_calleridname", name),
        ("agi_callingpres", "0"),
        ("agi_callingani2", "0"),
        ("agi_callington", "0"),
        ("agi_callingtns", "0"),
        ("agi_dnid", "0187654321"),
        ("agi_rdnis", "unknown"),
        ("agi_context", "cti-inbound"),
        ("agi_extension", "s"),
        ("agi_priority", "3"),
        ("agi_enhanced", "0.0"),
        ("agi_accountcode", ""),
        ("agi_threadid", "140160127329984"),
        *((f"agi_arg_{i}", value) for i, value in enumerate(args, 1)),
    ]
    return [f"{key}: {value}\n".encode() for key, value in fields] + [b"\n"]


Reply = Callable[[list[str], int], str | None]


def always_200(_argv: list[str], _n: int) -> str:
    return "200 result=1\n"


@dataclass
class Call:
    commands: list[list[str]] = field(default_factory=list)
    elapsed_s: float = 0.0
    closed_by_server: bool = False

    @property
    def variables(self) -> list[tuple[str, str]]:
        """Every variable set, in order: SET VARIABLE, and EXEC MSet as Asterisk's MSet reads
        its argument (pairs split on commas, then on the first "=")."""
        out: list[tuple[str, str]] = []
        for c in self.commands:
            if c[:2] == ["SET", "VARIABLE"]:
                out.append((c[2], c[3]))
            elif c[:2] == ["EXEC", "MSet"]:
                out += [tuple(pair.split("=", 1)) for pair in c[2].split(",")]  # type: ignore[misc]
        return out

    @property
    def verbose(self) -> list[str]:
        return next(c for c in self.commands if c[0] == "VERBOSE")


async def play_asterisk(
    port: int,
    caller: str,
    name: str = "unknown",
    args: Sequence[str] = ("FR",),
    *,
    script: str = "lookup",
    reply: Reply = always_200,
    env: list[bytes] | None = None,
) -> Call:
    """One AGI() as Asterisk runs it; `reply` answers each command (None: hang up the socket).
    A connection the server ends, by closing or resetting it, ends the AGI: Asterisk then sets
    AGISTATUS (SUCCESS or FAILURE) and the dialplan goes on."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    call = Call()
    try:
        for line in env if env is not None else environment(port, caller, name, args, script):
            writer.write(line)
            await writer.drain()
        while True:
            line = await asyncio.wait_for(reader.readline(), 10)
            if not line:  # "AGI Script ... completed"
                call.closed_by_server = True
                break
            assert line.endswith(b"\n") and len(line) < protocol.MAX_LINE
            call.commands.append(asterisk_parse_args(line.decode().rstrip("\n")))
            answer = reply(call.commands[-1], len(call.commands))
            if answer is None:
                break
            writer.write(answer.encode())
    except ConnectionError:
        call.closed_by_server = True
    finally:
        call.elapsed_s = time.monotonic() - started
        writer.close()
        with suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 2)
    return call


async def until(predicate: Callable[[], bool], within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


@asynccontextmanager
async def serving(routes: dict[str, Route], **options: Any) -> AsyncIterator[FastAgiServer]:
    server = FastAgiServer(routes, **options)
    await server.start("127.0.0.1", 0)
    try:
        yield server
    finally:
        await server.close()
    assert server.active == 0


# ----------------------------------------------------------------- a real directory


@dataclass
class Customers:
    jean: int  # VIP, priority 10, 06 12 34 56 78
    helene: int  # 01 45 67 89 01
    standard: int  # VIP, priority 5, shares 03 11 22 33 44 with paul
    paul: int


async def fill(directory: CustomerDirectory) -> Customers:
    jean = await directory.create_customer("Jean Dupont", ["+33612345678"], vip=True, queue_priority=10)
    helene = await directory.create_customer('Hélène "Lena" Martin', ["01 45 67 89 01"])
    standard = await directory.create_customer(
        "Standard Dupuis SARL", ["+33311223344"], vip=True, queue_priority=5
    )
    paul = await directory.create_customer("Paul Dupuis", ["03 11 22 33 44"])
    ids = [c.id for c in (jean, helene, standard, paul)]
    assert all(i is not None for i in ids)
    return Customers(*(int(i) for i in ids if i is not None))


def _pg_reachable() -> bool:
    try:
        socket.create_connection((PG_HOST, PG_PORT), timeout=0.5).close()
    except OSError:
        return False
    return True


@asynccontextmanager
async def throwaway_postgresql() -> AsyncIterator[str]:
    import asyncpg

    if not _pg_reachable():
        pytest.skip(f"no PostgreSQL server on {PG_HOST}:{PG_PORT}")
    name = f"cti_fastagi_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user="postgres", database="test", timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/{name}"
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@asynccontextmanager
async def database(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'cti.db'}"
        return
    async with throwaway_postgresql() as url:
        yield url


@dataclass
class Lab:
    directory: CustomerDirectory
    customers: Customers
    server: FastAgiServer

    @property
    def port(self) -> int:
        return self.server.port


@pytest.fixture(params=["sqlite", "postgresql"])
async def lab(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Lab]:
    async with database(request.param, tmp_path) as url:
        engine = create_engine(url)
        try:
            await upgrade_async(engine)
            directory = CustomerDirectory(engine, "FR")
            customers = await fill(directory)
            async with serving({"lookup": CallerLookup(directory, "FR")}) as server:
                yield Lab(directory, customers, server)
            await directory.close()
        finally:
            await engine.dispose()


@pytest.fixture
async def sqlite_lab(tmp_path: Path) -> AsyncIterator[Lab]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'cti.db'}")
    try:
        await upgrade_async(engine)
        directory = CustomerDirectory(engine, "FR")
        customers = await fill(directory)
        async with serving({"lookup": CallerLookup(directory, "FR")}, session_timeout_s=1.0) as server:
            yield Lab(directory, customers, server)
        await directory.close()
    finally:
        await engine.dispose()


# ----------------------------------------------------------------- lookups end to end


async def test_hit_vip_sets_id_name_priority_and_lookup_last(lab: Lab) -> None:
    call = await play_asterisk(lab.port, "0612345678", "unknown")
    assert call.variables == [
        ("CTI_CUSTOMER_ID", str(lab.customers.jean)),
        ("CALLERID(name)", "Jean Dupont"),
        ("CTI_VIP", "1"),
        ("QUEUE_PRIO", "10"),
        ("CTI_LOOKUP", "hit"),
    ]
    # One round trip through Asterisk's channel thread for all five (each command is one), and
    # no console line for a lookup that worked (`agi set debug on` shows them).
    assert [c[:2] for c in call.commands] == [["EXEC", "MSet"]]
    assert call.closed_by_server


async def test_network_name_is_kept_by_default(lab: Lab) -> None:
    call = await play_asterisk(lab.port, "+33612345678", "J. Dupont (mobile)")
    assert [name for name, _ in call.variables] == ["CTI_CUSTOMER_ID", "CTI_VIP", "QUEUE_PRIO", "CTI_LOOKUP"]


async def test_a_name_made_of_the_number_is_replaced_quotes_and_accents_intact(lab: Lab) -> None:
    call = await play_asterisk(lab.port, "0145678901", "01 45 67 89 01")
    assert call.variables == [
        ("CTI_CUSTOMER_ID", str(lab.customers.helene)),
        ("CALLERID(name)", 'Hélène "Lena" Martin'),  # as Asterisk's parse_args reads it back
        ("CTI_LOOKUP", "hit"),
    ]
    # The quotes would need MSet's escaping: the name has a SET VARIABLE of its own, in order.
    assert [c[:2] for c in call.commands] == [["EXEC", "MSet"], ["SET", "VARIABLE"], ["EXEC", "MSet"]]


async def test_name_policies_always_and_never(sqlite_lab: Lab) -> None:
    always = await play_asterisk(sqlite_lab.port, "0612345678", "J. Dupont", ("FR", "always"))
    assert ("CALLERID(name)", "Jean Dupont") in always.variables
    never = await play_asterisk(sqlite_lab.port, "0612345678", "unknown", ("FR", "never"))
    assert "CALLERID(name)" not in dict(never.variables)


async def test_miss(lab: Lab) -> None:
    call = await play_asterisk(lab.port, "0699999999")
    assert call.variables == [("CTI_LOOKUP", "miss")]
    assert not any(c[0] == "VERBOSE" for c in call.commands)


async def test_shared_number_is_multiple_without_id_or_name_but_keeps_vip_priority(lab: Lab) -> None:
    call = await play_asterisk(lab.port, "0311223344")
    assert call.variables == [("CTI_VIP", "1"), ("QUEUE_PRIO", "5"), ("CTI_LOOKUP", "multiple")]


@pytest.mark.parametrize("caller", ["anonymous", "unknown", "", "+", "<unknown>", "Restricted"])
async def test_withheld_callers_are_never_looked_up(caller: str) -> None:
    directory = CountingDirectory()
    async with serving({"lookup": CallerLookup(directory)}) as server:
        call = await play_asterisk(server.port, caller)
    assert call.variables == [("CTI_LOOKUP", "withheld")]
    assert directory.asked == []


async def test_region_argument_reads_national_numbers(sqlite_lab: Lab) -> None:
    # 0612345678 in Morocco is +212612345678: nobody's.
    assert (await play_asterisk(sqlite_lab.port, "0612345678", args=("MA",))).variables == [
        ("CTI_LOOKUP", "miss")
    ]
    # No region argument: the directory's region (FR).
    assert ("CTI_LOOKUP", "hit") in (await play_asterisk(sqlite_lab.port, "0612345678", args=())).variables


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_directory_unavailable_is_error_and_the_session_still_ends(
    backend: str, tmp_path: Path
) -> None:
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'gone' / 'cti.db'}"  # no such file
    else:
        url = "postgresql+asyncpg://postgres@127.0.0.1:9/cti"  # refused
    engine = create_engine(url)
    directory = CustomerDirectory(engine, "FR")
    try:
        async with serving({"lookup": CallerLookup(directory)}) as server:
            call = await play_asterisk(server.port, "0612345678")
    finally:
        await directory.close()
        await engine.dispose()
    assert call.variables == [("CTI_LOOKUP", "error")]
    assert call.verbose[1].startswith("cti lookup: error (directory unavailable (sql error)) in ")
    assert call.verbose[2] == "1"  # errors reach Asterisk's console at level 1
    assert call.closed_by_server and call.elapsed_s < 1.5


async def test_a_directory_slower_than_timeout_is_error_in_time() -> None:
    directory = CountingDirectory(delay_s=5.0)
    async with serving({"lookup": CallerLookup(directory, timeout_s=0.2)}) as server:
        call = await play_asterisk(server.port, "0612345678")
    assert call.variables == [("CTI_LOOKUP", "error")]
    assert "did not answer in 200 ms" in call.verbose[1]
    assert 0.2 <= call.elapsed_s < 1.0


async def test_two_hundred_concurrent_sessions(sqlite_lab: Lab) -> None:
    # What is checked is that every session gets its own answer, not how fast: the time bounds are
    # wide, as on a loaded 2-core runner 200 sessions outlast the lab's 1 s session bound.
    lookup = CallerLookup(sqlite_lab.directory, "FR", timeout_s=30.0)
    callers = ["0612345678", "0699999999", "0311223344", "anonymous"] * 50
    expected = {"0612345678": "hit", "0699999999": "miss", "0311223344": "multiple", "anonymous": "withheld"}
    async with serving({"lookup": lookup}, session_timeout_s=60.0) as server:
        calls = await asyncio.gather(*(play_asterisk(server.port, c) for c in callers))
        assert [dict(c.variables)["CTI_LOOKUP"] for c in calls] == [expected[c] for c in callers]
        assert all(c.closed_by_server for c in calls)
        await until(lambda: server.active == 0)
        assert server.sessions_served == 200
        assert server.problems.counts == {}


async def test_whole_daemon_answers_a_lookup(tmp_path: Path) -> None:
    from cti.app import Daemon

    settings = Settings(
        asterisk=(),
        database=DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'cti.db'}"),
        web=WebSettings(port=0),
        agi=AgiSettings(host="127.0.0.1", port=0),
    )
    daemon = Daemon(settings)
    await daemon.start()
    try:
        customers = await fill(daemon.directory)
        assert daemon.agi is not None
        call = await play_asterisk(daemon.agi.port, "06 12 34 56 78")
    finally:
        await daemon.shutdown()
    assert call.variables[0] == ("CTI_CUSTOMER_ID", str(customers.jean))
    assert call.variables[-1] == ("CTI_LOOKUP", "hit")


async def test_daemon_without_agi_host_listens_nowhere(tmp_path: Path) -> None:
    from cti.app import Daemon

    settings = Settings(
        asterisk=(),
        database=DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'cti.db'}"),
        web=WebSettings(port=0),
    )
    daemon = Daemon(settings)
    await daemon.start()
    try:
        assert daemon.agi is None
    finally:
        await daemon.shutdown()


# ----------------------------------------------------------------- hang-ups, bad and slow peers


async def test_hangup_before_a_reply_stops_the_lookup(sqlite_lab: Lab) -> None:
    """Asterisk writes HANGUP when the channel goes, then still replies to the command in flight
    (SET VARIABLE is allowed on a dead channel): the reply is read, nothing more is sent."""

    def hang_up_on_first(_argv: list[str], n: int) -> str:
        return "HANGUP\n200 result=1\n" if n == 1 else "200 result=1\n"

    call = await play_asterisk(sqlite_lab.port, "0612345678", reply=hang_up_on_first)
    assert len(call.commands) == 1 and call.closed_by_server
    await until(lambda: sqlite_lab.server.active == 0)
    assert sqlite_lab.server.problems.counts == {}  # a hang-up is not a problem


async def test_511_dead_channel_stops_the_lookup(sqlite_lab: Lab) -> None:
    def dead(_argv: list[str], _n: int) -> str:
        return "511 Command Not Permitted on a dead channel or intercept routine\n"

    call = await play_asterisk(sqlite_lab.port, "0612345678", reply=dead)
    assert len(call.commands) == 1 and call.closed_by_server


async def test_usage_error_reply_is_read_whole(sqlite_lab: Lab) -> None:
    """520 comes as several lines: all are consumed, so the next reply is the right one."""

    def usage_then_ok(_argv: list[str], n: int) -> str:
        if n == 1:
            return (
                "520-Invalid command syntax.  Proper usage follows:\n"
                " Usage: SET VARIABLE <variablename> <value>\n"
                "\n"
                "520 End of proper usage.\n"
            )
        return "200 result=1\n"

    call = await play_asterisk(sqlite_lab.port, "0612345678", reply=usage_then_ok)
    assert [name for name, _ in call.variables][-1] == "CTI_LOOKUP" and call.closed_by_server


async def test_client_that_disconnects_mid_session(sqlite_lab: Lab) -> None:
    call = await play_asterisk(sqlite_lab.port, "0612345678", reply=lambda _a, n: None)
    assert len(call.commands) == 1
    await until(lambda: sqlite_lab.server.active == 0)
    assert sqlite_lab.server.problems.counts == {}


async def test_client_that_disconnects_inside_the_environment(sqlite_lab: Lab) -> None:
    _reader, writer = await asyncio.open_connection("127.0.0.1", sqlite_lab.port)
    writer.write(b"agi_network: yes\nagi_network_scr")
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    await until(lambda: sqlite_lab.server.sessions_served == 1)
    assert sqlite_lab.server.active == 0


async def test_silent_client_is_cut_off_after_the_session_timeout(sqlite_lab: Lab) -> None:
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", sqlite_lab.port)
    try:
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
    finally:
        writer.close()
    assert 1.0 <= time.monotonic() - started < 2.5
    assert sqlite_lab.server.problems.counts == {"timeout": 1}


async def test_the_last_command_comes_with_the_end_of_our_side(sqlite_lab: Lab) -> None:
    """Asterisk ends the AGI when it reads the end of the connection: sent with the last
    command (a half-close), the end is there as soon as Asterisk has replied, without waiting
    a round trip for the server to read that reply and close. The reply is still read."""
    reader, writer = await asyncio.open_connection("127.0.0.1", sqlite_lab.port)
    try:
        writer.writelines(environment(sqlite_lab.port, "0612345678"))
        first = await asyncio.wait_for(reader.readline(), 5)
        assert first.startswith(b'EXEC MSet "CTI_CUSTOMER_ID=')
        assert await asyncio.wait_for(reader.read(), 5) == b""  # before we replied
        writer.write(b"200 result=0\n")
        await writer.drain()
        await until(lambda: sqlite_lab.server.active == 0)
    finally:
        writer.close()
    assert sqlite_lab.server.problems.counts == {}
    assert sqlite_lab.server.sessions_served == 1


async def test_client_that_never_replies_is_cut_off(sqlite_lab: Lab) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sqlite_lab.port)
    started = time.monotonic()
    try:
        writer.writelines(environment(sqlite_lab.port, "0612345678"))
        first = await asyncio.wait_for(reader.readline(), 5)
        assert first.startswith(b'EXEC MSet "CTI_CUSTOMER_ID=')
        # The server's side ends with its last command (a half-close); it still waits for the
        # reply, and a peer that never sends it is cut off at the session's deadline.
        assert await asyncio.wait_for(reader.read(), 5) == b""
        # Counted when cut off; the session's task is done a moment later.
        server = sqlite_lab.server
        await until(lambda: server.problems.counts == {"timeout": 1} and server.active == 0, within_s=5)
    finally:
        writer.close()
    assert time.monotonic() - started < 2.5


async def test_oversized_line_is_refused_without_buffering_it(sqlite_lab: Lab) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sqlite_lab.port)
    try:
        writer.write(b"agi_network: yes\nagi_callerid: " + b"9" * 100_000)
        with pytest.raises(ConnectionError):
            for _ in range(50):
                writer.write(b"9" * 100_000)
                await writer.drain()
                await asyncio.sleep(0.01)
        assert await asyncio.wait_for(reader.read(), 5) == b""
    except ConnectionError:
        pass
    finally:
        writer.close()
    await until(lambda: sqlite_lab.server.active == 0)
    assert sqlite_lab.server.problems.counts == {"protocol": 1}


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: pbx\r\n\r\n",  # a browser or a scanner
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n",  # a TLS ClientHello
        b"agi_request: agi://x/lookup\n\n",  # no agi_network: yes
    ],
)
async def test_garbage_is_refused(sqlite_lab: Lab, garbage: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sqlite_lab.port)
    try:
        writer.write(garbage)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # no command, just closed
    finally:
        writer.close()
    await until(lambda: sqlite_lab.server.active == 0)
    assert sqlite_lab.server.problems.counts == {"protocol": 1}


async def test_garbage_instead_of_a_reply_ends_the_session(sqlite_lab: Lab) -> None:
    call = await play_asterisk(sqlite_lab.port, "0612345678", reply=lambda _a, _n: "hello\n")
    assert len(call.commands) == 1
    await until(lambda: sqlite_lab.server.active == 0)
    assert sqlite_lab.server.problems.counts == {"protocol": 1}


async def test_unicode_split_across_reads_and_latin1_names(sqlite_lab: Lab) -> None:
    env = b"".join(environment(sqlite_lab.port, "0145678901", "Zoë Müller"))
    one_byte_writes = [env[i : i + 1] for i in range(len(env))]  # every character split
    call = await play_asterisk(sqlite_lab.port, "", env=one_byte_writes)
    assert ("CTI_LOOKUP", "hit") in call.variables
    assert "CALLERID(name)" not in dict(call.variables)  # "Zoë Müller" was read whole: a real name
    latin1 = [
        line.replace("Zoë".encode(), "Zoë".encode("latin-1"))
        for line in environment(sqlite_lab.port, "0145678901", "Zoë")
    ]
    assert ("CTI_LOOKUP", "hit") in (await play_asterisk(sqlite_lab.port, "", env=latin1)).variables


async def test_unknown_script_is_closed_without_a_command(sqlite_lab: Lab) -> None:
    call = await play_asterisk(sqlite_lab.port, "0612345678", script="transfer")
    assert call.commands == [] and call.closed_by_server
    assert sqlite_lab.server.problems.counts == {"route": 1}


async def test_a_route_that_raises_is_logged_and_closed_and_others_go_on() -> None:
    async def broken(session: AgiSession) -> None:
        await session.command(set_variable("X", "1"))
        raise RuntimeError("bug")

    directory = CountingDirectory()
    async with serving({"broken": broken, "lookup": CallerLookup(directory)}) as server:
        with structlog.testing.capture_logs() as logs:
            bad = await play_asterisk(server.port, "0612345678", script="broken")
        good = await play_asterisk(server.port, "0612345678")
        await until(lambda: server.active == 0)
    assert len(bad.commands) == 1 and bad.closed_by_server
    assert good.variables[-1] == ("CTI_LOOKUP", "miss")
    failure = [e for e in logs if e["event"] == "FastAGI route failed"]
    assert failure and failure[0]["log_level"] == "warning"
    assert isinstance(failure[0]["exc_info"], RuntimeError)


async def test_too_many_sessions_are_closed_at_once_not_queued() -> None:
    directory = CountingDirectory(delay_s=0.3)
    async with serving({"lookup": CallerLookup(directory, timeout_s=1.0)}, max_sessions=2) as server:
        first = [asyncio.create_task(play_asterisk(server.port, "0612345678")) for _ in range(2)]
        await until(lambda: server.active == 2)
        started = time.monotonic()
        refused = await play_asterisk(server.port, "0612345678")
        assert time.monotonic() - started < 0.25 and refused.commands == []
        assert [c.variables[-1] for c in await asyncio.gather(*first)] == [("CTI_LOOKUP", "miss")] * 2
    assert server.problems.counts == {"busy": 1}


async def test_close_cancels_sessions_in_progress() -> None:
    directory = CountingDirectory(delay_s=30)
    server = FastAgiServer({"lookup": CallerLookup(directory, timeout_s=60)}, session_timeout_s=60)
    await server.start("127.0.0.1", 0)
    client = asyncio.create_task(play_asterisk(server.port, "0612345678"))
    await until(lambda: directory.asked != [])
    started = time.monotonic()
    await server.close(grace_s=0.1)
    assert time.monotonic() - started < 1.0 and server.active == 0
    call = await client
    assert call.commands == [] and call.closed_by_server  # Asterisk sees the end: the call goes on


async def test_caller_numbers_are_logged_at_debug_only(sqlite_lab: Lab) -> None:
    broken_env = [b"agi_network: yes\n", b"agi_callerid 0612345678\n", b"\n"]  # not "key: value"
    with structlog.testing.capture_logs() as logs:
        await play_asterisk(sqlite_lab.port, "0612345678")
        await play_asterisk(sqlite_lab.port, "0612345678", reply=lambda _a, _n: "0612345678\n")
        await play_asterisk(sqlite_lab.port, "", env=broken_env)
    assert sqlite_lab.server.problems.counts == {"protocol": 2}  # both reported, at WARNING
    for entry in logs:
        text = repr(entry)
        if "0612345678" in text or "+33612345678" in text:
            assert entry["log_level"] == "debug", entry
    lookups = [e for e in logs if e["event"] == "caller lookup"]
    assert lookups[0]["call"] == UNIQUEID  # bound for the whole session
    assert lookups[0]["status"] == "hit"


# ----------------------------------------------------------------- settings


def test_agi_settings_from_toml_and_environment(tmp_path: Path) -> None:
    assert Settings().agi == AgiSettings()
    config = tmp_path / "cti.toml"
    config.write_text('[agi]\nhost = "127.0.0.1"\nport = 4600\ntimeout_s = 0.3\n', encoding="utf-8")
    read = load_settings(config, env={})
    assert (read.agi.host, read.agi.port, read.agi.timeout_s) == ("127.0.0.1", 4600, 0.3)
    env = {"CTI_AGI_HOST": "10.0.0.7", "CTI_AGI_PORT": "4573", "CTI_AGI_SESSION_TIMEOUT_S": "1.5"}
    both = load_settings(config, env=env)
    assert (both.agi.host, both.agi.port, both.agi.timeout_s, both.agi.session_timeout_s) == (
        "10.0.0.7",
        4573,
        0.3,
        1.5,
    )
    assert AgiSettings().host == ""  # disabled unless asked for


async def test_empty_host_is_refused_rather_than_every_interface() -> None:
    with pytest.raises(ValueError):
        await FastAgiServer({}).start("", 0)


# ----------------------------------------------------------------- the pure parts


def _file(cid: int | None, name: str, vip: bool = False, prio: int = 0) -> CustomerFile:
    return CustomerFile(cid, name, vip=vip, queue_priority=prio)


def _result(status: str, *customers: CustomerFile, sources: Any = (("sql", "ok"),)) -> LookupResult:
    return LookupResult(normalize("+33612345678"), status, tuple(customers), sources)  # type: ignore[arg-type]


def test_decide() -> None:
    vip = _file(1, "A", True, 7)
    assert decide(_result("found", vip)) == Outcome("hit", vip, True, 7)
    assert decide(_result("found", _file(2, "B", False, 9))).priority == 0  # priority is for VIPs
    several = decide(_result("several", _file(2, "B"), vip, _file(3, "C", True, 3)))
    assert several == Outcome("multiple", None, True, 7, detail="3 owners")
    assert decide(_result("unknown")).status == "miss"
    down = decide(_result("unavailable", sources=(("sql", "timeout"), ("crm", "ok"))))
    assert (down.status, down.detail) == ("error", "directory unavailable (sql timeout)")


@pytest.mark.parametrize(
    ("name", "number", "unknown"),
    [
        ("", "0612", True),
        ("unknown", "x", True),
        ('"Anonymous"', "", True),
        ("0612345678", "0612345678", True),
        ("+33 6 12 34 56 78", "+33612345678", True),
        ("Jean Dupont", "0612345678", False),
        ("R2D2 SA", "1", False),
    ],
)
def test_name_is_unknown(name: str, number: str, unknown: bool) -> None:
    assert name_is_unknown(name, number) is unknown


def test_plan_variables() -> None:
    outcome = Outcome("hit", _file(3, "Zoé\nNewline"))
    always = plan_variables(outcome, "Carrier Name", "+33612345678", "always")
    assert ("CALLERID(name)", "Zoé Newline") in always  # no line break may end the command
    never = plan_variables(outcome, "", "+33612345678", "never")
    assert [name for name, _ in never] == ["CTI_CUSTOMER_ID", "CTI_LOOKUP"]
    crm_only = plan_variables(Outcome("hit", _file(None, "From CRM")), "", "1", "ifunknown")
    assert crm_only == [("CALLERID(name)", "From CRM"), ("CTI_LOOKUP", "hit")]
    long_name = plan_variables(Outcome("hit", _file(1, "x" * 300)), "", "1", "ifunknown")
    assert len(dict(long_name)["CALLERID(name)"]) == 64


def test_summary_names_no_caller() -> None:
    assert (
        summary(Outcome("hit", _file(4, "Jean"), True, 2), 12.4)
        == "cti lookup: hit customer 4 vip priority 2 in 12 ms"
    )
    assert summary(Outcome("error", detail="x\ny"), 3) == "cti lookup: error (x y) in 3 ms"


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_quoted_values_read_back_by_asterisk(value: str) -> None:
    argv = asterisk_parse_args(set_variable("CALLERID(name)", value))
    assert argv[:3] == ["SET", "VARIABLE", "CALLERID(name)"] and len(argv) == 4
    assert argv[3] == protocol.one_line(value, 1024)
    assert "\n" not in set_variable("X", value)


_VALUES = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\n\r"), max_size=60
)
_ENVIRONMENTS = st.dictionaries(
    st.from_regex(r"agi_[a-z0-9_]{1,20}", fullmatch=True), _VALUES, max_size=40
).map(lambda d: {**d, "agi_network": "yes"})


@given(_ENVIRONMENTS, st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=50))
@settings(max_examples=300)
def test_environment_parser_any_split(fields: dict[str, str], cuts: list[int]) -> None:
    """However TCP cuts the block, the same fields come out, multi-byte characters included."""
    block = "".join(f"{k}: {v}\n" for k, v in fields.items()).encode() + b"\n"
    reader = LineReader()
    lines: list[str] = []
    at = 0
    for size in cuts * (len(block) // max(sum(cuts), 1) + 1):
        lines += reader.feed(block[at : at + size])
        at += size
        if at >= len(block):
            break
    lines += reader.feed(block[at:])
    assert lines[-1] == "" and reader.pending == 0
    assert parse_environment(lines[:-1]).values == fields


@given(st.binary(max_size=3000), st.integers(min_value=1, max_value=300))
def test_environment_parser_never_fails_otherwise_than_by_protocol_error(data: bytes, cut: int) -> None:
    reader = LineReader(max_line=512)
    lines: list[str] = []
    try:
        for at in range(0, len(data), cut):
            lines += reader.feed(data[at : at + cut])
        parse_environment(lines)
    except AgiProtocolError:
        pass


def test_line_reader_bounds_unfinished_lines() -> None:
    reader = LineReader(max_line=10)
    assert reader.feed(b"0123456789\n01234") == ["0123456789"]
    with pytest.raises(LineTooLong):
        reader.feed(b"567890")


def test_environment_args_script_and_fields() -> None:
    env = parse_environment(
        [
            "agi_network: yes",
            "agi_network_script: lookup?x=1",
            "agi_arg_1: FR",
            "agi_arg_2: ",
            "agi_arg_4: skipped after a gap",
            "agi_calleridname: Dupont: Jean",
            "agi_accountcode: ",
        ]
    )
    assert (env.script, env.args, env.caller_name) == ("lookup", ("FR", ""), "Dupont: Jean")
    with pytest.raises(AgiProtocolError):
        parse_environment(["agi_network: yes", "Host: example"])
    with pytest.raises(AgiProtocolError):
        parse_environment(["agi_network: yes"] + ["agi_x: 1"] * 200)


def test_reply_parser() -> None:
    parser = ReplyParser()
    assert parser.feed("200 result=1") == protocol.AgiReply(200, "result=1", "1", None)
    assert parser.feed("200 result=1 (+33612345678)") == protocol.AgiReply(
        200, "result=1 (+33612345678)", "1", "+33612345678"
    )
    assert parser.feed("HANGUP") is None and parser.hung_up
    assert parser.feed("100 result=0 Trying...") is None
    assert parser.feed("510 Invalid or unknown command") == protocol.AgiReply(
        510, "Invalid or unknown command"
    )
    assert parser.feed("520-Invalid command syntax.  Proper usage follows:") is None
    assert parser.feed(" Usage: VERBOSE <message> <level>") is None
    usage = parser.feed("520 End of proper usage.")
    assert usage is not None and usage.code == 520 and "Usage: VERBOSE" in usage.text
    with pytest.raises(AgiProtocolError):
        parser.feed("garbage")


def test_quote() -> None:
    assert quote('a "b" \\c') == '"a \\"b\\" \\\\c"'
    assert asterisk_parse_args(f"SET VARIABLE X {quote('')}") == ["SET", "VARIABLE", "X", ""]


def test_problem_log_warns_once_a_minute_per_kind() -> None:
    with structlog.testing.capture_logs() as logs:
        problems = ProblemLog(structlog.get_logger("t"), repeat_s=60)
        for _ in range(3):
            problems.report("timeout", "cut off")
        problems.report("busy", "busy")
    assert [(e["problem"], e["log_level"]) for e in logs] == [
        ("timeout", "warning"),
        ("timeout", "debug"),
        ("timeout", "debug"),
        ("busy", "warning"),
    ]
    assert problems.counts == {"timeout": 3, "busy": 1}


# ----------------------------------------------------------------- helpers


class CountingDirectory:
    """Stands for CustomerDirectory where the test is about the server: nobody is known."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.asked: list[str | None] = []

    async def lookup(self, raw_caller_id: str | None) -> LookupResult:
        self.asked.append(raw_caller_id)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return LookupResult(normalize(raw_caller_id), "unknown", (), (("sql", "ok"),))


# ----------------------------------------------------------------- panoramisk 1.4's FastAGI server
# Why we did not use it (docs/asterisk.md, "Why not panoramisk's FastAGI server"): each test
# reproduces one fault; the test named beside it shows ours on the same input.


@asynccontextmanager
async def panoramisk_serving(routes: dict[str, Route]) -> AsyncIterator[int]:
    from panoramisk.fast_agi import Application

    app = Application()
    for path, route in routes.items():
        app.add_route(path, route)
    server = await asyncio.start_server(app.handler, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


class _Writer:
    """What panoramisk's handler uses of a StreamWriter."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.data += data

    async def drain(self) -> None:
        return None

    def get_extra_info(self, _name: str) -> Any:
        return ("127.0.0.1", 40000)

    def close(self) -> None:
        self.closed = True


async def test_panoramisk_spins_without_yielding_when_the_peer_leaves_mid_environment() -> None:
    """`while b'\\n\\n' not in buffer: buffer += await reader.read(100)`: at EOF read() returns b''
    at once, forever, and never gives the loop back: one port scan freezes the daemon.
    Ours: test_client_that_disconnects_inside_the_environment."""
    from panoramisk.fast_agi import Application

    class CountingReader(asyncio.StreamReader):
        reads = 0

        async def read(self, n: int = -1) -> bytes:
            self.reads += 1
            if self.reads > 10_000:
                raise RuntimeError("still spinning")
            return await super().read(n)

    reader = CountingReader()
    reader.feed_data(b"agi_network: yes\nagi_network_scr")
    reader.feed_eof()
    loop_ran: list[int] = []
    asyncio.get_running_loop().call_soon(loop_ran.append, 1)
    with pytest.raises(RuntimeError, match="still spinning"):
        await Application().handler(reader, _Writer())
    assert loop_ran == []  # 10,000 reads, and not one other callback of the loop ran meanwhile


async def test_panoramisk_waits_forever_on_a_silent_peer_and_buffers_without_bound() -> None:
    """No time bound and no size bound on the environment block. Ours:
    test_silent_client_is_cut_off_after_the_session_timeout, test_oversized_line_is_refused..."""
    async with panoramisk_serving({}) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(reader.read(), 1.5)  # still open after 1.5 s of silence
            writer.write(b"agi_network: yes\nagi_callerid: " + b"9" * 200_000)  # 24 x Asterisk's buffer
            await writer.drain()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(reader.read(), 0.5)  # still reading, still buffering
            writer.write(b"\n\n")  # let it finish (closing now would make it spin, see above)
            assert await asyncio.wait_for(reader.read(), 5) == b""
        finally:
            writer.close()


async def test_panoramisk_loses_the_lookup_on_a_latin1_caller_name() -> None:
    """The block is decoded strictly: one Latin-1 byte from a carrier's caller name raises before
    the route runs, so the call gets no lookup. Ours: test_unicode_split_across_reads_and_latin1_names."""
    called: list[str] = []

    async def route(request: Any) -> None:
        called.append(request.headers["agi_callerid"])

    async with panoramisk_serving({"lookup": route}) as port:
        env = [line.replace(b"Zo\xc3\xab", b"Zo\xeb") for line in environment(port, "0145678901", "Zoë")]
        call = await play_asterisk(port, "", env=env)
        utf8 = await play_asterisk(port, "", env=environment(port, "0145678901", "Zoë"))
    assert call.closed_by_server and utf8.closed_by_server
    assert called == ["0145678901"]  # only the UTF-8 one reached the route


async def test_panoramisk_takes_hangup_for_the_reply_and_answers_every_later_command_late() -> None:
    """`HANGUP` comes before the reply of the command in flight; panoramisk returns it as that
    reply, and the real reply then answers the next command. Ours:
    test_hangup_before_a_reply_stops_the_lookup."""
    results: list[dict[str, Any]] = []

    async def route(request: Any) -> None:
        results.append(await request.send_command('SET VARIABLE "A" "1"'))
        results.append(await request.send_command('SET VARIABLE "B" "2"'))

    def replies(_argv: list[str], n: int) -> str:
        return "HANGUP\n200 result=1\n" if n == 1 else "510 Invalid or unknown command\n"

    async with panoramisk_serving({"lookup": route}) as port:
        await play_asterisk(port, "0612345678", reply=replies)
    assert results[0]["error"] == "AGIResultHangup"
    assert results[1]["status_code"] == 200  # Asterisk answered B with 510; this was A's reply


async def test_panoramisk_reads_one_line_of_a_multiline_usage_error() -> None:
    """A 520 usage text is several lines ending with `520 End of proper usage.`; panoramisk reads
    one more line, and the rest answers the next commands. Ours: test_usage_error_reply_is_read_whole."""
    results: list[dict[str, Any]] = []

    async def route(request: Any) -> None:
        results.append(await request.send_command("SET VARIABLE A"))
        results.append(await request.send_command('SET VARIABLE "B" "2"'))

    def replies(_argv: list[str], n: int) -> str:
        if n == 1:
            return (
                "520-Invalid command syntax.  Proper usage follows:\n"
                " Usage: SET VARIABLE <variablename> <value>\n"
                "\n"
                "520 End of proper usage.\n"
            )
        return "200 result=1\n"

    async with panoramisk_serving({"lookup": route}) as port:
        await play_asterisk(port, "0612345678", reply=replies)
    assert results[0]["error"] == "AGIUsageError"
    # B's "reply" was the usage text's blank line: int('') raised ValueError out of send_command.
    assert len(results) == 1


def panoramisk_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    # Its problems only: it also logs each request at INFO, captured when an earlier test left
    # the root logger at INFO; other loggers (asyncio, aiohttp) may log meanwhile.
    return [r for r in caplog.records if r.name.startswith("panoramisk") and r.levelno >= logging.WARNING]


async def test_panoramisk_crashes_on_a_peer_gone_mid_command(caplog: pytest.LogCaptureFixture) -> None:
    """EOF while waiting for a reply is parsed as a reply: int('') raises ValueError out of
    send_command, logged at ERROR with a traceback, once per caller who hangs up at that moment.
    Ours: test_client_that_disconnects_mid_session (a debug line, no problem counted)."""
    results: list[dict[str, Any]] = []

    async def route(request: Any) -> None:
        results.append(await request.send_command('SET VARIABLE "A" "1"'))

    async with panoramisk_serving({"lookup": route}) as port:
        await play_asterisk(port, "0612345678", reply=lambda _a, _n: None)
        await until(lambda: bool(panoramisk_records(caplog)))
    assert results == []
    [record] = panoramisk_records(caplog)
    assert record.levelname == "ERROR" and record.exc_info is not None
    assert record.exc_info[0] is ValueError


async def test_panoramisk_swallows_cancellation() -> None:
    """`except BaseException` around the route: a cancelled session (a time bound, a shutdown)
    returns as if it had finished. Ours: test_close_cancels_sessions_in_progress."""
    from panoramisk.fast_agi import Application

    entered = asyncio.Event()

    async def route(_request: Any) -> None:
        entered.set()
        await asyncio.Event().wait()

    app = Application()
    app.add_route("lookup", route)
    reader = asyncio.StreamReader()
    for line in environment(4573, "0612345678"):
        reader.feed_data(line)
    task = asyncio.create_task(app.handler(reader, _Writer()))
    await entered.wait()
    task.cancel()
    await asyncio.wait([task], timeout=2)
    assert task.done() and not task.cancelled()


def test_panoramisk_plain_function_routes_need_asyncio_coroutine_removed_in_python_311() -> None:
    from panoramisk.fast_agi import Application

    async def make() -> Any:
        return Application()

    app = asyncio.run(make())
    with pytest.raises(AttributeError, match="coroutine"):
        app.add_route("lookup", lambda _request: None)


@pytest.mark.parametrize(
    ("planned", "commands"),
    [
        ([("CTI_LOOKUP", "miss")], ['EXEC MSet "CTI_LOOKUP=miss"']),
        (
            [("CTI_CUSTOMER_ID", "7"), ("CALLERID(name)", "Société Générale"), ("CTI_LOOKUP", "hit")],
            ['EXEC MSet "CTI_CUSTOMER_ID=7,CALLERID(name)=Société Générale,CTI_LOOKUP=hit"'],
        ),
        (
            # A comma (or a quote, a parenthesis, "=") would be cut by MSet: its own command.
            [("CTI_CUSTOMER_ID", "7"), ("CALLERID(name)", "Dupont, Jean"), ("CTI_LOOKUP", "hit")],
            [
                'EXEC MSet "CTI_CUSTOMER_ID=7"',
                'SET VARIABLE "CALLERID(name)" "Dupont, Jean"',
                'EXEC MSet "CTI_LOOKUP=hit"',
            ],
        ),
    ],
)
def test_agi_commands_batch_what_mset_reads_as_is(
    planned: list[tuple[str, str]], commands: list[str]
) -> None:
    from cti.agi.lookup import agi_commands

    assert agi_commands(planned) == commands
