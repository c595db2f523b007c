"""`cti-agi lookup` driven exactly as Asterisk drives it: a real subprocess, plain pipes, the
environment block on stdin and `200 result=...` replies, from recorded sessions
(tests/agi_sessions/, same format as the real transcript in ../shared/ami-captures/agi/)."""

from __future__ import annotations

import asyncio
import os
import re
import select
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cti.agi import lookup
from cti.agi.customers import CustomerMatch, DirectoryUnavailable, find_customers, sqlite_path
from cti.agi.pgwire import PgError, PgTarget, ScramSha256, fetch_all, md5_password

ROOT = Path(__file__).resolve().parent.parent
SESSIONS = Path(__file__).with_name("agi_sessions")
REAL_TRANSCRIPT = ROOT.parent / "shared" / "ami-captures" / "agi" / "lookup_session.agi"
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"

# The schema the AGI relies on (cti.db.models), as plain DDL both engines accept.
DDL = (
    """CREATE TABLE customers (
        id BIGINT PRIMARY KEY, name TEXT NOT NULL, account TEXT, address TEXT, notes TEXT,
        vip BOOLEAN NOT NULL DEFAULT FALSE, queue_priority INTEGER NOT NULL DEFAULT 0,
        created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)""",
    """CREATE TABLE customer_phones (
        id BIGINT PRIMARY KEY, customer_id BIGINT NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
        e164 TEXT NOT NULL, label TEXT, UNIQUE (customer_id, e164))""",
    "CREATE INDEX ix_customer_phones_e164 ON customer_phones (e164)",
)
DIRECTORY = {
    # id: (name, vip, queue_priority, numbers)
    42: ("Jean Dupont", True, 10, ["+33612345678"]),
    7: ('Hélène "Lena" Martin', False, 0, ["+33145678901"]),
    11: ("Standard Dupuis SARL", True, 5, ["+33311223344"]),
    12: ("Paul Dupuis", False, 0, ["+33311223344"]),
}


def _rows() -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    customers = [(cid, name, vip, prio) for cid, (name, vip, prio, _) in DIRECTORY.items()]
    phones = [
        (cid * 10 + i, cid, number, "mobile")
        for cid, (*_, numbers) in DIRECTORY.items()
        for i, number in enumerate(numbers)
    ]
    return customers, phones


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    path = tmp_path / "cti.db"
    conn = sqlite3.connect(path)
    for statement in DDL:
        conn.execute(statement)
    customers, phones = _rows()
    conn.executemany("INSERT INTO customers (id, name, vip, queue_priority) VALUES (?, ?, ?, ?)", customers)
    conn.executemany("INSERT INTO customer_phones (id, customer_id, e164, label) VALUES (?, ?, ?, ?)", phones)
    conn.commit()
    conn.close()
    return f"sqlite+aiosqlite:///{path}"


async def _pg_setup(name: str) -> None:
    import asyncpg

    admin = await asyncpg.connect(PG_ADMIN_URL, timeout=3)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name, timeout=3)
    try:
        for statement in DDL:
            await conn.execute(statement)
        customers, phones = _rows()
        await conn.executemany(
            "INSERT INTO customers (id, name, vip, queue_priority) VALUES ($1,$2,$3,$4)", customers
        )
        await conn.executemany(
            "INSERT INTO customer_phones (id, customer_id, e164, label) VALUES ($1,$2,$3,$4)", phones
        )
    finally:
        await conn.close()


async def _pg_drop(name: str) -> None:
    import asyncpg

    admin = await asyncpg.connect(PG_ADMIN_URL, timeout=3)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def _pg_reachable() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=0.5).close()
    except OSError:
        return False
    return True


@pytest.fixture
def pg_url() -> Iterator[str]:
    if not _pg_reachable():
        pytest.skip("no PostgreSQL server on 127.0.0.1:5432")
    name = f"cti_agi_test_{os.getpid()}"
    asyncio.run(_pg_setup(name))
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        asyncio.run(_pg_drop(name))


# ----------------------------------------------------------------- the fake Asterisk side


@dataclass
class Session:
    env_lines: list[str]
    exchanges: list[tuple[str, str]]  # (expected script line, Asterisk's reply)

    @property
    def argv(self) -> list[str]:
        args = {}
        for line in self.env_lines:
            match = re.match(r"agi_arg_(\d+): (.*)$", line)
            if match:
                args[int(match.group(1))] = match.group(2)
        return [args[i] for i in sorted(args)]


