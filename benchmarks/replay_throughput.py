"""Replay throughput: `cti replay` as a whole process (start-up, parser, tracker, records,
counters, JSON out) against panoramisk's bare `AMIProtocol.data_received` parse of the same
bytes, in the same run.

The transcript is built from the real captures in ../shared/ami-captures: their unsolicited
events, oldest capture first, each capture re-stamped to follow the previous one; every copy's
stamps follow the previous copy's and its ids (`\\d{10}.\\d+`) are moved, so each copy's calls
are new calls and the stamps move forward as on one long connection. It is written chunk by
chunk to a temporary file (never held whole in memory); copies are added until it holds
`--events` events (default 800,000).

Each round times, one after the other on the same file:
- panoramisk: the file read in 64 KiB chunks and handed to `data_received` (only the calls are
  timed: the reads are not counted against it), in this process;
- `python -m cti.cli replay FILE --json > /dev/null` in a child process: wall time, CPU time
  (user + system, from wait4) and peak RSS of the whole process.
The ratio is panoramisk's time over cti's, by wall clock and by CPU time. On a shared machine
the CPU-time ratio is the steadier one (a busy neighbour stretches wall time, not CPU time);
the best of `--rounds` rounds is kept for each side.

`--stream-sizes` also runs cti's pipeline alone (records counted, not kept, as the daemon hands
them to the database writer) at a quarter and at the whole transcript, each in a fresh process:
its peak RSS shows whether memory stays flat as the transcript grows. `--profile` prints where
the replay's time goes (cProfile of the in-process replay, top functions by own time).

    python benchmarks/replay_throughput.py [--events 800000] [--rounds 3] [--json] [--profile]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CAPTURES = ROOT / "tests" / "captures" / "lab"
BANNER = b"Asterisk Call Manager/11.0.0\r\n"
STAMP = re.compile(rb"Timestamp: (\d+\.\d+)")
ID_OR_STAMP = re.compile(rb"(Timestamp: (\d+\.\d+))|\b(179\d{7})\.(\d+)\b")
CHUNK = 1 << 16


def _events_only(raw: bytes) -> bytes:
    """Every unsolicited event frame of a capture: banner, action responses and the list items
    they announce dropped (without its Response, a list item would look unsolicited)."""
    frames = raw.split(b"\r\n\r\n")
    frames[0] = (
        frames[0].split(b"\r\n", 1)[1] if frames[0].startswith(b"Asterisk Call Manager") else frames[0]
    )
    kept = [f for f in frames if f.startswith(b"Event: ") and b"\r\nActionID: " not in f]
    return b"\r\n\r\n".join(kept) + b"\r\n\r\n"


def _first_stamp(raw: bytes) -> float:
    found = STAMP.search(raw)
    return float(found.group(1)) if found else 0.0


def _restamped(events: bytes, shift: float) -> bytes:
    return STAMP.sub(lambda m: b"Timestamp: %.6f" % (float(m.group(1)) + shift), events)


def load_template() -> tuple[bytes, int]:
    """The captures' events, one capture after the other (each re-stamped to begin a second
    after the previous one ends): one connection's worth of real traffic whose stamps move
    forward, give or take Asterisk's own millisecond races."""
    paths = [
        p for p in CAPTURES.glob("*.ami") if not p.name.startswith(("login_failed", "reconnect", "pbx_"))
    ]
    parts, end = [], None
    for raw in sorted((p.read_bytes() for p in paths), key=_first_stamp):
        events = _events_only(raw)
        stamps = [float(x) for x in STAMP.findall(events)]
        if not stamps:
            continue
        shift = 0.0 if end is None else end + 1.0 - min(stamps)
        parts.append(_restamped(events, shift))
        end = max(stamps) + shift
    body = b"".join(parts)
    return body, body.count(b"\r\n\r\n")


def copies(template: bytes, n: int) -> Iterator[bytes]:
    stamps = [float(s) for s in STAMP.findall(template)]
    # Each copy's stamps start a second after the previous copy's last one, and its ids (a
    # channel's uniqueid, a call's linkedid) move by a thousand seconds more: every call is new.
    span = max(stamps) - min(stamps) + 1.0
    yield BANNER
    for k in range(n):
        data = ID_OR_STAMP.sub(
            lambda m, k=k: (
                b"Timestamp: %.6f" % (float(m.group(2)) + (k + 1) * span)
                if m.group(1)
                else b"%d.%s" % (int(m.group(3)) + (k + 1) * 1000, m.group(4))
            ),
            template,
        )
        for i in range(0, len(data), CHUNK):
            yield data[i : i + CHUNK]


def write_transcript(path: Path, template: bytes, n: int) -> int:
    size = 0
    with open(path, "wb") as out:
        for chunk in copies(template, n):
            size += out.write(chunk)
    return size


def file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk


def bench_panoramisk(path: Path) -> dict[str, float]:
    from panoramisk.ami_protocol import AMIProtocol

    class Factory:
        count = 0

        def dispatch(self, message: object) -> None:
            Factory.count += 1

    proto = AMIProtocol()
    proto.connection_made(None)
    proto.factory = Factory()
    proto.encoding = "utf-8"
    wall = cpu = 0.0
    feed = proto.data_received
    for chunk in file_chunks(path):
        w, c = time.perf_counter(), time.process_time()
        feed(chunk)
        cpu += time.process_time() - c
        wall += time.perf_counter() - w
    return {"wall_s": wall, "cpu_s": cpu, "events": Factory.count}


