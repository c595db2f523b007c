"""Mutated feed: the live daemon fed mangled captures over a real socket for N minutes, against
the same volume of clean captures. Memory and /healthz throughout, for both.

Each phase starts `python -m cti.cli serve` (the daemon exactly as deployed: SQLite file, every
consumer) in its own process, against an AMI server in this process that speaks like Asterisk
22 (Login, Ping, CoreShowChannels, QueueStatus, Logoff) and streams the events of the real
captures in ../shared/ami-captures at `--rate` frames per second:
- every copy of the captures gets new ids (linkedids and uniqueids moved), so its calls are new
  calls, and every event is stamped with the time it is sent, as Asterisk stamps events as it
  raises them;
- CoreShowChannels answers with the channels the *clean* stream has up (a dropped Hangup does not
  end a channel on the PBX), so the daemon's periodic reconcile sees what Asterisk would say;
- in the mutated phase, a fraction of the frames (`--mutation-rate`, 5 % by default) is mangled
  the ways the robustness tests mangle them (tests/test_fuzz_robustness.py): dropped,
  duplicated, swapped with the next frame of another channel, one header value replaced (odd
  numbers, empty, huge, unicode, CRLF injection attempts, absurd timestamps), stray bytes.
The clean phase runs first, then the mutated one, each for `--minutes` (default 10): the same
volume of frames.

Every second the daemon's RSS is read from /proc; /healthz is asked every 100 ms and timed. At
the end of each phase the daemon gets SIGTERM; its stored calls and the errors it logged are
counted. Target: the mutated run's RSS within 2x of the clean run's, /healthz within 100 ms
throughout.

    python benchmarks/mutated_feed.py [--minutes 10] [--rate 1000] [--mutation-rate 0.05]
        [--seed 1] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CAPTURES = ROOT.parent / "shared" / "ami-captures"
BANNER = b"Asterisk Call Manager/11.0.0\r\n"
ID = re.compile(rb"\b(179\d{7})\.(\d+)\b")
STAMP = re.compile(rb"(?m)^Timestamp: [^\r\n]*")
# What CoreShowChannel items carry (Asterisk 22), read from the channel's Newchannel.
CHANNEL_HEADERS = (
    b"Channel",
    b"ChannelState",
    b"CallerIDNum",
    b"CallerIDName",
    b"Context",
    b"Exten",
    b"Uniqueid",
    b"Linkedid",
)
# What a PBX, a proxy or an attacker might put in a header (as the robustness tests do).
ODD_VALUES = [
    "",
    " ",
    "0",
    "-1",
    "nan",
    "inf",
    "-inf",
    "1e309",
    "99999999999999999999999",
    "4102444800.000000",
    "1.5",
    "abc",
    "<unknown>",
    "Zoë 中文 \U0001f600",
    "x\r\nEvent: Hangup",
    "x\r\n\r\nEvent: Hangup\r\nUniqueid: 1795389610.8\r\nLinkedid: 1795389610.8",
    "x\nUniqueid: evil",
    "9" * 5000,
    "Y" * 70_000,
]
STRAY = [b"\r\n", b"\r\n\r\n", b"\r", b"\n", b": ", b"\xff\xfe", b"\xc3", b"\x00", b"Event: "]
BATCH_S = 0.05


# ------------------------------------------------------------------------------ traffic
def load_frames() -> list[bytes]:
    """Every event frame of the single-connection captures, in capture order."""
    frames: list[bytes] = []
    for path in sorted(CAPTURES.glob("*.ami")):
        if path.name.startswith(("login_failed", "reconnect", "pbx_")):
            continue
        for frame in path.read_bytes().split(b"\r\n\r\n"):
            if frame.startswith(b"Asterisk Call Manager"):
                frame = frame.split(b"\r\n", 1)[1] if b"\r\n" in frame else b""
            if frame.startswith(b"Event: ") and b"\r\nActionID: " not in frame:
                frames.append(frame)
    return frames


def header(frame: bytes, name: bytes) -> bytes | None:
    start = frame.find(b"\r\n" + name + b": ")
    if start < 0:
        return None
    start += len(name) + 4
    end = frame.find(b"\r\n", start)
    return frame[start : end if end >= 0 else None]


def shifted(frames: list[bytes], k: int) -> list[bytes]:
    """Copy k of the traffic: every id moved by k thousand seconds, so every call is new."""
    shift = 1000 * (k + 1)
    return [ID.sub(lambda m: b"%d.%s" % (int(m.group(1)) + shift, m.group(2)), f) for f in frames]


class Mangler:
    """Mangles a stream of frames as it goes: about `rate` of them are dropped, duplicated (the
    copy comes 1 to 5 frames later), swapped with the next frame of another channel, given one
    odd header value, or given stray bytes."""

    def __init__(self, rng: random.Random, rate: float) -> None:
        self.rng, self.rate = rng, rate
        self._n = 0
        self._later: list[tuple[int, bytes]] = []
        self._held: bytes | None = None

    def push(self, frame: bytes) -> list[bytes]:
        self._n += 1
        out: list[bytes] = []
        held, self._held = self._held, None
        if held is not None and header(held, b"Uniqueid") != header(frame, b"Uniqueid"):
            out += [frame, held]  # the two events of different channels, reordered
        else:
            out += [held] if held is not None else []
            out += self._one(frame)
        if self._later and self._later[0][0] <= self._n:
            out += [f for n, f in self._later if n <= self._n]
            self._later = [(n, f) for n, f in self._later if n > self._n]
        return out

    def flush(self) -> list[bytes]:
        out = ([self._held] if self._held is not None else []) + [f for _, f in self._later]
        self._held, self._later = None, []
        return out

    def _one(self, frame: bytes) -> list[bytes]:
        rng = self.rng
        if rng.random() >= self.rate:
            return [frame]
        op = rng.choice(["drop", "dup", "swap", "value", "value", "value", "stray"])
        if op == "drop":
            return []
        if op == "dup":
            self._later.append((self._n + rng.randint(1, 5), frame))
            self._later.sort(key=lambda item: item[0])
            return [frame]
        if op == "swap":
            self._held = frame
            return []
        if op == "value":
            lines = frame.split(b"\r\n")
            j = rng.randrange(len(lines))
            value = rng.choice(
                [rng.choice(ODD_VALUES), str(rng.randint(-(2**70), 2**70)), repr(rng.uniform(-1e12, 1e12))]
            )
            lines[j] = lines[j].split(b": ", 1)[0] + b": " + value.encode()
            return [b"\r\n".join(lines)]
        cut = rng.randrange(len(frame) + 1)
        return [frame[:cut] + rng.choice(STRAY) + frame[cut:]]


def mangle(frames: list[bytes], rng: random.Random, rate: float) -> list[bytes]:
    """`frames` mangled as a whole (what `Mangler` does to a stream)."""
    mangler = Mangler(rng, rate)
    out = [f for frame in frames for f in mangler.push(frame)]
    return out + mangler.flush()


class Feed:
    """The endless stream of copies, clean or mangled, and the channels the clean one has up."""

    def __init__(self, template: list[bytes], mutation_rate: float, seed: int) -> None:
        self.template = template
        self.mangler = Mangler(random.Random(seed), mutation_rate) if mutation_rate else None
        self.up: dict[bytes, bytes] = {}  # uniqueid -> its Newchannel frame
        self._frames = self._copies()

    def _copies(self) -> Iterator[bytes]:
        k = 0
        while True:
            yield from shifted(self.template, k)
            k += 1

    def next_frames(self, stamp: bytes) -> list[bytes]:
        """The next clean frame, stamped `stamp`, as sent (mangled in the mutated phase)."""
        frame = next(self._frames)
        if b"\r\nTimestamp: " in frame:
            frame = STAMP.sub(stamp, frame, count=1)
        self._track(frame)
        return self.mangler.push(frame) if self.mangler is not None else [frame]

    def _track(self, clean: bytes) -> None:
        if clean.startswith(b"Event: Newchannel\r\n"):
            uid = header(clean, b"Uniqueid")
            if uid is not None:
                self.up[uid] = clean
        elif clean.startswith(b"Event: Hangup\r\n"):
            uid = header(clean, b"Uniqueid")
            if uid is not None:
                self.up.pop(uid, None)


# ------------------------------------------------------------------------------ the AMI server
def frame_of(**headers: object) -> bytes:
    return ("".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()


class AmiServer:
    """Just enough of Asterisk's AMI for the daemon, and the feed's writer."""

    def __init__(self, feed: Feed) -> None:
        self.feed = feed
        self.writer: asyncio.StreamWriter | None = None
        self.resynced = asyncio.Event()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        writer.write(BANNER)
        buffer = b""
        try:
            while data := await reader.read(65536):
                buffer += data
                *actions, buffer = buffer.split(b"\r\n\r\n")
                for action in actions:
                    self._answer(writer, dict(_lines(action)))
                await writer.drain()
        except ConnectionError:
            pass

    def _answer(self, writer: asyncio.StreamWriter, action: dict[str, str]) -> None:
        name, action_id = action.get("Action", "").lower(), action.get("ActionID", "")
        if name == "login":
            writer.write(frame_of(Response="Success", ActionID=action_id, Message="Authentication accepted"))
        elif name == "ping":
            writer.write(frame_of(Response="Success", ActionID=action_id, Ping="Pong", Timestamp=time.time()))
        elif name == "coreshowchannels":
            writer.write(frame_of(Response="Success", ActionID=action_id, EventList="start", Message="List"))
            for item in list(self.feed.up.values()):
                lines = [b"Event: CoreShowChannel", b"ActionID: " + action_id.encode()]
                lines += [name + b": " + (header(item, name) or b"") for name in CHANNEL_HEADERS]
                writer.write(b"\r\n".join(lines) + b"\r\n\r\n")
            writer.write(
                frame_of(
                    Event="CoreShowChannelsComplete",
                    ActionID=action_id,
                    EventList="Complete",
                    ListItems=len(self.feed.up),
                )
            )
        elif name == "queuestatus":
            writer.write(
                frame_of(Response="Success", ActionID=action_id, EventList="start", Message="will follow")
            )
            writer.write(frame_of(Event="QueueStatusComplete", ActionID=action_id, EventList="Complete"))
            self.resynced.set()
        elif name == "logoff":
            writer.write(frame_of(Response="Goodbye", ActionID=action_id, Message="Thanks for all the fish."))
        else:
            writer.write(frame_of(Response="Error", ActionID=action_id, Message="Invalid/unknown command"))

    async def stream(self, rate: float, seconds: float) -> int:
        """Send `rate` frames a second for `seconds`, each batch stamped with its send time."""
        assert self.writer is not None
        per_batch = max(1, round(rate * BATCH_S))
        loop = asyncio.get_running_loop()
        start = loop.time()
        n = batches = 0
        while loop.time() - start < seconds:
            stamp = b"Timestamp: %.6f" % time.time()
            out = [f for _ in range(per_batch) for f in self.feed.next_frames(stamp)]
            n += per_batch
            self.writer.write(b"".join(f + b"\r\n\r\n" for f in out))
            await self.writer.drain()
            batches += 1
            await asyncio.sleep(max(0.0, start + batches * BATCH_S - loop.time()))
        return n


def _lines(action: bytes) -> Iterator[tuple[str, str]]:
    for line in action.decode("utf-8", "replace").split("\r\n"):
        key, _, value = line.partition(": ")
        yield key, value


# ------------------------------------------------------------------------------ measuring
def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


async def sample_rss(pid: int, stop: asyncio.Event, out: list[tuple[float, float]], t0: float) -> None:
    while not stop.is_set():
        value = rss_mb(pid)
        if value is not None:
            out.append((round(time.monotonic() - t0, 1), round(value, 1)))
        await asyncio.sleep(1.0)


async def poll_healthz(url: str, stop: asyncio.Event, out: list[float]) -> None:
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while not stop.is_set():
            start = time.perf_counter()
            try:
                async with session.get(url) as response:
                    await response.read()
            except (aiohttp.ClientError, TimeoutError):
                pass
            out.append(time.perf_counter() - start)
            await asyncio.sleep(0.1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def count(db: Path, sql: str) -> int:
    with sqlite3.connect(db) as conn:
        (n,) = conn.execute(sql).fetchone()
    return int(n)


async def phase(name: str, template: list[bytes], args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    feed = Feed(template, args.mutation_rate if name == "mutated" else 0.0, args.seed)
    ami = AmiServer(feed)
    server = await asyncio.start_server(ami.serve, "127.0.0.1", 0)
    ami_port = server.sockets[0].getsockname()[1]
    web_port = free_port()
    db, config, log_path = tmp / f"{name}.db", tmp / f"{name}.toml", tmp / f"{name}.log"
    config.write_text(
        f'[[asterisk]]\nname = "pbx1"\nhost = "127.0.0.1"\nport = {ami_port}\n'
        f'[database]\nurl = "sqlite+aiosqlite:///{db}"\n'
        f'[log]\nformat = "json"\nlevel = "warning"\n[web]\nhost = "127.0.0.1"\nport = {web_port}\n'
    )
    env = {**os.environ, "CTI_AMI_PBX1_SECRET": "bench", "PYTHONPATH": str(ROOT / "src")}
    log = log_path.open("wb")  # the child writes its logs there
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cti.cli", "serve", "--config", str(config),
            env=env, stdout=log, stderr=log,
        )  # fmt: skip
    finally:
        log.close()  # the child has its own copy of the descriptor
    stop = asyncio.Event()
    rss: list[tuple[float, float]] = []
    health: list[float] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        await asyncio.wait_for(ami.resynced.wait(), 60)
        t0 = time.monotonic()
        tasks = [
            asyncio.create_task(sample_rss(proc.pid, stop, rss, t0)),
            asyncio.create_task(poll_healthz(f"http://127.0.0.1:{web_port}/healthz", stop, health)),
        ]
        sent = await ami.stream(args.rate, args.minutes * 60)
        await asyncio.sleep(args.settle)  # the backlog, the writers' last batches
        stop.set()
        await asyncio.gather(*tasks)
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 60)
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        server.close()
    lines = log_path.read_text(errors="replace").splitlines()
    errors = [line for line in lines if '"level": "error"' in line or '"level":"error"' in line]
    values = [v for _, v in rss]
    health_ms = sorted(h * 1000 for h in health)
    return {
        "frames_sent": sent,
        "calls_stored": count(db, "select count(*) from calls"),
        "spans_stored": count(db, "select count(*) from agent_state_spans"),
        "exit_code": proc.returncode,
        "errors_logged": len(errors),
        "first_errors": [e[:300] for e in errors[:3]],
        "absurd_value_reports": sum("absurd value" in line for line in lines),
        "rss_start_mb": values[0] if values else None,
        "rss_peak_mb": max(values) if values else None,
        "rss_final_mb": values[-1] if values else None,
        "rss_every_30s_mb": [v for t, v in rss if int(t) % 30 == 0][:: max(1, len(rss) // 30 // 40)],
        "healthz_polls": len(health_ms),
        "healthz_p50_ms": round(statistics.median(health_ms), 2) if health_ms else None,
        "healthz_p99_ms": round(health_ms[int(0.99 * (len(health_ms) - 1))], 2) if health_ms else None,
        "healthz_max_ms": round(health_ms[-1], 2) if health_ms else None,
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    template = load_frames()
    with tempfile.TemporaryDirectory(prefix="cti-mutated-feed-") as tmp:
        clean = await phase("clean", template, args, Path(tmp))
        mutated = await phase("mutated", template, args, Path(tmp))
    peak = (mutated["rss_peak_mb"] or 0) / (clean["rss_peak_mb"] or 1)
    final = (mutated["rss_final_mb"] or 0) / (clean["rss_final_mb"] or 1)
    worst = max(clean["healthz_max_ms"] or 0, mutated["healthz_max_ms"] or 0)
    return {
        "minutes_per_phase": args.minutes,
        "rate_frames_per_s": args.rate,
        "mutation_rate": args.mutation_rate,
        "seed": args.seed,
        "clean": clean,
        "mutated": mutated,
        "rss_ratio_peak": round(peak, 2),
        "rss_ratio_final": round(final, 2),
        "healthz_max_ms": worst,
        "target_met": peak <= 2.0 and worst <= 100.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10.0, help="per phase (clean, then mutated)")
    parser.add_argument("--rate", type=float, default=1000.0, help="frames per second")
    parser.add_argument("--mutation-rate", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--settle", type=float, default=5.0, help="seconds measured after the feed")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps(result))
        return 0
    for key, value in result.items():
        if isinstance(value, dict):
            print(f"{key}:")
            for k, v in value.items():
                print(f"  {k:>24}: {v}")
        else:
            print(f"{key:>26}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
