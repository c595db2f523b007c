"""Robustness of the live daemon (issue 14): mangled real traffic over a real socket.

The traffic is every single-connection capture of ../shared/ami-captures, each copy with new ids,
mangled by the mutated-feed benchmark's `Mangler` (benchmarks/mutated_feed.py: frames dropped,
duplicated, swapped with another channel's, odd header values, stray bytes) with fixed seeds.
The daemon runs every consumer (writer, statistics, pops, tickets, dialer): none may fail, the
link must stay up, /healthz must answer, and every finished call is stored. The benchmark itself
is run for a few seconds, as tests/test_benchmark_screenpop.py does, so it stays runnable.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import random
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import aiohttp
import pytest

from cti import values
from cti.app import Daemon
from fakeami import CAPTURES, FakeAmi
from test_daemon import calls_in, settings_for, until

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "mutated_feed.py"
pytestmark = pytest.mark.skipif(not CAPTURES.is_dir(), reason="tests/captures/lab is missing")
# What a consumer, the tracker or the link logs when something escaped it.
ESCAPED = ("event handler failed", "event tap failed", "tracker failed", "callback failed", "reader failed")


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutated_feed", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_the_daemon_takes_mangled_traffic_without_a_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], seed: int
) -> None:
    bench = _bench()
    template = bench.load_frames()
    values.ABSURD.reset()
    db = tmp_path / "cti.db"
    async with FakeAmi() as fake:
        fake.lists = {"coreshowchannels": [], "queuestatus": []}
        settings = settings_for(fake, db)
        # No Ping while the traffic is pushed: a reply written by the fake between two of the
        # push's arbitrary cuts would land inside a frame (Asterisk writes whole frames).
        server = dataclasses.replace(settings.asterisk[0], keepalive_s=60.0)
        daemon = Daemon(dataclasses.replace(settings, asterisk=(server,)))
        await daemon.start()
        slowest = 0.0
        try:
            await until(lambda: fake.actions("QueueStatus"))
            rng = random.Random(seed)
            async with aiohttp.ClientSession() as session:
                for k in range(3):
                    stamp = b"Timestamp: %.6f" % time.time()
                    frames = [bench.STAMP.sub(stamp, f, count=1) for f in bench.shifted(template, k)]
                    mangled = bench.mangle(frames, rng, 0.08)
                    data = b"".join(f + b"\r\n\r\n" for f in mangled)
                    cuts = sorted(rng.sample(range(1, len(data)), 20))
                    await fake.push(data, split_at=cuts)
                    start = time.perf_counter()
                    async with session.get(f"{daemon.web_url}/healthz") as r:
                        assert r.status == 200
                    slowest = max(slowest, time.perf_counter() - start)
            await daemon.bus.drain()
            assert daemon.links[0].connected and daemon.links[0].reconnects == 0
        finally:
            await daemon.shutdown()
    out = capsys.readouterr()
    logs = out.out + out.err
    escaped = [line for line in logs.splitlines() if any(s in line for s in ESCAPED)]
    assert escaped == []
    assert values.ABSURD.seen, "the mangled traffic carried no absurd value: the test lost its teeth"
    calls = await calls_in(db)
    assert len(calls) > 50
    assert len({c["linkedid"] for c in calls}) == len(calls)
    assert slowest < 2.0


def test_the_mutated_feed_benchmark_runs() -> None:
    """A few seconds of each phase: both daemons stop cleanly, store calls, fail nowhere."""
    out = subprocess.run(
        [sys.executable, str(BENCH), "--minutes", "0.05", "--rate", "400", "--settle", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for phase in ("clean", "mutated"):
        assert result[phase]["exit_code"] == 0, result[phase]
        assert result[phase]["errors_logged"] == 0, result[phase]["first_errors"]
        assert result[phase]["calls_stored"] > 0 and result[phase]["healthz_polls"] > 0
    assert result["rss_ratio_peak"] > 0
