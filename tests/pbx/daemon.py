"""`cti serve` as a real process beside the tier's Asterisk, and what tests read back from it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from lab import AMI_SECRET, Asterisk, free_port

CTI = str(Path(sys.executable).with_name("cti"))
PASSWORD = "tier-password-1"
# The lab's agents (pjsip.conf 1001-1006) and the cti users who sit at them.
AGENTS = {f"agent{n}": f"PJSIP/100{n}" for n in range(1, 7)}


@dataclass
class CtiDaemon:
    pbx: Asterisk | None
    run: Path
    web_port: int = field(default_factory=free_port)
    extra_toml: str = ""
    ami_port: int | None = None  # through a relay a test can cut (netcut.AmiRelay), else direct
    log_level: str = "debug"  # every step in the artefacts; benchmarks use "info"
    # Deploy step 9's `records_url`; False: a site that gave cti no access to Asterisk's records.
    use_records: bool = True
    process: subprocess.Popen[bytes] | None = None

    @property
    def db_path(self) -> Path:
        return self.run / "cti.db"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def config(self) -> Path:
        return self.run / "cti.toml"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CTI_")}
        env["CTI_AMI_SECRET"] = AMI_SECRET
        env["CTI_CONFIG"] = str(self.config)
        return env

    def write_config(self) -> None:
        self.run.mkdir(parents=True, exist_ok=True)
        ami_port = self.ami_port or (self.pbx.ports.ami if self.pbx else 5038)
        queue_log = f'queue_log = "{self.pbx.queue_log}"' if self.pbx else ""
        # Deploy step 9: cti reads Asterisk's records (queue_log and CEL in PostgreSQL).
        pgsql = self.pbx.pgsql if self.pbx and self.use_records else None
        records_url = f'records_url = "{pgsql.url}"' if pgsql else ""
        agi_port = self.pbx.ports.agi if self.pbx else 4573
        self.config.write_text(
            f"""[[asterisk]]
name = "pbx1"
host = "127.0.0.1"
port = {ami_port}
username = "cti"
keepalive_s = 2.0
reconnect_cap_s = 0.5
{queue_log}
{records_url}

[database]
url = "sqlite+aiosqlite:///{self.db_path}"
flush_interval_s = 0.1

[log]
level = "{self.log_level}"
format = "json"

[web]
host = "127.0.0.1"
port = {self.web_port}
secret = "tier-web-secret-0123456789abcdef"