def bench_cti_process(path: Path, src: Path = ROOT / "src") -> dict[str, float]:
    """`cti replay FILE --json` in its own process (cti from `src`), output thrown away."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    start = time.perf_counter()
    with open(os.devnull, "wb") as devnull:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cti.cli", "replay", str(path), "--json"], stdout=devnull, env=env
        )
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"cti replay failed with status {proc.returncode}")
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,
    }


def cti_events(path: Path) -> tuple[int, int, int]:
    """Messages read (parsed + skipped), calls finished, calls left open: what cti saw."""
    sys.path.insert(0, str(ROOT / "src"))
    from cti.calls.tracker import CallTracker
    from cti.replay import Replayer

    replayer = Replayer(CallTracker())
    replayer.result.records = _Discard()  # type: ignore[assignment]
    replayer.connection(file_chunks(path))
    result = replayer.finish()
    return result.messages + result.skipped, len(result.records), len(replayer.tracker.calls)


class _Discard(list):  # type: ignore[type-arg]
    """A list that only counts what is appended."""

    n = 0

    def append(self, _item: object) -> None:
        self.n += 1

    def __len__(self) -> int:
        return self.n


def stream_only(template: bytes, n: int) -> dict[str, float]:
    """cti's pipeline over a generated stream (never materialised): its own peak memory."""
    sys.path.insert(0, str(ROOT / "src"))
    from cti.calls.tracker import CallTracker
    from cti.replay import Replayer

    replayer = Replayer(CallTracker())
    replayer.result.records = _Discard()  # type: ignore[assignment]
    replayer.connection(copies(template, n))
    replayer.finish()
    return {
        "copies": n,
        "events": replayer.result.messages + replayer.result.skipped,
        "peak_rss_mb": peak_rss_mb(),
    }


def memory_profile(copies_n: int) -> dict[str, float]:
    """Peak RSS of the streaming pipeline at two transcript sizes, each in a fresh process."""
    out = {}
    for n in (max(1, copies_n // 4), copies_n):
        run = subprocess.run(
            [sys.executable, __file__, "--stream-only", "--copies", str(n)],
            capture_output=True,
            text=True,
            check=True,
        )
        m = json.loads(run.stdout)
        out[f"{int(m['events'])} events"] = round(m["peak_rss_mb"], 1)
    return out


def profile(path: Path, top: int = 25) -> None:
    import cProfile
    import pstats

    sys.path.insert(0, str(ROOT / "src"))
    from cti.replay import replay_files

    profiler = cProfile.Profile()
    profiler.enable()
    result = replay_files([path])
    json.dumps(result.to_json())
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(top)


def peak_rss_mb() -> float:
    # VmHWM belongs to this process's own address space (ru_maxrss survives fork+exec on Linux).
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(args: argparse.Namespace, template: bytes, per_copy: int, path: Path) -> dict[str, Any]:
    n = args.copies or max(1, -(-args.events // per_copy))
    size = write_transcript(path, template, n)
    events, finished, left_open = cti_events(path)
    rounds: list[dict[str, float]] = []
    for _ in range(args.rounds):
        p, c = bench_panoramisk(path), bench_cti_process(path, args.cti_src)
        if p["events"] != events:
            raise SystemExit(f"panoramisk saw {p['events']} events, cti {events}")
        rounds.append(
            {
                "panoramisk_wall_s": round(p["wall_s"], 2),
                "panoramisk_cpu_s": round(p["cpu_s"], 2),
                "cti_wall_s": round(c["wall_s"], 2),
                "cti_cpu_s": round(c["cpu_s"], 2),
                "ratio_wall": round(p["wall_s"] / c["wall_s"], 2),
                "ratio_cpu": round(p["cpu_s"] / c["cpu_s"], 2),
                "cti_peak_rss_mb": round(c["peak_rss_mb"], 1),
            }
        )
    best = {key: min(r[key] for r in rounds) for key in rounds[0] if not key.startswith("ratio")}
    figures: dict[str, Any] = {
        "copies": n,
        "transcript_mb": round(size / 1e6, 1),
        "events": events,
        "calls_finished": finished,
        "calls_left_open": left_open,
        "panoramisk_events_per_s": round(events / best["panoramisk_wall_s"]),
        "cti_replay_process_events_per_s": round(events / best["cti_wall_s"]),
        "ratio_wall_best": round(best["panoramisk_wall_s"] / best["cti_wall_s"], 2),
        "ratio_cpu_best": round(best["panoramisk_cpu_s"] / best["cti_cpu_s"], 2),
        "cti_replay_peak_rss_mb": max(r["cti_peak_rss_mb"] for r in rounds),
        "rounds": rounds,
    }
    if args.stream_sizes:
        figures["streaming_peak_rss_mb"] = memory_profile(n)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=800_000)
    parser.add_argument("--copies", type=int, help="copies of the captures (instead of --events)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--stream-sizes", action="store_true", help="streaming pipeline's peak RSS")
    parser.add_argument("--profile", action="store_true", help="cProfile the replay path instead")
    parser.add_argument(
        "--cti-src", type=Path, default=ROOT / "src", help="the cti sources to time (another checkout's src)"
    )
    parser.add_argument("--stream-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    template, per_copy = load_template()
    if args.stream_only:
        print(json.dumps(stream_only(template, args.copies)))
        return 0
    with tempfile.TemporaryDirectory(prefix="cti-replay-bench-") as tmp:
        path = Path(tmp) / "transcript.ami"
        if args.profile:
            write_transcript(path, template, args.copies or max(1, -(-args.events // per_copy)))
            profile(path)
            return 0
        figures = run(args, template, per_copy, path)
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            if key != "rounds":
                print(f"{key:>32}: {value}")
        for i, r in enumerate(figures["rounds"], 1):
            print(f"{'round ' + str(i):>32}: {r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
