"""A real Asterisk 22 loaded with the shipped asterisk-conf/ and dialplans/, for the real-PBX tier.

The configuration is the shipped one, copied unchanged, plus the deployment steps of
docs/asterisk.md that every site performs (the AMI secret in manager_cti_local.conf, prompts in
sounds/), plus the *overlay*: the few edits a lab on one machine needs and a site does not
(private ports on 127.0.0.1, the test trunk's address). `OVERLAY` lists every one of them; each
edit must find its text exactly once in the shipped file, so a change there breaks the tier
loudly instead of being silently tested against something else. docs/asterisk.md lists the same
edits ("The real-PBX test tier").
"""

from __future__ import annotations

import csv
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = ROOT / "asterisk-conf"
DIALPLAN_DIR = ROOT / "dialplans"
BUILD_SCRIPT = ROOT / "scripts" / "build-asterisk"
AMI_SECRET = "tier-ami-secret-not-for-production"

# Prompts the shipped dialplans play (docs/asterisk.md, deploy step 7), and Asterisk's stock
# prompts they use; no sound package can be downloaded here, so each is a short silence.
CTI_PROMPTS = [
    "language",
    "main",
    "support",
    "billing",
    "info",
    "invalid",
    "closed",
    "holiday",
    "busy",
    "unavailable",
    "dialer-sorry",
    "invalid-number",
]
# Asterisk's core sound package is installed on every real PBX; a lab without it breaks in
# silent ways: a DTMF transfer is abandoned when its announcement (pbx-transfer) cannot be
# opened, and the digits the agent keys next go to the caller instead.
STOCK_PROMPTS = [
    *("agent-loginok", "agent-loggedoff", "beep", "beeperr"),
    *("pbx-transfer", "pbx-invalid", "privacy-incorrect"),
    *("queue-thankyou", "queue-thereare", "queue-callswaiting", "queue-youarenext", "queue-holdtime"),
    *("queue-minute", "queue-minutes", "queue-seconds", "queue-reporthold", "queue-periodic-announce"),
]
PROMPT_S = 0.3


def free_port() -> int:
    """A port free on 127.0.0.1 for both TCP and UDP (SIP and RTP are UDP, AMI and HTTP TCP)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port
    raise RuntimeError("no free port on 127.0.0.1")


@dataclass(frozen=True)
class Ports:
    ami: int
    sip: int
    pstn: int  # the test trunk's far end: where Asterisk sends calls out
    callers: tuple[int, ...]  # source ports the test trunk's inbound calls come from
    agi: int

    @classmethod
    def pick(cls, callers: int = 3) -> Ports:
        chosen: set[int] = set()
        while len(chosen) < 4 + callers:
            chosen.add(free_port())
        ami, sip, pstn, agi, *rest = sorted(chosen)
        return cls(ami, sip, pstn, tuple(rest), agi)


@dataclass(frozen=True)
class Edit:
    file: str
    old: str
    new: str
    why: str


def overlay(ports: Ports) -> list[Edit]:
    """Every difference between the tier's Asterisk configuration and the shipped one."""
    caller_matches = "\n".join(f"match = 127.0.0.1:{port}" for port in ports.callers)
    return [
        Edit("manager.conf", "port = 5038", f"port = {ports.ami}", "a private AMI port"),
        Edit("manager.conf", "bindaddr = 0.0.0.0", "bindaddr = 127.0.0.1", "AMI on loopback only"),
        Edit(
            "pjsip.conf",
            "bind = 0.0.0.0:5060",
            f"bind = 127.0.0.1:{ports.sip}",
            "SIP on loopback, on a private port",
        ),
        Edit(
            "pjsip.conf",
            "contact = sip:sip.operator.example:5060",
            f"contact = sip:127.0.0.1:{ports.pstn}",
            "the test trunk: calls out reach the SIPp 'PSTN' on loopback",
        ),
        Edit(
            "pjsip.conf",
            "match = sip.operator.example",
            caller_matches,
            "the test trunk: inbound calls come from SIPp callers on loopback, told from agents by port",
        ),
        Edit(
            "extensions.conf",
            "CTI_AGI_HOST=127.0.0.1:4573",
            f"CTI_AGI_HOST=127.0.0.1:{ports.agi}",
            "the daemon's FastAGI lookup on a private port",
        ),
    ]


