"""Scale-out: screen pops across nodes through NATS JetStream (docs/scale-out.md, "The bus").

Node A (a child process) tracks the PBX; node B (this process) serves the desktops; the two
share a PostgreSQL database of their own (created, then dropped) and a JetStream stream of
their own (deleted after) on the NATS server at --nats. Both run as in production: every
consumer (pops, tickets, live statistics, the dialer) on both nodes.

1. Pop latency across nodes: --agents desktops (default 1,000) logged in on node B over real
   WebSockets, from --client-processes processes; calls arrive on node A's AMI socket as a
   Poisson process at --rate calls/s (default 20), the traffic of benchmarks/screenpop_latency.py
   (IVR, ring, answer with its ticket, talk, end). Latency: from the `AgentCalled` bytes leaving
   the AMI server's process to the pop frame received by the agent's WebSocket on node B
   (CLOCK_MONOTONIC, system-wide on Linux): AMI → node A's tracker → JetStream → node B's
   durable consumer → pop router → hub → WebSocket.
2. Throughput: a second PBX, also tracked by node A, sends --burst-calls calls' frames at once
   (each call about 8 domain events: start, queue join, ringing, queue leave, answer, agent
   complete, end, ticket opened); events/s = the events node B received from the bus, divided by
   the time from the first frame sent to the last pop received by a desktop on node B.
   Before the nodes start, the bus alone: --bus-events events exported by one JetStreamBus and
   handled by another's durable consumer, both in this process (one core for both ends).

    python benchmarks/scaleout.py [--agents 1000] [--calls 1200] [--rate 20] [--burst-calls 3000]
        [--nats nats://127.0.0.1:4222] [--pg postgresql://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import screenpop_latency as pops  # noqa: E402 - the same traffic and desktops as the one-node benchmark

BURST_OFFSET = 1_000_000  # the burst's call numbers: its Linkedids differ from the paced calls'


def node_settings(args: dict[str, Any], node: str, servers: list[tuple[str, int]]) -> Any:
    from cti.config import (
        AsteriskServer,
        BusSettings,
        DatabaseSettings,
        LogSettings,
        Secret,
        Settings,
        WebSettings,
    )

    return Settings(
        asterisk=tuple(
            AsteriskServer(name=name, port=port, secret=Secret("x"), keepalive_s=30, reconnect_cap_s=30)
            for name, port in servers
        ),
        database=DatabaseSettings(url=args["db"]),
        log=LogSettings(level="error", format="json"),
        web=WebSettings(port=0, client_queue=1024, secret=Secret(args["secret"])),
        bus=BusSettings(
            nats_url=args["nats"], node=node, stream=args["stream"], subject_prefix=args["prefix"]
        ),
    )


async def node_a_main(spec: str) -> None:
    """Child process: node A, tracking both PBXs; stops on a line on stdin, then prints its counts."""
    from cti.app import Daemon
    from cti.logs import configure_logging

    args = json.loads(spec)
    configure_logging("error", "json")
    daemon = Daemon(node_settings(args, "bench-a", [("paced", args["paced"]), ("burst", args["burst"])]))
    await daemon.start()
    while not all(link.synced for link in daemon.links):  # noqa: ASYNC110 - polls the links
        await asyncio.sleep(0.05)
    print("READY", flush=True)
    jetstream = daemon.jetstream
    assert jetstream is not None
    last_change = [time.monotonic(), 0]

    async def watch() -> None:  # when node A published its last event
        while True:
            await asyncio.sleep(0.02)
            if jetstream.published != last_change[1]:
                last_change[:] = [time.monotonic(), jetstream.published]

    watcher = asyncio.create_task(watch())
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    watcher.cancel()
    counts = {
        "published": jetstream.published,
        "dropped": jetstream.dropped,
        "failures": jetstream.publish_failures,
        "last_published_at": last_change[0],
    }
    await daemon.shutdown()
    print(json.dumps(counts), flush=True)


async def burst_pbx_main(calls: int, agents: int) -> None:
    """Child process: an AMI server that, on GO, writes `calls` whole calls at once (each
    rings agent n % agents); prints the monotonic instant of its first write."""
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
                aid, action = msg.get("ActionID", ""), msg.get("Action", "").lower()
                if action in ("coreshowchannels", "queuestatus"):
                    done = (
                        "CoreShowChannelsComplete" if action == "coreshowchannels" else "QueueStatusComplete"
                    )
                    writer.write(
                        pops.frame(Response="Success", ActionID=aid, EventList="start")
                        + pops.frame(Event=done, ActionID=aid, EventList="Complete", ListItems=0)
                    )
                    if action == "queuestatus":
                        writers.append(writer)
                        connected.set()
                else:
                    writer.write(pops.frame(Response="Success", ActionID=aid, Message="ok", Ping="Pong"))

    server = await asyncio.start_server(ami, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    loop = asyncio.get_running_loop()
    assert (await loop.run_in_executor(None, sys.stdin.readline)).strip() == "GO"
    await asyncio.wait_for(connected.wait(), 10)
    writer = writers[-1]
    started = time.monotonic()
    for n in range(calls):
        writer.write(b"".join(pops.call_frames(BURST_OFFSET + n, n % agents)))
        if n % 50 == 49:
            await writer.drain()
    await writer.drain()
    print(json.dumps({"started": started, "written_s": time.monotonic() - started}), flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    server.close()


async def child(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=1 << 26,
    )


async def create_database(pg: str) -> tuple[str, str]:
    import asyncpg

    from cti.db.migrate import upgrade

    name = f"cti_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(pg)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = pg.rsplit("/", 1)[0] + f"/{name}"
    await asyncio.to_thread(upgrade, url)
    return name, url


async def drop_database(pg: str, name: str) -> None:
    import asyncpg

    admin = await asyncpg.connect(pg)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


async def delete_stream(nats_url: str, stream: str) -> None:
    import nats

    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()


async def add_agents(daemon: Any, agents: int) -> list[str]:
    """The agents (one password hash for all: argon2 is slow on purpose) and a session each."""
    from sqlalchemy import insert

    from cti.db.models import User
    from cti.web.auth import hash_password

    password_hash = hash_password("benchmark-password")
    rows = [
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
        for i in range(agents)
    ]
    async with daemon.engine.begin() as conn:
        await conn.execute(insert(User), rows)
    await daemon.users.reload()
    tokens = []
    for i in range(agents):
        principal = daemon.users.principal(f"agent{i}")
        session_id, expires = await daemon.web_ctx.sessions.open(principal, "127.0.0.1")
        tokens.append(daemon.web_ctx.signer.issue(principal.username, session_id, expires))
    return tokens


def arrivals(node: Any) -> dict[str, float]:
    """When each call's ringing reached node B from the bus (for the latency's breakdown)."""
    from cti.calls import events as ev

    seen: dict[str, float] = {}
    consumer = node.jetstream.consumers[0]
    deliver = consumer.handler
    offset = time.time() - time.monotonic()  # the event's `at` (node A's wall clock) as monotonic

    def noted(event: Any) -> None:
        if isinstance(event, ev.AgentRinging):
            seen.setdefault(event.linkedid, time.monotonic())
            seen.setdefault("at:" + event.linkedid, event.at - offset)
            seen.setdefault("js:" + event.linkedid, consumer.stored_at - offset)  # stored by NATS
        deliver(event)

    consumer.handler = noted
    return seen


async def bus_alone(nats_url: str, events: int) -> dict[str, Any]:
    """The bus alone, in this process: `events` ringing events exported by one JetStreamBus
    ("node A") and handled by another's durable consumer ("node B"), both ends on one core."""
    from dataclasses import replace

    from cti.bus_jetstream import JetStreamBus
    from cti.calls import events as ev
    from cti.config import BusSettings

    tag = uuid.uuid4().hex[:8]
    settings = BusSettings(
        nats_url=nats_url, stream=f"CTI_BENCH_BUS_{tag}", subject_prefix=f"cti-bench-bus-{tag}"
    )
    a, b = JetStreamBus(replace(settings, node="bus-a")), JetStreamBus(replace(settings, node="bus-b"))
    handled = [0]
    done = asyncio.Event()

    def handle(_event: Any) -> None:
        handled[0] += 1
        if handled[0] == events:
            done.set()

    b.consume("bench", handle)
    try:
        a.start()
        b.start()
        while not (a.connected and b.connected):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        started, cpu = time.perf_counter(), time.process_time()
        for i in range(events):
            a.export(
                ev.AgentRinging(
                    "bench",
                    time.time(),
                    f"bus.{i}",
                    "support",
                    "agent1",
                    "PJSIP/5000",
                    "PJSIP/5000-1",
                    "+33",
                    "+33",
                )
            )
            if i % 200 == 199:
                await asyncio.sleep(0)  # the AMI reader would yield between chunks
        await asyncio.wait_for(done.wait(), 300)
        took = time.perf_counter() - started
        return {
            "events": events,
            "seconds": round(took, 2),
            "events_per_s": round(events / took),
            "cpu_us_per_event": round((time.process_time() - cpu) / events * 1e6),
        }
    finally:
        await a.close()
        await b.close()
        await delete_stream(nats_url, settings.stream)


