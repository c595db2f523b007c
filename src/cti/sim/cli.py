"""`cti sim`: run the simulated PBX as a server until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from cti.sim.config import OutboundMix, SimConfig, TrafficSpec, call_centre_config, lab_config

if TYPE_CHECKING:
    from cti.sim.pbx import SimulatedPbx


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5038, help="AMI port (default 5038; 0 = any free port)")
    parser.add_argument("--username", default="cti", help="AMI user (default cti)")
    parser.add_argument("--secret", default="ctisecret", help="AMI secret (default ctisecret)")
    parser.add_argument("--calls-per-minute", type=float, default=6.0, help="inbound Poisson rate")
    parser.add_argument("--outbound-per-minute", type=float, default=0.0, help="dialer calls per minute")
    parser.add_argument(
        "--outbound-mix",
        default="answered=6,busy=2,no_answer=2,congestion=1,failed=1",
        help="outcome weights of outbound calls, or 'lab' (the number's last digit decides)",
    )
    parser.add_argument("--agents", type=int, default=6, help="number of agents (default 6)")
    parser.add_argument("--seed", type=int, default=1, help="random seed: same seed, same calls")
    parser.add_argument("--speed", type=float, default=1.0, help="simulated seconds per second (> 1: faster)")
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="SIM_SECONDS",
        help="stop the traffic after this much simulated time, then exit once idle",
    )
    parser.add_argument(
        "--lab", action="store_true", help="the lab of ../shared/ami-captures (queues, agents)"
    )
    parser.add_argument("--truth", metavar="FILE", help="write the ground-truth log (JSON) here on exit")
    parser.add_argument(
        "--records-url",
        metavar="URL",
        help="also write CEL and queue_log rows to this PostgreSQL database, as the shipped "
        "asterisk-conf makes Asterisk do (tables: asterisk-conf/postgresql-tables.sql)",
    )


def build_config(args: argparse.Namespace) -> SimConfig:
    traffic = TrafficSpec(
        calls_per_minute=args.calls_per_minute,
        outbound_per_minute=args.outbound_per_minute,
        queue_timeout_s=(10, 30),
        queue_timeout_rate=0.1,
    )
    base = lab_config() if args.lab else call_centre_config(args.agents)
    return replace(
        base,
        host=args.host,
        port=args.port,
        username=args.username,
        secret=args.secret,
        seed=args.seed,
        speed=args.speed,
        traffic=traffic,
        outbound_mix=OutboundMix.parse(args.outbound_mix),
    )


async def serve(
    config: SimConfig, duration: float | None, truth_path: str | None, records_url: str | None = None
) -> None:
    from cti.sim.pbx import SimulatedPbx

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with SimulatedPbx(config, records_url) as pbx:
        where = f"{config.host}:{pbx.port}"
        print(
            f"cti sim: AMI on {where} (user {config.username}), speed x{config.speed}",
            file=sys.stderr,
            flush=True,
        )
        pbx.start_traffic(duration)
        tasks: set[asyncio.Task[Any]] = {asyncio.create_task(stop.wait())}
        if duration is not None:
            tasks.add(asyncio.create_task(_run_for(pbx)))
        _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if truth_path:
            doc = {
                "calls": [c.to_json() for c in pbx.truth.calls.values()],
                "queues": pbx.truth.queue_counters(),
                "events": pbx.events_sent,
            }
            await asyncio.to_thread(_write_json, truth_path, doc)


def _write_json(path: str, doc: object) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(doc, handle, indent=1)


async def _run_for(pbx: SimulatedPbx) -> None:
    """Traffic for `duration` simulated seconds, then until the last call is over."""
    await pbx.traffic_finished()
    await pbx.idle()


def main(args: argparse.Namespace) -> int:
    try:
        config = build_config(args)
    except ValueError as exc:
        print(f"cti sim: {exc}", file=sys.stderr)
        return 2
    if args.speed <= 0:
        print("cti sim: --speed must be > 0", file=sys.stderr)
        return 2
    asyncio.run(serve(config, args.duration, args.truth, args.records_url))
    return 0