[agi]
host = "127.0.0.1"
port = {agi_port}
{self.extra_toml}
""",
            encoding="utf-8",
        )

    def cli(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        result = subprocess.run(
            [CTI, *args], input=stdin, capture_output=True, text=True, env=self.env(), timeout=60
        )
        if check and result.returncode != 0:
            raise AssertionError(f"cti {' '.join(args)} failed: {result.stderr}\n{result.stdout}")
        return result.stdout

    def add_users(self, template: Path | None = None) -> None:
        """The lab's users: copied from `template` (a database made once per test session by
        this same method: seven `cti users add` and their password hashing cost seconds),
        else created with the CLI, as an admin does."""
        if template is not None and template.is_file():
            self.run.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(template, self.db_path)
            return
        for user, device in AGENTS.items():
            self.cli(
                "users", "add", user, "--role", "agent", "--interface", device, "--device", device,
                "--password-stdin", stdin=PASSWORD + "\n",
            )  # fmt: skip
        self.cli("users", "add", "chef", "--role", "supervisor", "--password-stdin", stdin=PASSWORD + "\n")

    def start(self, timeout_s: float = 30.0) -> None:
        log = open(self.run / "cti.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [CTI, "serve", "--config", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env(),
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        import urllib.request

        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"cti serve exited with {self.process.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as response:
                    if json.load(response).get("status") == "ok":
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"cti serve not healthy within {timeout_s} s: {self.log_tail()}")

    def stop(self, kill: bool = False) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def log_tail(self, lines: int = 40) -> str:
        path = self.run / "cti.log"
        if not path.is_file():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def log_events(self) -> list[dict[str, Any]]:
        found = []
        for line in (self.run / "cti.log").read_text(errors="replace").splitlines():
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
        return found

    # ---- what cti stored

    async def calls(self) -> list[dict[str, Any]]:
        from cti.db.calls_store import load_calls
        from cti.db.engine import create_engine

        engine = create_engine(f"sqlite+aiosqlite:///{self.db_path}")
        try:
            return await load_calls(engine)
        finally:
            await engine.dispose()

    async def ended_calls(self, count: int, within_s: float = 20.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + within_s
        while True:
            calls = [c for c in await self.calls() if c["closed_by"] != "shutdown"]
            if len(calls) >= count or time.monotonic() > deadline:
                return calls
            await asyncio.sleep(0.2)

    async def customer_calls(
        self, count: int = 1, caller: str = "0612345678", within_s: float = 30.0
    ) -> list[dict[str, Any]]:
        """The stored calls of `caller`, once there are `count` of them (the agents' own calls,
        feature codes and the like, are stored too and must not be mistaken for them)."""
        deadline = time.monotonic() + within_s
        while True:
            calls = [
                c for c in await self.calls() if c["caller_raw"] == caller and c["closed_by"] != "shutdown"
            ]
            if len(calls) >= count or time.monotonic() > deadline:
                return calls
            await asyncio.sleep(0.2)

    async def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        import sqlite3

        def run() -> list[tuple[Any, ...]]:
            with sqlite3.connect(self.db_path) as conn:
                return list(conn.execute(query, params))

        return await asyncio.to_thread(run)


class Desk:
    """An agent's or supervisor's desktop: a logged-in HTTP session and its WebSocket."""

    def __init__(self, daemon: CtiDaemon, user: str) -> None:
        self.daemon = daemon
        self.user = user
        self.session = aiohttp.ClientSession()
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.token = ""
        self.frames: list[dict[str, Any]] = []

    async def login(self) -> Desk:
        async with self.session.post(
            f"{self.daemon.url}/api/login", json={"username": self.user, "password": PASSWORD}
        ) as response:
            assert response.status == 200, await response.text()
            self.token = (await response.json())["token"]
        return self

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def connect(self) -> Desk:
        self.ws = await self.session.ws_connect(f"{self.daemon.url}/ws", headers=self.auth)
        # Read all the time, as a desktop does: the server's pings are answered (aiohttp pongs
        # only while someone reads), and a test that waits elsewhere loses no frame.
        self._inbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read(self.ws))
        await self.next("state")
        return self

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            async for message in ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    self._inbox.put_nowait(json.loads(message.data))
        finally:
            self._inbox.put_nowait(None)  # the end of the socket

    async def next(self, *kinds: str, timeout_s: float = 15.0) -> dict[str, Any]:
        """The next frame of one of these types (others are kept in `frames`)."""
        assert self.ws is not None
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            try:
                frame = await asyncio.wait_for(self._inbox.get(), max(left, 0.001))
            except TimeoutError:
                seen = [f.get("type") for f in self.frames]
                raise AssertionError(f"{self.user}: no {kinds} within {timeout_s} s (saw {seen})") from None
            if frame is None:
                raise AssertionError(f"{self.user}: websocket ended ({self.ws.close_code})")
            self.frames.append(frame)
            if frame.get("type") in kinds:
                return dict(frame)

    def seen(self, kind: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("type") == kind]

    async def get(self, path: str, **params: str) -> Any:
        async with self.session.get(f"{self.daemon.url}{path}", params=params, headers=self.auth) as r:
            assert r.status == 200, f"GET {path}: {r.status} {await r.text()}"
            return await r.json()

    async def post(self, path: str, body: dict[str, Any] | None = None, status: int = 200) -> Any:
        async with self.session.post(f"{self.daemon.url}{path}", json=body or {}, headers=self.auth) as r:
            assert r.status == status, f"POST {path}: {r.status} {await r.text()}"
            return await r.json()

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
            await asyncio.gather(self._reader, return_exceptions=True)
        await self.session.close()


def rows_for(rows: Sequence[list[str]], callid: str) -> list[list[str]]:
    return [row for row in rows if len(row) > 1 and row[1] == callid]