def collector_pauses() -> dict[int, list[tuple[float, float]]]:
    """Node B's garbage-collector passes, by generation: (monotonic start, seconds)."""
    import gc

    passes: dict[int, list[tuple[float, float]]] = {0: [], 1: [], 2: []}
    began = [0.0]

    def note(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            began[0] = time.monotonic()
        else:
            passes[info["generation"]].append((began[0], time.monotonic() - began[0]))

    gc.callbacks.append(note)
    return passes


def quantiles(values: list[float]) -> dict[str, float | None]:
    values = sorted(values)
    if len(values) < 2:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50_ms": round(q[49], 2), "p99_ms": round(q[98], 2), "max_ms": round(values[-1], 2)}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    from cti.app import Daemon
    from cti.logs import configure_logging

    configure_logging("error", "json")
    pops.schedule(args.calls, args.agents, args.rate, args.seed)  # refuses a rate the agents cannot take
    alone = await bus_alone(args.nats, args.bus_events) if args.bus_events else None
    tag = uuid.uuid4().hex[:8]
    db_name, db_url = await create_database(args.pg)
    spec = {
        "db": db_url,
        "nats": args.nats,
        "stream": f"CTI_BENCH_{tag}",
        "prefix": f"cti-bench-{tag}",
        "secret": uuid.uuid4().hex,
    }
    processes: list[asyncio.subprocess.Process] = []
    try:
        paced = await child("--pbx", str(args.calls), str(args.agents), str(args.rate), str(args.seed))
        burst = await child("--burst-pbx", str(args.burst_calls), str(args.agents))
        processes += [paced, burst]
        ports = []
        for proc in (paced, burst):
            assert proc.stdout is not None
            ports.append(int((await proc.stdout.readline()).decode()))
        node_b = Daemon(node_settings(spec, "bench-b", [("elsewhere", 9)]))  # B tracks no PBX of the test
        await node_b.start()
        tokens = await add_agents(node_b, args.agents)  # before A starts: A reads them at start
        at_b = arrivals(node_b)
        pauses = collector_pauses()
        node_a = await child("--node-a", json.dumps(spec | {"paced": ports[0], "burst": ports[1]}))
        processes.append(node_a)
        assert node_a.stdout is not None
        assert (await node_a.stdout.readline()).strip() == b"READY"
        groups = [tokens[i :: args.client_processes] for i in range(args.client_processes)]
        clients = [await pops.child("--clients", node_b.web_url) for _ in groups]
        processes += clients
        for proc, group in zip(clients, groups, strict=True):
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(group).encode() + b"\n")
            await proc.stdin.drain()
        for proc in clients:
            assert proc.stdout is not None and (await proc.stdout.readline()).strip() == b"READY"
        while sum(len(c) for c in node_b.hub.clients.values()) < args.agents:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)

        # 1. Paced calls: the pop latency across nodes.
        assert paced.stdin is not None and paced.stdout is not None
        paced.stdin.write(b"GO\n")
        await paced.stdin.drain()
        sent = json.loads(await paced.stdout.readline())
        await asyncio.sleep(3.0)  # the last pops are on their way
        remote_before = node_b.bus.published_remote

        # 2. The burst: events/s through JetStream to node B's desktops.
        assert burst.stdin is not None and burst.stdout is not None
        burst.stdin.write(b"GO\n")
        await burst.stdin.drain()
        burst_info = json.loads(await burst.stdout.readline())
        last, still = node_b.bus.published_remote, 0.0
        while still < 2.0:  # until nothing more arrives for 2 s
            await asyncio.sleep(0.1)
            now = node_b.bus.published_remote
            still = still + 0.1 if now == last else 0.0
            last = now
        burst_events = node_b.bus.published_remote - remote_before

        received: dict[str, float] = {}
        for proc in clients:
            out, _ = await proc.communicate(b"\n")
            received.update(json.loads(out.decode().strip().splitlines()[-1]))
        node_a.stdin.write(b"\n")  # type: ignore[union-attr]
        await node_a.stdin.drain()  # type: ignore[union-attr]
        a_counts = json.loads((await node_a.stdout.readline()).decode())
        await node_a.wait()
        b_jetstream = node_b.jetstream
        assert b_jetstream is not None
        consumer = b_jetstream.consumers[0]
        b_counts = {"handled": consumer.handled, "skipped": consumer.skipped, "fenced": consumer.fenced}
        await node_b.shutdown()
        for proc in (paced, burst):
            proc.stdin.write(b"\n")  # type: ignore[union-attr]
            await proc.communicate()
    finally:
        for proc in processes:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await drop_database(args.pg, db_name)
        await delete_stream(args.nats, spec["stream"])

    if os.environ.get("SCALEOUT_DUMP"):  # every paced call's instants, for a closer look
        keys = ("at:", "js:", "")
        rows = {k: [sent[k], *(at_b.get(p + k) for p in keys), received.get(k)] for k in sent}
        dump = {"calls": rows, "collector": pauses}
        await asyncio.to_thread(Path(os.environ["SCALEOUT_DUMP"]).write_text, json.dumps(dump))
    paced_ms = [(received[k] - sent[k]) * 1000 for k in sent if k in received]
    burst_keys = [f"1800000000.{BURST_OFFSET + n}" for n in range(args.burst_calls)]
    burst_pops = [received[k] for k in burst_keys if k in received]
    burst_s = (max(burst_pops) - burst_info["started"]) if burst_pops else None
    a_counts["last_published_after_s"] = round(a_counts.pop("last_published_at") - burst_info["started"], 3)
    return {
        "agents": args.agents,
        "rate_per_s": args.rate,
        "calls": args.calls,
        "seed": args.seed,
        "pops_received": len(paced_ms),
        **quantiles(paced_ms),
        "to_node_b": quantiles([(at_b[k] - sent[k]) * 1000 for k in sent if k in at_b]),
        "node_a_reads": quantiles([(at_b["at:" + k] - sent[k]) * 1000 for k in sent if k in at_b]),
        "node_a_to_node_b": quantiles([(at_b[k] - at_b["at:" + k]) * 1000 for k in sent if k in at_b]),
        "node_a_to_stream": quantiles(
            [(at_b["js:" + k] - at_b["at:" + k]) * 1000 for k in sent if k in at_b]
        ),
        "stream_to_node_b": quantiles([(at_b[k] - at_b["js:" + k]) * 1000 for k in sent if k in at_b]),
        "node_b_to_desktop": quantiles(
            [(received[k] - at_b[k]) * 1000 for k in sent if k in at_b and k in received]
        ),
        "burst_calls": args.burst_calls,
        "burst_pops_received": len(burst_pops),
        "burst_events_to_node_b": burst_events,
        "burst_s": round(burst_s, 3) if burst_s else None,
        "events_per_s": round(burst_events / burst_s) if burst_s else None,
        "bus_alone": alone,
        "node_b_collector": {
            f"gen{g}": {"passes": len(p), "max_ms": round(max((d for _, d in p), default=0) * 1000, 1)}
            for g, p in pauses.items()
        },
        "node_a": a_counts,
        "node_b": b_counts,
    }


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--pbx":
        asyncio.run(
            pops.pbx_main(*(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])))
        )
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "--burst-pbx":
        asyncio.run(burst_pbx_main(int(sys.argv[2]), int(sys.argv[3])))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "--node-a":
        asyncio.run(node_a_main(sys.argv[2]))
        return 0
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=1200, help="paced calls (60 s at 20/s)")
    parser.add_argument("--rate", type=float, default=20.0, help="mean paced calls per second")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--burst-calls", type=int, default=3000)
    parser.add_argument(
        "--bus-events", type=int, default=20000, help="the bus alone, in one process (0: not run)"
    )
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--nats", default=os.environ.get("CTI_BENCH_NATS", "nats://127.0.0.1:4222"))
    parser.add_argument(
        "--pg", default=os.environ.get("CTI_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
    )
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main_async(args)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
