"""Replay throughput: `cti replay`'s path (parser + tracker + records + counters) against
panoramisk's bare `AMIProtocol.data_received` parse rate, on the same bytes, in the same run.

The synthetic transcript is built from the real captures in ../shared/ami-captures: every copy
shifts all ids and timestamps (`\\d{10}.\\d+`) by a fresh offset, so each copy's calls are new
calls. It is generated chunk by chunk, never held whole in memory, so the peak RSS printed at the
end shows whether the pipeline's own memory stays flat as the transcript grows.

    python benchmarks/replay_throughput.py [--copies N] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import resource
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CAPTURES = ROOT / "tests" / "captures" / "lab"
BANNER = b"Asterisk Call Manager/11.0.0\r\n"
ID = re.compile(rb"\b(1795\d{6})\.(\d+)\b")
CHUNK = 1 << 16


def _events_only(raw: bytes) -> bytes:
    """Every event frame of a capture (banner and action responses dropped)."""
    frames = raw.split(b"\r\n\r\n")
    frames[0] = (
        frames[0].split(b"\r\n", 1)[1] if frames[0].startswith(b"Asterisk Call Manager") else frames[0]
    )
    kept = [f for f in frames if f.startswith(b"Event: ") or b"\r\nEvent: " in f[:200]]
    return b"\r\n\r\n".join(kept) + b"\r\n\r\n"


def load_template() -> tuple[bytes, int]:
    names = sorted(
        p for p in CAPTURES.glob("*.ami") if not p.name.startswith(("login_failed", "reconnect", "pbx_"))
    )
    body = b"".join(_events_only(p.read_bytes()) for p in names)
    return body, body.count(b"\r\n\r\n")


def copies(template: bytes, n: int) -> Iterator[bytes]:
    yield BANNER
    for k in range(n):
        shift = (k + 1) * 1000  # seconds: every capture spans far less, so ids never collide
        data = ID.sub(lambda m, s=shift: b"%d.%s" % (int(m.group(1)) + s, m.group(2)), template)
        for i in range(0, len(data), CHUNK):
            yield data[i : i + CHUNK]


def materialise(template: bytes, n: int) -> list[bytes]:
    return list(copies(template, n))


def bench_panoramisk(chunks: list[bytes]) -> tuple[float, int]:
    from panoramisk.ami_protocol import AMIProtocol

    class Factory:
        count = 0

        def dispatch(self, message: object) -> None:
            Factory.count += 1

    proto = AMIProtocol()
    proto.connection_made(None)
    proto.factory = Factory()
    proto.encoding = "utf-8"
    start = time.perf_counter()
    for chunk in chunks:
        proto.data_received(chunk)
    return time.perf_counter() - start, Factory.count


def bench_cti(chunks: list[bytes]) -> tuple[float, int, int, int]:
    from cti.calls.tracker import CallTracker
    from cti.replay import Replayer

    replayer = Replayer(CallTracker())
    # Keep only counters, not every record, so memory reflects the pipeline (the daemon hands
    # finished records to the database writer and forgets them).
    replayer.result.records = _Discard()  # type: ignore[assignment]
    start = time.perf_counter()
    replayer.connection(iter(chunks))
    result = replayer.finish()
    elapsed = time.perf_counter() - start
    return (
        elapsed,
        result.messages + result.skipped,
        len(replayer.result.records),
        len(replayer.tracker.calls),
    )


class _Discard(list):  # type: ignore[type-arg]
    """A list that only counts what is appended."""

    n = 0

    def append(self, _item: object) -> None:
        self.n += 1

    def __len__(self) -> int:
        return self.n


def stream_only(template: bytes, n: int) -> dict[str, float]:
    """cti's pipeline over a generated stream (never materialised): its own peak memory."""
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


def memory_profile(copies_n: int) -> list[dict[str, float]]:
    """Peak RSS of the streaming pipeline at two transcript sizes, each in a fresh process."""
    import subprocess

    out = []
    for n in (max(1, copies_n // 4), copies_n):
        run = subprocess.run(
            [sys.executable, __file__, "--stream-only", "--copies", str(n)],
            capture_output=True,
            text=True,
            check=True,
        )
        out.append(json.loads(run.stdout))
    return out


def peak_rss_mb() -> float:
    # VmHWM belongs to this process's own address space (ru_maxrss survives fork+exec on Linux).
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=60)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--stream-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    template, _ = load_template()
    if args.stream_only:
        print(json.dumps(stream_only(template, args.copies)))
        return 0
    chunks = materialise(template, args.copies)
    size_mb = sum(map(len, chunks)) / 1e6
    gc.collect()
    rss_before = peak_rss_mb()
    p_time, p_events = bench_panoramisk(chunks)
    gc.collect()
    c_time, c_events, calls, open_calls = bench_cti(chunks)
    figures = {
        "transcript_mb": round(size_mb, 1),
        "events": c_events,
        "panoramisk_events_per_s": round(p_events / p_time),
        "cti_replay_events_per_s": round(c_events / c_time),
        "ratio": round((c_events / c_time) / (p_events / p_time), 2),
        "calls_finished": calls,
        "calls_left_open": open_calls,
        "peak_rss_mb_before_runs": round(rss_before, 1),
        "peak_rss_mb_after_runs": round(peak_rss_mb(), 1),
        "streaming_peak_rss_mb": {
            f"{int(m['events'])} events": round(m["peak_rss_mb"], 1) for m in memory_profile(args.copies)
        },
    }
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:>26}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
