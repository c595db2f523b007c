"""Screen-pop latency: from the `AgentCalled` bytes written on the AMI socket to the pop frame
received by the agent's WebSocket client.

The daemon runs as in production (SQLite file, every consumer: pops, tickets, live statistics,
the dialer) in this process. The AMI server is a second process, so that a stalled daemon cannot
also delay the sender and hide its own stall; N agents (default 1,000) are logged in over real
WebSockets on 127.0.0.1 from further processes (two by default: a real desktop has a machine to
itself, and one process's own queueing would be counted against the daemon). Calls arrive as
a Poisson process (the arrival model of Erlang C) at the given mean rate; each spends a random
time in the IVR (mean 1 s), then joins the queue and rings a free agent (the frames and headers
of inbound_answered.ami), is answered a random time later (mean 0.5 s; a ticket opens) and ends
after a random talk time (mean 3 s).
The draws are exponential and seeded, so two runs send the same traffic. Processes stamp with
CLOCK_MONOTONIC (`time.monotonic`), which is system-wide on Linux.

    python benchmarks/screenpop_latency.py [--agents 1000] [--calls 2000] [--rate 20] [--seed 1]
        [--client-processes 2] [--login-burst 150 [--login-burst-at 20] [--no-login-limits]]

`--login-burst N` adds, from one more process, N simultaneous `POST /api/login` with wrong
passwords (agents 0..N-1, one attempt each, as a password spray from one address would) at
`--login-burst-at` seconds into the calls, and polls `/healthz` every 50 ms from then until the
burst is answered: the result gives the burst's statuses, how long it took, and the worst
`/healthz` time (what a stalled event loop shows first).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import heapq
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Mean times: in the IVR before the call rings, ringing before the answer, and talk. With 20
# calls/s, about 90 calls are in progress at any time, and each one opens its ticket.
IVR_S = 1.0
ANSWER_AFTER_S = 0.5
TALK_S = 3.0
POP_PREFIX = '{"v":1,"type":"pop",'

sys.path.insert(0, str(ROOT / "src"))


def frame(**headers: object) -> bytes:
    return ("\r\n".join(f"{k}: {v}" for k, v in headers.items()) + "\r\n\r\n").encode()


def call_frames(n: int, agent: int) -> tuple[bytes, bytes, bytes, bytes]:
    """One queue call, in the order and with the headers Asterisk sends (inbound_answered.ami):
    the caller's channel joining the queue, `AgentCalled` ringing `agent`, the answer, and the
    end (AgentComplete and the legs' hangups)."""
    uid, dest_uid = f"1800000000.{n}", f"1800000001.{n}"
    caller = f"+336{10000000 + n:08d}"
    ch = f"PJSIP/trunk-{n:08x}"
    interface = f"PJSIP/{5000 + agent}"
    dest = f"{interface}-{n:08x}"
    party = {"Channel": ch, "Uniqueid": uid, "Linkedid": uid, "CallerIDNum": caller, "CallerIDName": "Bench"}
    member = {
        "DestChannel": dest,
        "DestUniqueid": dest_uid,
        "DestLinkedid": uid,
        "Queue": "support",
        "Interface": interface,
        "MemberName": f"agent{agent}",
    }
    # As in the capture: the call starts in the IVR (its lookup starts then) and, seconds later,
    # joins the queue, and Asterisk rings a free agent in the same instant.
    setup = frame(Event="Newchannel", Context="ivr", Exten="s", **party)
    ring = (
        frame(Event="QueueCallerJoin", Queue="support", Position=1, Count=1, **party)
        + frame(
            Event="Newchannel",
            Channel=dest,
            Uniqueid=dest_uid,
            Linkedid=uid,
            CallerIDNum=caller,
            Context="agents",
        )
        + frame(Event="AgentCalled", **party, **member)
    )
    answer = frame(Event="QueueCallerLeave", Queue="support", Position=1, Count=0, **party) + frame(
        Event="AgentConnect", HoldTime=1, RingTime=1, **party, **member
    )
    end = (
        frame(Event="AgentComplete", HoldTime=1, TalkTime=3, Reason="agent", **party, **member)
        + frame(Event="Hangup", Channel=dest, Uniqueid=dest_uid, Linkedid=uid, Cause=16)
        + frame(Event="Hangup", Cause=16, **party)
    )
    return setup, ring, answer, end


async def clients_main(url: str, tokens: list[str]) -> None:
    """Child process: one WebSocket per agent given; prints {linkedid: receive monotonic} once
    told to stop (a line on stdin)."""
    import aiohttp

    received: dict[str, float] = {}

    async def agent(session: aiohttp.ClientSession, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        async with session.ws_connect(f"{url}/ws", headers=headers, max_msg_size=0) as ws:
            async for msg in ws:
                at = time.monotonic()
                # Only pops are parsed: hundreds of desktops share this process, and its own
                # delays would count as the daemon's.
                if msg.data.startswith(POP_PREFIX):
                    # The first frame of a call's pop: the answer and the end update it later.
                    received.setdefault(json.loads(msg.data)["pop"]["linkedid"], at)

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = [asyncio.create_task(agent(session, t)) for t in tokens]
        await asyncio.sleep(2.0)  # the connections are up (the parent waits for all of them)
        # Hundreds of connections' objects would make each full garbage collection of this
        # process a stall of tens of milliseconds, counted against the daemon: set them aside.
        gc.collect()
        gc.freeze()
        print("READY", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps(received), flush=True)


async def burst_main(url: str, logins: int, at_s: float) -> None:
    """Child process: N simultaneous wrong-password logins `at_s` seconds after GO (a line on
    stdin), /healthz polled meanwhile; prints the statuses, the burst's duration and the worst
    /healthz time."""
    import aiohttp

    loop = asyncio.get_running_loop()
    print("READY", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    await asyncio.sleep(at_s)
    statuses: dict[str, int] = {}
    health_ms: list[float] = []
    done = asyncio.Event()

    async def login(session: aiohttp.ClientSession, n: int) -> None:
        body = {"username": f"agent{n}", "password": "not-the-password"}
        async with session.post(f"{url}/api/login", json=body) as reply:
            statuses[str(reply.status)] = statuses.get(str(reply.status), 0) + 1

    async def health(session: aiohttp.ClientSession) -> None:
        while not done.is_set():
            began = time.monotonic()
            async with session.get(f"{url}/healthz") as reply:
                await reply.read()
            health_ms.append((time.monotonic() - began) * 1000)
            await asyncio.sleep(0.05)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        poller = asyncio.create_task(health(session))
        began = time.monotonic()
        await asyncio.gather(*(login(session, n) for n in range(logins)))
        took = time.monotonic() - began
        done.set()
        await poller
    print(
        json.dumps(
            {
                "logins": logins,
                "statuses": statuses,
                "burst_s": round(took, 2),
                "healthz_max_ms": round(max(health_ms), 1) if health_ms else None,
            }
        ),
        flush=True,
    )


def schedule(calls: int, agents: int, rate: float, seed: int) -> list[tuple[float, int, int, bytes, bool]]:
    """(offset s, order, call, frames, is the ring) for every frame of every call, in time order.
    Each call rings an agent that is not on another call (the one free the longest)."""
    rng = random.Random(seed)
    plan: list[tuple[float, int, int, bytes, bool]] = []
    free_at = [(0.0, a) for a in range(agents)]  # (busy until, agent): a heap
    arrival = 0.0
    for n in range(calls):
        arrival += rng.expovariate(rate)
        ring = arrival + rng.expovariate(1 / IVR_S)
        answer = ring + rng.expovariate(1 / ANSWER_AFTER_S)
        end = answer + rng.expovariate(1 / TALK_S)
        until, agent = heapq.heappop(free_at)
        if until > ring:
            raise SystemExit(f"call {n}: all {agents} agents are on a call; lower --rate or add --agents")
        heapq.heappush(free_at, (end, agent))
        setup, ringing, answered, ended = call_frames(n, agent)
        plan += [
            (arrival, 4 * n, n, setup, False),
            (ring, 4 * n + 1, n, ringing, True),
            (answer, 4 * n + 2, n, answered, False),
            (end, 4 * n + 3, n, ended, False),
        ]
    heapq.heapify(plan)
    return plan


async def pbx_main(calls: int, agents: int, rate: float, seed: int) -> None:
    """Child process: the AMI server. It stamps each `AgentCalled` as its bytes leave, on its own
    event loop, so a daemon that stalls (garbage collection, a long push) shows as latency instead
    of also delaying the sender and hiding itself."""
    writers: list[asyncio.StreamWriter] = []
    connected = asyncio.Event()

    async def ami(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"Asterisk Call Manager/11.0.0\r\n")
        buf = b""
        while data := await reader.read(65536):
            buf += data
            while b"\r\n\r\n" in buf:
                raw, buf = buf.split(b"\r\n\r\n", 1)
                msg = dict(line.split(": ", 1) for line in raw.decode().split("\r\n") if ": " in line)
                aid = msg.get("ActionID", "")
                action = msg.get("Action", "").lower()
                if action in ("coreshowchannels", "queuestatus"):
                    done = (
                        "CoreShowChannelsComplete" if action == "coreshowchannels" else "QueueStatusComplete"
                    )
                    writer.write(
                        frame(Response="Success", ActionID=aid, EventList="start")
                        + frame(Event=done, ActionID=aid, EventList="Complete", ListItems=0)
                    )
                    if action == "queuestatus":
                        writers.append(writer)
                        connected.set()
                else:
                    writer.write(frame(Response="Success", ActionID=aid, Message="ok", Ping="Pong"))

    server = await asyncio.start_server(ami, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    loop = asyncio.get_running_loop()
    go = await loop.run_in_executor(None, sys.stdin.readline)
    assert go.strip() == "GO", go
    await asyncio.wait_for(connected.wait(), 10)
    writer = writers[-1]
    sent: dict[str, float] = {}
    plan = schedule(calls, agents, rate, seed)
    start = time.monotonic()
    while plan:
        await asyncio.sleep(max(0.0, start + plan[0][0] - time.monotonic()))
        while plan and start + plan[0][0] <= time.monotonic():
            _, _, n, data, is_ring = heapq.heappop(plan)
            if is_ring:
                sent[f"1800000000.{n}"] = time.monotonic()
            writer.write(data)
            await writer.drain()
    print(json.dumps(sent), flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)  # stay up until the daemon is done
    server.close()


async def child(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
        limit=1 << 26,
    )


def _login_limits(args: argparse.Namespace) -> dict[str, int]:
    """--no-login-limits: every login of the burst reaches a password check (in the workers), so
    the run measures what the checks themselves cost the pops, not what the limits spare."""
    if not args.no_login_limits:
        return {}
    return {"login_attempts_per_address_per_minute": 1_000_000, "login_queue": 100_000}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    from sqlalchemy import insert

    from cti.app import Daemon
    from cti.config import AsteriskServer, DatabaseSettings, LogSettings, Secret, Settings, WebSettings
    from cti.db.models import User
    from cti.logs import configure_logging
    from cti.web.auth import hash_password

    configure_logging("error", "json")
    schedule(args.calls, args.agents, args.rate, args.seed)  # refuses a rate the agents cannot take
    pbx = await child("--pbx", str(args.calls), str(args.agents), str(args.rate), str(args.seed))
    assert pbx.stdin is not None and pbx.stdout is not None
    port = int((await pbx.stdout.readline()).decode())
    tmp = tempfile.mkdtemp()
    settings = Settings(
        asterisk=(AsteriskServer(name="bench", port=port, secret=Secret("x"), keepalive_s=30),),
        database=DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp}/bench.db"),
        log=LogSettings(level="error", format="json"),
        web=WebSettings(port=0, client_queue=1024, **_login_limits(args)),
    )
    daemon = Daemon(settings)
    await daemon.start()
    password_hash = hash_password("benchmark-password")  # one hash for all: argon2 is slow on purpose
    async with daemon.engine.begin() as conn:
        await conn.execute(
            insert(User),
            [
                {
                    "username": f"agent{i}",
                    "display_name": f"Agent {i}",
                    "password_hash": password_hash,
                    "role": "agent",
                    "language": "fr",
                    "interfaces": [f"PJSIP/{5000 + i}"],
                    "devices": [],
                    "active": True,
                }
                for i in range(args.agents)
            ],
        )
    await daemon.users.reload()
    tokens = []
    for i in range(args.agents):  # a session each, as a login would open
        principal = daemon.users.principal(f"agent{i}")
        assert principal is not None
        session_id, expires = await daemon.web_ctx.sessions.open(principal, "127.0.0.1")
        tokens.append(daemon.web_ctx.signer.issue(principal.username, session_id, expires))
    # Desktops are spread over processes (a real one has a machine to itself); each process
    # is told its agents' tokens.
    groups = [tokens[i :: args.client_processes] for i in range(args.client_processes)]
    clients = [await child("--clients", daemon.web_url) for _ in groups]
    for proc, group in zip(clients, groups, strict=True):
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(group).encode() + b"\n")
        await proc.stdin.drain()
    for proc in clients:
        assert proc.stdout is not None and (await proc.stdout.readline()).strip() == b"READY"
    burst = None
    if args.login_burst:
        burst = await child("--burst", daemon.web_url, str(args.login_burst), str(args.login_burst_at))
        assert burst.stdout is not None and (await burst.stdout.readline()).strip() == b"READY"
    while sum(len(c) for c in daemon.hub.clients.values()) < args.agents:  # noqa: ASYNC110 (polls another process)
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # let the connection burst settle
    pbx.stdin.write(b"GO\n")
    await pbx.stdin.drain()
    if burst is not None:
        assert burst.stdin is not None
        burst.stdin.write(b"GO\n")
        await burst.stdin.drain()
    sent = json.loads(await pbx.stdout.readline())
    burst_result = None
    if burst is not None:
        out, _ = await burst.communicate()
        burst_result = json.loads(out.decode().strip().splitlines()[-1])
    await asyncio.sleep(2.0)  # the last pops are on their way
    received: dict[str, float] = {}
    for proc in clients:
        out, _ = await proc.communicate(b"\n")
        received.update(json.loads(out.decode().strip().splitlines()[-1]))
    await daemon.shutdown()
    pbx.stdin.write(b"\n")
    await pbx.communicate()
    if os.environ.get("BENCH_DEBUG"):
        print([round((received.get(k, 0) - sent[k]) * 1000) for k in sent], file=sys.stderr)
    latencies = sorted((received[k] - sent[k]) * 1000 for k in sent if k in received)
    q = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else [0.0] * 99
    return {
        "agents": args.agents,
        "calls": args.calls,
        "rate_per_s": args.rate,
        "seed": args.seed,
        "client_processes": args.client_processes,
        "pops_received": len(latencies),
        "p50_ms": round(q[49], 2),
        "p99_ms": round(q[98], 2),
        "max_ms": round(latencies[-1], 2) if latencies else None,
        **({"login_burst": burst_result} if burst_result is not None else {}),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=20.0, help="mean calls per second")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random arrivals and durations")
    parser.add_argument(
        "--client-processes", type=int, default=2, help="processes the agents' WebSockets are spread over"
    )
    parser.add_argument(
        "--login-burst", type=int, default=0, help="simultaneous wrong-password logins sent during the calls"
    )
    parser.add_argument(
        "--login-burst-at", type=float, default=20.0, help="seconds after the first call the burst is sent"
    )
    parser.add_argument(
        "--no-login-limits",
        action="store_true",
        help="no per-address limit nor queue bound: every login of the burst has its password checked",
    )
    parser.add_argument("--clients", help=argparse.SUPPRESS)
    parser.add_argument("--burst", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--pbx", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pbx:
        asyncio.run(pbx_main(int(args.pbx[0]), int(args.pbx[1]), float(args.pbx[2]), int(args.pbx[3])))
        return 0
    if args.burst:
        asyncio.run(burst_main(args.burst[0], int(args.burst[1]), float(args.burst[2])))
        return 0
    if args.clients:
        tokens = json.loads(sys.stdin.readline())
        asyncio.run(clients_main(args.clients, tokens))
        return 0
    print(json.dumps(asyncio.run(main_async(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
