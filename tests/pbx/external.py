"""The tier's scenarios against a PBX and a daemon that already run: the compose lab (docker/lab).

`CTI_PBX_EXTERNAL=<file>` (`docker/lab up` writes build/lab/pbx-external.json) switches the
tier's fixtures from "a local Asterisk and `cti serve` per test" to the running lab; only the
scenarios marked `external` run then. The file says where everything is:

    {"ami_port": 5038, "sip_port": 5060, "pstn_port": 5070, "caller_ports": [5071, 5072, 5073],
     "agi_port": 4573, "web_url": "http://127.0.0.1:8080", "ami_secret": "...",
     "database_url": "postgresql+asyncpg://cti:...@127.0.0.1:5433/cti",
     "records_url": "postgresql://cti_reader:...@127.0.0.1:5433/asterisk",
     "asterisk_exec": ["docker", "exec", "<id>"], "asterisk_log_dir": "/var/log/asterisk",
     "cti_exec": ["docker", "exec", "-i", "<id>"], "cti_logs": ["docker", "logs", "<id>"],
     "cti_restart": ["docker", "restart", "<id>"], "containers": ["<id>", "<id>", "<id>"]}

`asterisk_exec` and `cti_exec` are command prefixes that run a command where the PBX and the
daemon run (`asterisk -rx ...`, `cat queue_log`, `cti users add ...`). The lab lives on across
scenarios, where the tier gives each its own; so that a scenario sees what it would see on a
fresh tier, each starts with no agent logged in (the queues' dynamic members removed), sees only
the calls it made (`calls()` leaves out those stored before it began), and the trunk is qualified
again once the scenario's SIPp operator listens. What cannot be reset (campaigns, the history
report's totals, the customer directory) is why only some scenarios are marked: each of them
runs once per fresh lab (`docker/lab down` removes its volumes).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from daemon import AGENTS, PASSWORD, CtiDaemon
from lab import Asterisk, Ports

ENV = "CTI_PBX_EXTERNAL"


@dataclass(frozen=True)
class LabConfig:
    ami_port: int
    sip_port: int
    pstn_port: int
    caller_ports: tuple[int, ...]
    agi_port: int
    web_url: str
    ami_secret: str
    database_url: str
    asterisk_exec: tuple[str, ...]
    cti_exec: tuple[str, ...]
    cti_logs: tuple[str, ...]
    asterisk_log_dir: str = "/var/log/asterisk"
    containers: tuple[str, ...] = ()  # the lab's Docker containers (tests/pbx/test_lab.py)
    cti_restart: tuple[str, ...] = ()
    # Asterisk's queue_log and CEL in PostgreSQL, as cti reads them (deploy step 6); "" = none.
    records_url: str = ""

    @classmethod
    def from_env(cls) -> LabConfig | None:
        path = os.environ.get(ENV)
        if not path:
            return None
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        for key in ("caller_ports", "asterisk_exec", "cti_exec", "cti_logs", "containers", "cti_restart"):
            raw[key] = tuple(raw.get(key, ()))
        return cls(**raw)

    @property
    def ports(self) -> Ports:
        return Ports(self.ami_port, self.sip_port, self.pstn_port, self.caller_ports, self.agi_port)


@dataclass
class ExternalAsterisk(Asterisk):
    """The lab's Asterisk, seen through the same methods as the tier's own."""

    lab: LabConfig | None = None

    @property
    def config(self) -> LabConfig:
        assert self.lab is not None
        return self.lab

    def prepare(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        (self.log_dir / "cdr-csv").mkdir(exist_ok=True)

    def start(self, timeout_s: float = 30.0) -> None:
        self.wait_booted(timeout_s)
        self.reset()

    def wait_booted(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.cli("core waitfullybooted", timeout_s=5)
                break
            except (subprocess.SubprocessError, OSError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the lab's asterisk is not up: {self.tail()}") from None
                time.sleep(0.5)
        self.record_ami()

    def stop(self) -> None:
        """The lab keeps running; only this scenario's AMI recorder stops."""
        if self._recorder is not None:
            self._recorder.shutdown(socket.SHUT_RDWR)  # the recorder's thread reads EOF and closes it
            self._recorder = None

    def run_there(self, *command: str, timeout_s: float = 10.0, check: bool = True) -> str:
        result = subprocess.run(
            [*self.config.asterisk_exec, *command],
            capture_output=True,
            text=True,
            timeout=max(timeout_s, 0.5),
            check=check,
        )
        return result.stdout

    def cli(self, command: str, timeout_s: float = 10.0) -> str:
        return self.run_there("asterisk", "-rx", command, timeout_s=timeout_s)

    def fetch(self, name: str) -> Path:
        """A copy of one of the PBX's log files (queue_log, cdr-csv/Master.csv), fresh each time."""
        local = self.log_dir / name
        local.parent.mkdir(parents=True, exist_ok=True)
        text = self.run_there("sh", "-c", f"cat {self.config.asterisk_log_dir}/{name} 2>/dev/null || true")
        local.write_text(text, encoding="utf-8")
        return local

    @property
    def queue_log(self) -> Path:
        return self.fetch("queue_log")

    def cdr_rows(self) -> list[dict[str, str]]:
        self.fetch("cdr-csv/Master.csv")
        return super().cdr_rows()

    def tail(self, lines: int = 60) -> str:
        try:
            return "--- messages.log\n" + self.run_there(
                "tail", "-n", str(lines), f"{self.config.asterisk_log_dir}/messages.log", check=False
            )
        except (subprocess.SubprocessError, OSError) as error:
            return f"(no log: {error})"

    def collect(self) -> None:
        """The lab's logs into this scenario's run directory (its artefacts)."""
        for name in ("messages.log", "queue_log", "cdr-csv/Master.csv"):
            self.fetch(name)

    # ---- a fresh floor for each scenario

    def ami_list(self, action: str, complete: str, **headers: str) -> list[dict[str, str]]:
        """The events of one list action (QueueStatus…) as dicts, up to its `complete` event."""
        with socket.create_connection(("127.0.0.1", self.ports.ami), timeout=10) as sock:
            login = f"Action: Login\r\nUsername: cti\r\nSecret: {self.ami_secret}\r\nEvents: off\r\n\r\n"
            body = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            sock.sendall(f"{login}Action: {action}\r\nActionID: ext-list\r\n{body}\r\n".encode())
            data = b""
            while f"Event: {complete}".encode() not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        blocks = []
        for block in data.decode(errors="replace").split("\r\n\r\n"):
            fields = dict(line.split(": ", 1) for line in block.split("\r\n") if ": " in line)
            if fields.get("ActionID") == "ext-list" and "Event" in fields:
                blocks.append(fields)
        return blocks

    def reset(self) -> None:
        """No agent logged in: every dynamic member (a *41 or desktop login) leaves its queues,
        as on a freshly started tier. Static members are the configuration's and stay."""
        members = self.ami_list("QueueStatus", "QueueStatusComplete")
        for member in members:
            if member.get("Event") == "QueueMember" and member.get("Membership") == "dynamic":
                answer = self.ami("QueueRemove", Queue=member["Queue"], Interface=member["Location"])
                assert "Success" in answer, answer

    def qualify_trunk(self, timeout_s: float = 10.0) -> None:
        """Ask the trunk's far end (the scenario's SIPp operator, now listening) at once: a trunk
        found unreachable earlier (no operator between scenarios) would refuse every call out."""
        self.cli("pjsip qualify trunk")
        deadline = time.monotonic() + timeout_s
        while "Avail" not in (contacts := self.cli("pjsip show contacts like trunk")):
            if time.monotonic() > deadline:
                raise AssertionError(f"the trunk's operator does not answer the qualify:\n{contacts}")
            time.sleep(0.2)