def load_session(path: Path) -> Session:
    env: list[str] = []
    exchanges: list[tuple[str, str]] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines) and lines[i].startswith("<"):
        env.append(lines[i][2:])
        i += 1
    while i < len(lines):
        assert lines[i].startswith("> "), f"{path.name}:{i + 1}: expected a '>' line"
        assert i + 1 < len(lines) and lines[i + 1].startswith("< "), f"{path.name}:{i + 2}: no reply"
        exchanges.append((lines[i][2:], lines[i + 1][2:]))
        i += 2
    return Session(env, exchanges)


def _pattern(expected: str) -> re.Pattern[str]:
    text = re.escape(expected).replace(r"\{ms\}", r"\d+").replace(r"\{detail\}", r".+")
    return re.compile(text + "$")


def _command() -> list[str]:
    script = Path(sys.executable).with_name("cti-agi")
    return [str(script)] if script.exists() else [sys.executable, "-m", "cti.agi.lookup"]


@dataclass
class Run:
    sent: list[str]
    stderr: str
    returncode: int
    elapsed_s: float


def _converse(proc: subprocess.Popen[bytes], session: Session, line_timeout: float) -> list[str]:
    assert proc.stdin and proc.stdout
    sent: list[str] = []
    buffer = b""
    for _expected, reply in session.exchanges:
        while b"\n" not in buffer:
            ready, _, _ = select.select([proc.stdout], [], [], line_timeout)
            chunk = os.read(proc.stdout.fileno(), 4096) if ready else b""
            if not chunk:
                break
            buffer += chunk
        if b"\n" not in buffer:
            break
        line, buffer = buffer.split(b"\n", 1)
        sent.append(line.decode())
        proc.stdin.write(reply.encode() + b"\n")
        proc.stdin.flush()
    proc.stdin.close()
    rest = (buffer + proc.stdout.read()).decode()
    sent.extend(line for line in rest.splitlines() if line)
    return sent


def drive(session: Session, env: dict[str, str], line_timeout: float = 10.0) -> Run:
    """Play Asterisk: write the environment, then answer each command the script sends."""
    started = time.monotonic()
    with subprocess.Popen(
        [*_command(), *session.argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("CTI_")}, **env},
        cwd=ROOT,
    ) as proc:
        assert proc.stdin and proc.stdout and proc.stderr
        stderr = proc.stderr
        errors: list[bytes] = []
        reader = threading.Thread(target=lambda: errors.append(stderr.read()))
        reader.start()
        proc.stdin.write("".join(line + "\n" for line in session.env_lines).encode())
        proc.stdin.flush()
        sent = _converse(proc, session, line_timeout)
        proc.wait(timeout=line_timeout)
        reader.join()
    return Run(sent, errors[0].decode() if errors else "", proc.returncode, time.monotonic() - started)


def assert_session(path: Path, env: dict[str, str]) -> Run:
    session = load_session(path)
    run = drive(session, env)
    expected = [cmd for cmd, _ in session.exchanges]
    assert len(run.sent) == len(expected), f"sent {run.sent!r}, expected {expected!r}\n{run.stderr}"
    for got, want in zip(run.sent, expected, strict=True):
        assert _pattern(want).match(got), f"sent {got!r}, expected {want!r}\n{run.stderr}"
    assert run.returncode == 0
    return run


# ----------------------------------------------------------------- sessions, SQLite and PostgreSQL

HIT_AND_MISS = [
    "hit_vip.agi",
    "hit_vip_named_caller.agi",
    "hit_regular.agi",
    "miss.agi",
    "multiple_owners.agi",
    "anonymous.agi",
]


@pytest.mark.parametrize("name", HIT_AND_MISS)
def test_session_sqlite(name: str, sqlite_url: str) -> None:
    run = assert_session(SESSIONS / name, {"CTI_DATABASE_URL": sqlite_url})
    assert run.stderr == ""  # pyst2's chatter is silenced; no error to report


@pytest.mark.parametrize("name", HIT_AND_MISS)
def test_session_postgresql(name: str, pg_url: str) -> None:
    assert_session(SESSIONS / name, {"CTI_DATABASE_URL": pg_url})


def test_settings_from_toml_file(sqlite_url: str, tmp_path: Path) -> None:
    config = tmp_path / "cti.toml"
    config.write_text(f'[database]\nurl = "{sqlite_url}"\n[directory]\nregion = "FR"\n', encoding="utf-8")
    assert_session(SESSIONS / "hit_vip.agi", {"CTI_CONFIG": str(config)})