# The PostgreSQL-backed variant (docs/asterisk.md, "The queue_log and CEL in PostgreSQL"): the
# local server on 127.0.0.1:5432 (trust), a throwaway database per test with the tables of
# asterisk-conf/postgresql-tables.sql.
PG_HOST = os.environ.get("CTI_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("CTI_TEST_PG_PORT", "5432"))
PG_TABLES = CONF_DIR / "postgresql-tables.sql"


@dataclass(frozen=True)
class PgTarget:
    """Where the variant's Asterisk writes its queue_log and CEL."""

    database: str
    user: str
    host: str = PG_HOST
    port: int = PG_PORT

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.database}"


async def create_records_database(prefix: str) -> PgTarget | None:
    """A throwaway database on the local server holding asterisk-conf/postgresql-tables.sql's
    tables, for an Asterisk that writes its queue_log and CEL there; None when no PostgreSQL
    answers. The tier's gap tests and benchmarks/fastagi_real_pbx.py use it."""
    admin, user = None, ""
    for user in ("postgres", "root"):
        try:
            admin = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=user, database="test", timeout=5)
            break
        except (OSError, asyncpg.PostgresError, TimeoutError):
            continue
    if admin is None:
        return None
    target = PgTarget(f"{prefix}_{uuid.uuid4().hex[:12]}", user)
    try:
        await admin.execute(f'CREATE DATABASE "{target.database}"')
    finally:
        await admin.close()
    try:
        conn = await asyncpg.connect(target.url)
        try:
            await conn.execute(PG_TABLES.read_text(encoding="utf-8"))
        finally:
            await conn.close()
    except BaseException:
        await drop_records_database(target)
        raise
    return target


async def drop_records_database(target: PgTarget) -> None:
    admin = await asyncpg.connect(host=target.host, port=target.port, user=target.user, database="test")
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)')
    finally:
        await admin.close()


def pgsql_overlay(target: PgTarget) -> list[Edit]:
    """The variant's edits, on top of `overlay()`: the test's own database and role (the shipped
    files name the site's: `asterisk` on 127.0.0.1:5432)."""
    edits = []
    for file in ("res_pgsql.conf", "cel_pgsql.conf"):
        edits += [
            Edit(file, "dbname = asterisk", f"dbname = {target.database}", "the test's throwaway database"),
            Edit(file, "user = asterisk", f"user = {target.user}", "the local server's trusted role"),
        ]
        if (target.host, target.port) != ("127.0.0.1", 5432):
            edits += [
                Edit(file, "hostname = 127.0.0.1", f"hostname = {target.host}", "another server"),
                Edit(file, "port = 5432", f"port = {target.port}", "another server"),
            ]
    return edits


def apply_overlay(etc: Path, edits: list[Edit]) -> None:
    for edit in edits:
        path = etc / edit.file
        text = path.read_text(encoding="utf-8")
        count = text.count(edit.old)
        if count == 0 and edit.file == "extensions.conf" and "CTI_AGI_HOST" not in text:
            continue  # the FastAGI global is not shipped yet
        if count != 1:
            raise AssertionError(f"overlay: {edit.file} holds {edit.old!r} {count} times, expected once")
        path.write_text(text.replace(edit.old, edit.new), encoding="utf-8")


