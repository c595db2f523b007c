"""`cti demo`: the daemon against the built-in simulated PBX, with SQLite, sample customers and
live traffic, so a newcomer sees screen pops and running ticket timers within seconds."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import random
import secrets
import signal
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import structlog

from cti.app import Daemon
from cti.config import AsteriskServer, DatabaseSettings, LogSettings, Secret, Settings, WebSettings
from cti.directory.importer import import_sample
from cti.directory.numbers import display_form
from cti.logs import configure_logging
from cti.sim.config import MemberSpec, SimConfig, call_centre_config
from cti.sim.pbx import SimulatedPbx

log = structlog.get_logger(__name__)
PASSWORD = "cti-demo"
SUPERVISOR = "superviseur"
# IVR digits of the simulated SVI: 1 support, 2 sales, 5 hotline (ring-all), 3 information, 9 invalid.
CHOICES = {"1": 0.5, "2": 0.2, "5": 0.15, "3": 0.1, "9": 0.05}
# An agent's first desktop connection gets a call into the hotline, which rings every free agent
# at once: whoever just logged in sees a pop within seconds (digit 5 of the simulated SVI).
WELCOME_QUEUE, WELCOME_DIGITS = "hotline", "5"


@dataclass(frozen=True)
class DemoOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    agents: int = 6
    calls_per_minute: float = 6.0
    seed: int = 1
    database: str | None = None


def _sample_numbers() -> list[tuple[str, str]]:
    """(number as a carrier might send it, name) for the sample customers: E.164, national, spaced."""
    text = resources.files("cti.directory").joinpath("sample_customers.csv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(text.splitlines()))
    return [(row["phone"], row["name"]) for row in rows if row.get("phone")]


def _caller(rng: random.Random, known: list[tuple[str, str]]) -> tuple[str, str]:
    roll = rng.random()
    if roll < 0.7 and known:
        number, name = rng.choice(known)
        compact = number.replace(" ", "")
        if compact.startswith("+33") and rng.random() < 0.5:
            compact = (display_form(compact, "FR") or compact).replace(
                " ", ""
            )  # national, as some trunks send
        return compact, name if rng.random() < 0.5 else ""
    if roll < 0.85:
        return f"+336{rng.randrange(10**8):08d}", ""  # unknown: the desktop offers a new-customer form
    if roll < 0.93:
        return f"+2126{rng.randrange(10**8):08d}", ""
    return "anonymous", ""


async def _traffic(pbx: SimulatedPbx, options: DemoOptions, stop: asyncio.Event) -> None:
    rng = random.Random(options.seed)
    known = _sample_numbers()
    await asyncio.sleep(2.0)  # the first pop within seconds of the banner
    while not stop.is_set():
        number, name = _caller(rng, known)
        digits = rng.choices(list(CHOICES), list(CHOICES.values()))[0]
        pbx.inbound_call(number, name, digits=digits, stay_s=rng.uniform(40, 120), talk_s=rng.uniform(15, 60))
        gap = rng.expovariate(options.calls_per_minute / 60.0) if options.calls_per_minute > 0 else 3600.0
        try:
            await asyncio.wait_for(stop.wait(), min(gap, 30.0))
        except TimeoutError:
            continue


def _settings(options: DemoOptions, sim_port: int, database: str) -> Settings:
    return Settings(
        asterisk=(
            AsteriskServer(
                name="demo",
                host="127.0.0.1",
                port=sim_port,
                username="cti",
                secret=Secret("ctisecret"),
                keepalive_s=5.0,
            ),
        ),
        database=DatabaseSettings(url=f"sqlite+aiosqlite:///{database}"),
        log=LogSettings(level="warning"),
        web=WebSettings(host=options.host, port=options.port, secret=Secret(secrets.token_hex(16))),
    )


async def _users(daemon: Daemon, agents: int) -> list[str]:
    names = []
    for i in range(1, agents + 1):
        username = f"agent{i}"
        await daemon.users.add(
            username, PASSWORD, "agent", f"Agent {i}", "fr", interfaces=[f"Local/agent{i}@agents/n"]
        )
        names.append(username)
    await daemon.users.add(SUPERVISOR, PASSWORD, "supervisor", "Superviseur", "fr")
    return names


def _banner(daemon: Daemon, users: list[str], database: str) -> str:
    return "\n".join(
        [
            "",
            "cti demo is running (simulated PBX, SQLite, sample customers, live calls).",
            f"  Agent desktop:  {daemon.web_url}/desktop",
            f"  Wallboard:      {daemon.web_url}/wallboard",
            f"  Management:     {daemon.web_url}/admin",
            f"  Agents:         {', '.join(users)}  (password: {PASSWORD})",
            f"  Supervisor:     {SUPERVISOR}  (password: {PASSWORD})",
            f"  Database:       {database}",
            "Log in as an agent: calls ring within seconds. Ctrl-C stops everything.",
            "",
        ]
    )


def _config(options: DemoOptions) -> SimConfig:
    """The simulated centre, its hotline ringing every agent (the welcome calls go there)."""
    config = call_centre_config(options.agents, speed=1.0, seed=options.seed)
    everyone = tuple(MemberSpec(a.exten) for a in config.agents)
    queues = tuple(
        dataclasses.replace(q, members=everyone) if q.name == WELCOME_QUEUE else q for q in config.queues
    )
    return dataclasses.replace(config, queues=queues)


async def _welcome_calls(
    daemon: Daemon, pbx: SimulatedPbx, options: DemoOptions, stop: asyncio.Event
) -> None:
    """A call for each agent whose desktop connects for the first time (the README's promise:
    log in, and a call rings within seconds)."""
    rng, known, welcomed = random.Random(options.seed + 1), _sample_numbers(), set[str]()
    while not stop.is_set():
        for username, clients in list(daemon.hub.clients.items()):
            principal = next((c.principal for c in clients), None)
            if principal is None or principal.role != "agent" or username in welcomed:
                continue
            welcomed.add(username)
            number, name = _caller(rng, known)
            pbx.inbound_call(number, name, digits=WELCOME_DIGITS, stay_s=90, talk_s=rng.uniform(20, 40))
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except TimeoutError:
            continue


async def run(options: DemoOptions) -> None:
    configure_logging("warning", "auto")
    workdir = Path(tempfile.mkdtemp(prefix="cti-demo-"))
    database = options.database or str(workdir / "cti-demo.db")
    config = _config(options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with SimulatedPbx(config) as pbx:
        daemon = Daemon(_settings(options, pbx.port, database))
        await daemon.start()
        try:
            await import_sample(daemon.engine, "FR")
            users = await _users(daemon, options.agents)
            print(_banner(daemon, users, database), flush=True)
            await asyncio.gather(_traffic(pbx, options, stop), _welcome_calls(daemon, pbx, options, stop))
        finally:
            await daemon.shutdown()