def test_database_down_missing_sqlite_file(tmp_path: Path) -> None:
    run = assert_session(
        SESSIONS / "database_down.agi", {"CTI_DATABASE_URL": f"sqlite:///{tmp_path}/absent.db"}
    )
    assert "lookup error" in run.stderr and "unable to open" in run.stderr
    assert not (tmp_path / "absent.db").exists()  # read-only open: nothing left behind


def test_database_down_postgresql_refused() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    run = assert_session(
        SESSIONS / "database_down.agi", {"CTI_DATABASE_URL": f"postgresql://u@127.0.0.1:{port}/x"}
    )
    assert "ConnectionRefusedError" in run.stderr


def test_database_down_postgresql_silent_server_hits_the_deadline() -> None:
    # Accepts TCP connections and never says a word: only the deadline can end the lookup.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        port = server.getsockname()[1]
        run = assert_session(
            SESSIONS / "database_down.agi",
            {"CTI_DATABASE_URL": f"postgresql://u@127.0.0.1:{port}/x", "CTI_AGI_TIMEOUT_MS": "80"},
        )
    assert "TimeoutError" in run.stderr or "timed out" in run.stderr
    assert run.elapsed_s < 5


def test_no_settings_at_all_is_an_error_not_a_crash(tmp_path: Path) -> None:
    run = assert_session(SESSIONS / "database_down.agi", {"CTI_CONFIG": str(tmp_path / "none.toml")})
    assert "settings unreadable" in run.stderr


def test_relative_sqlite_path_is_refused() -> None:
    run = assert_session(SESSIONS / "database_down.agi", {"CTI_DATABASE_URL": "sqlite+aiosqlite:///cti.db"})
    assert "relative SQLite path" in run.stderr


def test_schema_missing_is_an_error(tmp_path: Path) -> None:
    sqlite3.connect(tmp_path / "empty.db").close()
    run = assert_session(
        SESSIONS / "database_down.agi", {"CTI_DATABASE_URL": f"sqlite:///{tmp_path}/empty.db"}
    )
    assert "no such table" in run.stderr


def test_caller_hung_up_mid_session(sqlite_url: str) -> None:
    run = assert_session(SESSIONS / "caller_hung_up.agi", {"CTI_DATABASE_URL": sqlite_url})
    assert "gave up" in run.stderr


@pytest.mark.parametrize("raw", ["", "+", "anonymous", "Anonymous", "unknown", "<unknown>", "restricted"])
def test_withheld_caller_ids_are_never_looked_up(raw: str) -> None:
    settings = lookup.AgiSettings("sqlite:////nonexistent/never-opened.db", "FR", 0.1)
    assert lookup.look_up(raw, "FR", settings, time.monotonic() + 1).status == "withheld"


def test_sessions_follow_the_real_transcript_format() -> None:
    real = load_session(REAL_TRANSCRIPT)
    keys = [line.split(":", 1)[0] for line in real.env_lines]
    for path in sorted(SESSIONS.glob("*.agi")):
        ours = load_session(path)
        assert [line.split(":", 1)[0] for line in ours.env_lines] == keys, path.name
        for _, reply in ours.exchanges:
            assert re.match(r"(200 result=-?\d+( \(.*\))?|5\d\d .+)$", reply), (path.name, reply)


# ----------------------------------------------------------------- units


def test_config_paths_match_the_daemon() -> None:
    from cti.config import DEFAULT_CONFIG_PATHS

    assert tuple(str(p) for p in DEFAULT_CONFIG_PATHS) == lookup.CONFIG_PATHS


def test_environment_wins_over_toml(tmp_path: Path) -> None:
    config = tmp_path / "cti.toml"
    config.write_text(
        '[database]\nurl = "sqlite:////from/file.db"\n[directory]\nregion = "MA"\n', encoding="utf-8"
    )
    both = lookup.read_settings({"CTI_CONFIG": str(config), "CTI_DATABASE_URL": "sqlite:////from/env.db"})
    assert (both.database_url, both.region) == ("sqlite:////from/env.db", "MA")
    assert lookup.read_settings({"CTI_CONFIG": str(config), "CTI_AGI_TIMEOUT_MS": "250"}).timeout_s == 0.25


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
    assert lookup.name_is_unknown(name, number) is unknown