def asterisk_prefix() -> Path | None:
    """The cached build, if there is one (never builds: that is .ci/run's job, or the developer's)."""
    explicit = os.environ.get("CTI_ASTERISK_PREFIX")
    if explicit:
        return Path(explicit) if (Path(explicit) / "sbin" / "asterisk").is_file() else None
    try:
        out = subprocess.run(
            [str(BUILD_SCRIPT), "--print-prefix"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    prefix = Path(out)
    return prefix if (prefix / ".complete").is_file() else None


def _silence(path: Path, seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\x00\x00" * int(8000 * seconds))


@dataclass
class Asterisk:
    """One Asterisk process with its own directories under `run`."""

    prefix: Path
    run: Path
    ports: Ports
    process: subprocess.Popen[bytes] | None = None
    edits: list[Edit] = field(default_factory=list)
    # The compose lab's switch (dialplans/cti-inbound.conf): open around the clock, so a test run
    # on a Sunday evening reaches the SVI. Tests of the closed path start Asterisk without it.
    force_open: bool = True
    # The AMI user's secret (deploy step 4): the tier writes its own; an external PBX has its own.
    ami_secret: str = AMI_SECRET
    # The PostgreSQL-backed variant: queue_log and CEL go to this database too (pgsql_overlay()).
    pgsql: PgTarget | None = None
    # asterisk.conf's `highpriority = yes` (real-time scheduling, as `asterisk -p`), as deploy
    # step 8 says (the caller lookup's tail); Asterisk's sample file has it commented out, which
    # `benchmarks/fastagi_real_pbx.py --normal-priority` measures. Not root: Asterisk says it
    # could not, and runs at normal priority.
    highpriority: bool = True
    _recorder: socket.socket | None = None

    @property
    def etc(self) -> Path:
        return self.run / "etc"

    @property
    def log_dir(self) -> Path:
        return self.run / "log"

    @property
    def queue_log(self) -> Path:
        return self.log_dir / "queue_log"

    @property
    def conf(self) -> Path:
        return self.etc / "asterisk.conf"

    def prepare(self) -> None:
        etc = self.etc
        etc.mkdir(parents=True)
        for conf in CONF_DIR.glob("*.conf"):
            shutil.copy(conf, etc / conf.name)
        shutil.copytree(DIALPLAN_DIR, etc / "dialplans")
        # Deploy step 4: the AMI user's secret and the daemon's address.
        (etc / "manager_cti_local.conf").write_text(
            f"secret = {AMI_SECRET}\npermit = 127.0.0.1/255.255.255.255\n", encoding="utf-8"
        )
        self.edits = overlay(self.ports) + (pgsql_overlay(self.pgsql) if self.pgsql else [])
        apply_overlay(etc, self.edits)
        dirs = {name: self.run / name for name in ("var", "data", "spool", "runtime", "log", "cache", "agi")}
        for path in dirs.values():
            path.mkdir(exist_ok=True)
        # As Asterisk's `make install` and packages do: cdr_csv writes there, never creates it.
        (dirs["log"] / "cdr-csv").mkdir()
        # Deploy step 7: prompts (silences here), and music on hold for the queues.
        sounds = dirs["data"] / "sounds"
        for language in ("fr", "en"):
            for prompt in CTI_PROMPTS:
                _silence(sounds / language / "cti" / f"{prompt}.wav", PROMPT_S)
            for prompt in STOCK_PROMPTS:
                _silence(sounds / language / f"{prompt}.wav", PROMPT_S)
        _silence(dirs["data"] / "moh" / "silence.wav", 5.0)
        documentation = self.prefix / "var" / "lib" / "asterisk" / "documentation"
        if documentation.is_dir():
            (dirs["data"] / "documentation").symlink_to(documentation)
        self.conf.write_text(
            "[directories]\n"
            f"astetcdir => {etc}\n"
            f"astmoddir => {self.prefix / 'lib' / 'asterisk' / 'modules'}\n"
            f"astvarlibdir => {dirs['var']}\n"
            f"astdbdir => {dirs['var']}\n"
            f"astkeydir => {dirs['var']}\n"
            f"astdatadir => {dirs['data']}\n"
            f"astagidir => {dirs['agi']}\n"
            f"astspooldir => {dirs['spool']}\n"
            f"astrundir => {dirs['runtime']}\n"
            f"astlogdir => {dirs['log']}\n"
            f"astcachedir => {dirs['cache']}\n"
            f"astsbindir => {self.prefix / 'sbin'}\n"
            "[options]\n"
            "verbose = 3\n"
            "defaultlanguage = fr\n" + ("highpriority = yes\n" if self.highpriority else ""),
            encoding="utf-8",
        )

    def start(self, timeout_s: float = 30.0) -> None:
        out = open(self.log_dir / "stdout.log", "ab")  # noqa: SIM115 - lives as long as the process
        env = {k: v for k, v in os.environ.items() if not k.startswith("CTI_")}
        env["PGCONNECT_TIMEOUT"] = "2"  # docs/asterisk.md: a database away never holds a call long
        if self.force_open:
            env["CTI_FORCE_OPEN"] = "1"
        self.process = subprocess.Popen(
            [str(self.prefix / "sbin" / "asterisk"), "-f", "-C", str(self.conf)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        out.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"asterisk exited with {self.process.returncode}: {self.tail()}")
            if (self.run / "runtime" / "asterisk.ctl").exists():
                try:
                    self.cli("core waitfullybooted", timeout_s=deadline - time.monotonic())
                    # A full log for the test's artefacts (runtime command: not a config change).
                    self.cli("logger add channel full.log notice,warning,error,verbose(4),dtmf")
                    self.record_ami()
                    return
                except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"asterisk did not boot within {timeout_s} s: {self.tail()}")

    def wait_booted(self, timeout_s: float = 30.0) -> None:
        """After `core restart`: the same process boots again; runtime settings are gone."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.cli("core waitfullybooted", timeout_s=5)
                break
            except (subprocess.SubprocessError, OSError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"asterisk did not come back: {self.tail()}") from None
                time.sleep(0.2)
        self.cli("logger add channel full.log notice,warning,error,verbose(4),dtmf")
        self.record_ami()

    def record_ami(self) -> None:
        """Keep every byte Asterisk's AMI sends (to the same user as the daemon) in log/ami.raw:
        the scenario's exact transcript, for the artefacts and for `cti replay`."""
        import threading

        sock = socket.create_connection(("127.0.0.1", self.ports.ami), timeout=5)
        login = f"Action: Login\r\nUsername: cti\r\nSecret: {self.ami_secret}\r\nEvents: on\r\n\r\n"
        sock.sendall(login.encode())
        sock.settimeout(None)
        out = open(self.log_dir / "ami.raw", "ab")  # noqa: SIM115

        def pump() -> None:
            with out, sock:
                while chunk := sock.recv(65536):
                    out.write(chunk)
                    out.flush()

        threading.Thread(target=pump, name="ami-recorder", daemon=True).start()
        self._recorder = sock

    def ami(self, action: str, **headers: str) -> str:
        """Send one AMI action as the cti user and return Asterisk's response block."""
        with socket.create_connection(("127.0.0.1", self.ports.ami), timeout=10) as sock:
            lines = ["Action: Login", "Username: cti", f"Secret: {self.ami_secret}", "Events: off"]
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            action_id = headers.pop("ActionID", "tier-1")
            body = [f"Action: {action}", f"ActionID: {action_id}"]
            for key, value in headers.items():
                for item in value.split("\n"):
                    body.append(f"{key}: {item}")
            sock.sendall(("\r\n".join(body) + "\r\n\r\n").encode())
            data = b""
            while f"ActionID: {action_id}".encode() not in data or not data.endswith(b"\r\n\r\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        text = data.decode(errors="replace")
        return next((b for b in text.split("\r\n\r\n") if f"ActionID: {action_id}" in b), text)

    def cli(self, command: str, timeout_s: float = 10.0) -> str:
        result = subprocess.run(
            [str(self.prefix / "sbin" / "asterisk"), "-C", str(self.conf), "-rx", command],
            capture_output=True,
            text=True,
            timeout=max(timeout_s, 0.5),
            check=True,
        )
        return result.stdout

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            self.cli("core stop now", timeout_s=5)
            self.process.wait(10)
        except (subprocess.SubprocessError, OSError):
            self.process.kill()
            self.process.wait(5)

    def tail(self, lines: int = 60) -> str:
        chunks = []
        for name in ("stdout.log", "messages.log", "full.log"):
            path = self.log_dir / name
            if path.is_file():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                chunks.append(f"--- {name}\n" + "\n".join(text))
        return "\n".join(chunks)

    def queue_log_rows(self) -> list[list[str]]:
        """queue_log as Asterisk wrote it: time|callid|queue|agent|event|data1|…"""
        if not self.queue_log.is_file():
            return []
        with self.queue_log.open(encoding="utf-8", errors="replace") as handle:
            return [line.rstrip("\n").split("|") for line in handle if line.strip()]

    def cdr_rows(self) -> list[dict[str, str]]:
        """Master.csv (cdr_csv, with the columns cdr.conf [csv] turns on), in its column order."""
        path = self.log_dir / "cdr-csv" / "Master.csv"
        if not path.is_file():
            return []
        columns = [
            "accountcode",
            "src",
            "dst",
            "dcontext",
            "clid",
            "channel",
            "dstchannel",
            "lastapp",
            "lastdata",
            "start",
            "answer",
            "end",
            "duration",
            "billsec",
            "disposition",
            "amaflags",
            "uniqueid",
            "userfield",
            "peeraccount",
            "linkedid",
            "sequence",
        ]
        with path.open(encoding="utf-8", errors="replace", newline="") as handle:
            return [dict(zip(columns, row, strict=False)) for row in csv.reader(handle)]


def new_run_dir() -> Path:
    # Short: Asterisk's control socket path must fit in a sockaddr_un (108 bytes).
    return Path(tempfile.mkdtemp(prefix="cti-pbx-", dir="/tmp"))


def wait_for(predicate: object, timeout_s: float = 10.0, interval_s: float = 0.1) -> object:
    """Poll a synchronous predicate until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()  # type: ignore[operator]
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval_s)


def iter_lines(path: Path) -> Iterator[str]:
    if path.is_file():
        yield from path.read_text(errors="replace").splitlines()
