"""Simulator throughput: how many events per second `cti sim` sustains to a connected AMI client.

The simulator runs in its own process (`python -m cti.cli sim`) with far more traffic than it can
play in real time (a 200-agent centre taking 300 calls a minute, played at x200), so it produces events as
fast as it can. This process is the client: a real TCP socket on 127.0.0.1 that logs in and reads
and parses every frame with cti's own `AmiParser` (no event skipped). After a warm-up, it counts
the events received over a measuring window and prints events per second.

    python benchmarks/sim_throughput.py [--seconds 5] [--warmup 1] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import sys
import time

from cti.ami.parser import AmiParser

TARGET = 20_000  # events per second the issue asks for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def start_sim(port: int) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cti.cli",
        "sim",
        "--port",
        str(port),
        "--agents",
        "200",
        "--calls-per-minute",
        "300",
        "--outbound-per-minute",
        "60",
        "--speed",
        "200",
        "--seed",
        "1",
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


async def connect(port: int, within_s: float = 15.0) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    deadline = time.monotonic() + within_s
    while True:
        try:
            return await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def measure(port: int, warmup_s: float, seconds: float) -> dict[str, float]:
    reader, writer = await connect(port)
    writer.write(b"Action: Login\r\nActionID: bench-1\r\nUsername: cti\r\nSecret: ctisecret\r\n\r\n")
    await writer.drain()
    parser = AmiParser()
    events = frames = 0
    nbytes = 0
    start = time.monotonic()
    counting_from = start + warmup_s
    counted_events = 0
    counted_bytes = 0
    while (now := time.monotonic()) < counting_from + seconds:
        data = await reader.read(1 << 16)
        if not data:
            break
        messages = parser.feed(data)
        frames += len(messages)
        got = sum(1 for m in messages if "Event" in m)
        events += got
        nbytes += len(data)
        if now >= counting_from:
            counted_events += got
            counted_bytes += len(data)
    elapsed = max(1e-9, time.monotonic() - counting_from)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return {
        "events_per_s": counted_events / elapsed,
        "mbytes_per_s": counted_bytes / elapsed / 1e6,
        "events": counted_events,
        "seconds": elapsed,
        "parse_problems": len(parser.problems),
    }


async def main(argv: list[str]) -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--seconds", type=float, default=5.0, help="measuring window (wall seconds)")
    args.add_argument("--warmup", type=float, default=1.0, help="seconds read before counting")
    args.add_argument("--json", action="store_true")
    opts = args.parse_args(argv)
    port = free_port()
    sim = await start_sim(port)
    try:
        result = await measure(port, opts.warmup, opts.seconds)
    finally:
        sim.terminate()
        await sim.wait()
    result["target"] = TARGET
    if opts.json:
        print(json.dumps(result))
    else:
        print(
            f"cti sim → AMI client on 127.0.0.1: {result['events_per_s']:,.0f} events/s "
            f"({result['mbytes_per_s']:.1f} MB/s, {result['events']:,.0f} events read and parsed in "
            f"{result['seconds']:.1f} s; target {TARGET:,}/s)"
        )
    return 0 if result["events_per_s"] >= TARGET else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