def test_name_policy_always_and_never() -> None:
    outcome = lookup.Outcome("hit", CustomerMatch(3, "Zoé\nNewline", False, 0))
    always = lookup.plan_variables(outcome, "Carrier Name", "+33612345678", "always")
    assert ("CALLERID(name)", "Zoé Newline") in always  # no line break may reach the AGI pipe
    never = lookup.plan_variables(outcome, "", "+33612345678", "never")
    assert [name for name, _ in never] == ["CTI_CUSTOMER_ID", "CTI_LOOKUP"]


def test_sqlite_urls() -> None:
    assert sqlite_path("sqlite:////var/lib/cti/cti.db") == "/var/lib/cti/cti.db"
    assert sqlite_path("sqlite+aiosqlite:////tmp/a%20b.db") == "/tmp/a b.db"
    with pytest.raises(DirectoryUnavailable, match="relative"):
        sqlite_path("sqlite:///cti.db")
    with pytest.raises(DirectoryUnavailable, match="in-memory"):
        sqlite_path("sqlite://")


def test_unsupported_url_scheme() -> None:
    with pytest.raises(DirectoryUnavailable, match="unsupported"):
        find_customers("mysql://x/y", "+33612345678", time.monotonic() + 1)


def test_find_customers_postgresql_orders_vip_first(pg_url: str) -> None:
    found = find_customers(pg_url, "+33311223344", time.monotonic() + 2)
    assert found == [
        CustomerMatch(11, "Standard Dupuis SARL", True, 5),
        CustomerMatch(12, "Paul Dupuis", False, 0),
    ]


def test_pgwire_reports_server_errors(pg_url: str) -> None:
    target = PgTarget("127.0.0.1", 5432, "postgres", "", pg_url.rsplit("/", 1)[1])
    with pytest.raises(PgError, match="42P01"):
        fetch_all(target, "SELECT * FROM no_such_table WHERE x = $1", ["1"], time.monotonic() + 2)
    rows = fetch_all(target, "SELECT $1::text, NULL::text, 't'::boolean", ["é"], time.monotonic() + 2)
    assert rows == [("é", None, "t")]


def test_scram_sha256_rfc7677_vector() -> None:
    scram = ScramSha256("pencil", username="user", nonce="rOprNGfwEbeRWgbNEkqO")
    assert scram.client_first() == "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    assert scram.client_final(server_first) == (
        "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    scram.verify_server_final("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
    with pytest.raises(PgError):
        scram.verify_server_final("v=AAAA")


def test_md5_password_matches_postgresql_formula() -> None:
    # PostgreSQL: "md5" + md5(md5(password + user) + salt)
    assert (
        md5_password("postgres", "secret", b"\x01\x02\x03\x04")
        == "md5"
        + __import__("hashlib")
        .md5(__import__("hashlib").md5(b"secretpostgres").hexdigest().encode() + b"\x01\x02\x03\x04")
        .hexdigest()
    )


# ----------------------------------------------------------------- the 200 ms budget


def test_agi_import_path_stays_light() -> None:
    code = (
        "import sys, cti.agi.lookup, cti.agi.customers;"
        "heavy = {'sqlalchemy', 'asyncio', 'asyncpg', 'structlog', 'aiohttp', 'cti.config',"
        " 'tomllib', 'ssl'};"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_whole_run_fits_in_200_ms(sqlite_url: str) -> None:
    session = load_session(SESSIONS / "hit_vip.agi")
    timings = [drive(session, {"CTI_DATABASE_URL": sqlite_url}).elapsed_s for _ in range(7)]
    best, median = min(timings) * 1000, statistics.median(timings) * 1000
    print(f"cti-agi hit over SQLite: min {best:.0f} ms, median {median:.0f} ms")
    # The best of seven: a busy CI machine slows some runs, never all of them.
    assert min(timings) < 0.2


def test_slow_dns_cannot_outlive_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    from cti.agi import pgwire

    def stuck(*_args: object, **_kwargs: object) -> list[object]:
        time.sleep(1.5)  # a DNS server that does not answer; getaddrinfo ignores socket timeouts
        return []

    monkeypatch.setattr(pgwire.socket, "getaddrinfo", stuck)
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="resolving"):
        pgwire._resolve("db.example", 5432, time.monotonic() + 0.1)
    assert time.monotonic() - started < 1.0


def test_postgresql_by_host_name(pg_url: str) -> None:
    by_name = pg_url.replace("127.0.0.1", "localhost")
    found = find_customers(by_name, "+33612345678", time.monotonic() + 2)
    assert [c.id for c in found] == [42]