_USERS_ADDED: set[str] = set()


@dataclass
class ExternalCti(CtiDaemon):
    """The lab's daemon: its CLI and database, through the same methods as the tier's own."""

    lab: LabConfig | None = None
    baseline: frozenset[str] = field(default_factory=frozenset)

    @property
    def config_lab(self) -> LabConfig:
        assert self.lab is not None
        return self.lab

    @property
    def url(self) -> str:
        return self.config_lab.web_url

    def write_config(self) -> None:
        self.run.mkdir(parents=True, exist_ok=True)

    def add_users(self, template: Path | None = None) -> None:
        """The tier's users, once per lab and test session: `cti users add` (which creates or
        updates) for each, in one process where the daemon runs (one start, not seven)."""
        if self.url in _USERS_ADDED:
            return
        argvs = [
            ["users", "add", user, "--role", "agent", "--interface", device, "--device", device]
            for user, device in AGENTS.items()
        ]
        argvs.append(["users", "add", "chef", "--role", "supervisor"])
        script = "import json, sys\nfrom cti.cli import main\nfor a in json.loads(sys.argv[1]):\n    main(a)"
        argvs = [[*argv, "--password-stdin"] for argv in argvs]
        result = subprocess.run(
            [*self.config_lab.cti_exec, "python3", "-c", script, json.dumps(argvs)],
            input=f"{PASSWORD}\n" * len(argvs), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if result.stdout.count("saved") != len(argvs):
            raise AssertionError(f"cti users add failed: {result.stderr}\n{result.stdout}")
        if not self._knows("chef") and self.config_lab.cti_restart:
            # A daemon that caches its users at start refuses those added since (401) until it
            # restarts: restart it rather than fail every scenario on it.
            subprocess.run([*self.config_lab.cti_restart], capture_output=True, timeout=120, check=True)
        _USERS_ADDED.add(self.url)

    def _knows(self, user: str) -> bool:
        """Whether the running daemon accepts `user`'s session (not only its password)."""
        self.start()  # healthy first
        login = urllib.request.Request(
            f"{self.url}/api/login", json.dumps({"username": user, "password": PASSWORD}).encode(),
            {"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(login, timeout=10) as response:
            token = json.load(response)["token"]
        me = urllib.request.Request(f"{self.url}/api/me", headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(me, timeout=10) as response:
                return bool(response.status == 200)
        except urllib.error.HTTPError as error:
            if error.code == 401:
                return False
            raise

    def start(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as response:
                    if json.load(response).get("status") == "ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the lab's cti is not healthy: {self.log_tail()}")
            time.sleep(0.3)
        self.baseline = frozenset(call["linkedid"] for call in asyncio.run(self._all_calls()))

    def stop(self, kill: bool = False) -> None:
        """The lab's daemon keeps running."""

    def cli(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        """`cti ...` where the daemon runs; a file argument on this machine is copied there first."""
        shipped = [self._ship(arg) for arg in args]
        result = subprocess.run(
            [*self.config_lab.cti_exec, "cti", *shipped], input=stdin, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(f"cti {' '.join(args)} failed: {result.stderr}\n{result.stdout}")
        return result.stdout

    def _ship(self, arg: str) -> str:
        path = Path(arg)
        if not path.is_absolute() or arg.startswith(("/dev/", "/proc/")) or not path.is_file():
            return arg
        there = f"/tmp/cti-tier-{os.getpid()}-{abs(hash(arg)):x}-{path.name}"
        subprocess.run(
            [*self.config_lab.cti_exec, "sh", "-c", f"cat > {there}"],
            input=path.read_bytes(), capture_output=True, timeout=30, check=True,
        )  # fmt: skip
        return there

    def logs(self) -> str:
        result = subprocess.run([*self.config_lab.cti_logs], capture_output=True, text=True, timeout=30)
        return result.stdout + result.stderr

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.logs().splitlines()[-lines:])

    def log_events(self) -> list[dict[str, Any]]:
        found = []
        for line in self.logs().splitlines():
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
        return found

    def collect(self) -> None:
        self.run.mkdir(parents=True, exist_ok=True)
        (self.run / "cti.log").write_text(self.logs(), encoding="utf-8")

    # ---- what cti stored: the lab's PostgreSQL

    async def _all_calls(self) -> list[dict[str, Any]]:
        from cti.db.calls_store import load_calls
        from cti.db.engine import create_engine

        engine = create_engine(self.config_lab.database_url)
        try:
            return await load_calls(engine)
        finally:
            await engine.dispose()

    async def calls(self) -> list[dict[str, Any]]:
        """The calls this scenario made: those stored before it began are left out."""
        return [call for call in await self._all_calls() if call["linkedid"] not in self.baseline]

    async def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        """As the tier's (SQLite, `?` placeholders), with instants as SQLite gives them: text."""
        from sqlalchemy import text

        from cti.db.engine import create_engine

        names = {f"p{i}": value for i, value in enumerate(params)}
        counter = iter(range(len(params)))
        statement = text(re.sub(r"\?", lambda _: f":p{next(counter)}", query))
        engine = create_engine(self.config_lab.database_url)
        try:
            async with engine.connect() as conn:
                rows = (await conn.execute(statement, names)).all()
        finally:
            await engine.dispose()
        return [tuple(_as_sqlite(value) for value in row) for row in rows]


def _as_sqlite(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, bool):
        return int(value)
    return value
