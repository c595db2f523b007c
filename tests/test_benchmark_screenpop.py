"""The screen-pop benchmark stays runnable: a small run delivers every pop (figures are not
asserted: tests never judge wall-clock time)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "screenpop_latency.py"


def test_a_small_run_delivers_every_pop_to_its_agent() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--agents", "30", "--calls", "30", "--rate", "40", "--seed", "7"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["pops_received"] == 30 and result["calls"] == 30
    assert result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]
