"""GET /metrics over real HTTP during a demo-like run: the real daemon against the simulated PBX,
with inbound calls ringing a logged-in desktop, a running campaign, a FastAGI lookup and a
refused login. Every documented series is there, the counters move with the traffic, and
nobody without the scrape token reads anything (401)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cti.app import Daemon
from cti.config import Settings, load_settings
from cti.latency import LatencyHistogram
from cti.sim.config import TrafficSpec
from cti.sim.pbx import SimulatedPbx
from cti.web.metrics import CONTENT_TYPE
from test_dialer_sim import dialer_settings, fast_agents_config, login, prepare
from test_fastagi import play_asterisk

TOKEN = "scrape-token-0123456789abcdef"
SCRAPER = {"Authorization": f"Bearer {TOKEN}"}
# Every series docs/operations.md lists (a histogram by its name; labels checked below).
SERIES = {
    "cti_info",
    "cti_ami_link_up",
    "cti_ami_link_synced",
    "cti_ami_reconnects",
    "cti_ami_events",
    "cti_ami_malformed",
    "cti_ami_callback_errors",
    "cti_ami_resync_failures",
    "cti_ami_trace_dropped_bytes",
    "cti_ami_trace_errors",
    "cti_tracker_live_calls",
    "cti_tracker_evicted",
    "cti_bus_published",
    "cti_bus_queue_depth",
    "cti_bus_queue_capacity",
    "cti_bus_dropped",
    "cti_bus_nats_connected",
    "cti_bus_nats_pending",
    "cti_bus_nats_published",
    "cti_bus_nats_dropped",
    "cti_bus_nats_publish_failures",
    "cti_bus_remote_events",
    "cti_bus_nats_fenced",
    "cti_bus_nats_undecodable",
    "cti_bus_nats_late",
    "cti_bus_nats_filled",
    "cti_bus_nats_gone",
    "cti_bus_nats_unfilled",
    "cti_bus_nats_streams_lost",
    "cti_relay_asked",
    "cti_relay_served",
    "cti_relay_repeats",
    "cti_relay_expired",
    "cti_relay_unreachable",
    "cti_websocket_connections",
    "cti_websocket_slow_disconnects",
    "cti_screenpop_messages",
    "cti_pop_latency_seconds",
    "cti_db_writer_pending",
    "cti_db_writer_written",
    "cti_db_writer_failures",
    "cti_db_writer_failing",
    "cti_db_writer_rejected",
    "cti_db_writer_dropped",
    "cti_db_write_seconds",
    "cti_dialer_open_attempts",
    "cti_dialer_attempts",
    "cti_dialer_outcomes",
    "cti_dialer_drop_rate",
    "cti_dialer_dialing",
    "cti_dialer_ratio",
    "cti_login_attempts",
    "cti_login_limiter_windows",
    "cti_login_limit_per_minute",
    "cti_login_checks_pending",
    "cti_login_checks_limit",
    "cti_agi_sessions",
    "cti_agi_sessions_active",
    "cti_agi_problems",
    "cti_agi_lookups",
    "cti_agi_lookup_seconds",
}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> tuple[set[str], Samples]:
    names, samples = set(), {}
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return names, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every label set that includes `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


async def scrape(http: aiohttp.ClientSession, base: str, headers: dict[str, str] | None = None) -> Any:
    async with http.get(f"{base}/metrics", headers=headers or {}) as reply:
        return reply.status, reply.headers.get("Content-Type", ""), await reply.text()


async def until_metrics(
    http: aiohttp.ClientSession, base: str, ready: Any, within_s: float = 40.0
) -> Samples:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        _, _, text = await scrape(http, base, SCRAPER)
        samples = parse(text)[1]
        if ready(samples) or loop.time() > deadline:
            return samples
        await asyncio.sleep(0.25)


def demo_settings(tmp_path: Path, port: int, db: Path) -> Settings:
    """As an admin would write them; the dialer's as test_dialer_sim's (the simulator's clock)."""
    path = tmp_path / "cti.toml"
    path.write_text(
        f"""
[[asterisk]]
name = "sim"
host = "127.0.0.1"
port = {port}
username = "cti"
secret = "ctisecret"
keepalive_s = 1.0
action_timeout_s = 2.0
reconnect_cap_s = 0.2

[database]
url = "sqlite+aiosqlite:///{db}"
flush_interval_s = 0.05

[web]
port = 0
metrics_token = "{TOKEN}"

[agi]
host = "127.0.0.1"
port = 0
""",
        encoding="utf-8",
    )
    return dataclasses.replace(load_settings(path, env={}), dialer=dialer_settings())


async def read_frames(ws: aiohttp.ClientWebSocketResponse, types: list[str]) -> None:
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.TEXT:
            types.append(msg.json()["type"])


async def test_metrics_move_with_traffic_and_need_the_scrape_token(tmp_path: Path) -> None:
    db = tmp_path / "cti.db"
    await prepare(db, tmp_path)  # a running campaign, agent1 (Local/agent1@agents/n) and chef
    config = fast_agents_config()
    config = dataclasses.replace(config, traffic=TrafficSpec(calls_per_minute=6, talk_s=(5.0, 10.0)))
    async with SimulatedPbx(config) as pbx:
        daemon = Daemon(demo_settings(tmp_path, pbx.port, db))
        await daemon.start()
        frames: list[str] = []
        try:
            async with aiohttp.ClientSession() as http:
                base = daemon.web_url
                agent = await login(http, base, "agent1", "password1")
                async with http.post(f"{base}/api/login", json={"username": "agent1", "password": "no"}) as r:
                    assert r.status == 401
                # Nobody without the token: no header, a wrong token, a desktop's session token.
                for headers in ({}, {"Authorization": "Bearer wrong"}, agent):
                    status, _, text = await scrape(http, base, headers)
                    assert status == 401 and "cti_" not in text, (headers, status, text[:200])
                status, content_type, text = await scrape(http, base, SCRAPER)
                assert status == 200 and content_type == CONTENT_TYPE
                names, before = parse(text)
                ws = await http.ws_connect(f"{base}/ws", headers=agent)
                reader = asyncio.create_task(read_frames(ws, frames))
                pbx.start_traffic(600.0)
                assert daemon.agi is not None
                await play_asterisk(daemon.agi.port, "06 12 34 56 78")
                after = await until_metrics(
                    http,
                    base,
                    lambda s: (
                        value(s, "cti_pop_latency_seconds_count") > 0
                        and value(s, "cti_ami_events_total", server="sim")
                        > value(before, "cti_ami_events_total", server="sim")
                        and total(s, "cti_dialer_outcomes_total") > 0
                        and value(s, "cti_db_write_seconds_count") > 0
                        # The FastAGI worker's counters follow its session's end by a moment.
                        and value(s, "cti_agi_sessions_total") == 1
                    ),
                )
                names = parse((await scrape(http, base, SCRAPER))[2])[0]
                for _ in range(100):  # the pop the histogram counted reaches the desktop
                    if "pop" in frames:
                        break
                    await asyncio.sleep(0.05)
                await ws.close()
                reader.cancel()
        finally:
            await daemon.shutdown()

    missing = SERIES - names
    assert not missing, sorted(missing)
    server = {"server": "sim"}
    assert (
        value(after, "cti_ami_link_up", **server) == 1 and value(after, "cti_ami_link_synced", **server) == 1
    )
    assert value(after, "cti_ami_events_total", **server) > value(before, "cti_ami_events_total", **server)
    assert value(after, "cti_bus_published_total") > value(before, "cti_bus_published_total")
    assert value(after, "cti_bus_queue_capacity", consumer="call-writer") == 10_000
    assert value(after, "cti_websocket_connections", role="agent") == 1
    assert "pop" in frames
    assert value(after, "cti_pop_latency_seconds_count") >= 1
    assert value(after, "cti_pop_latency_seconds_bucket", le="+Inf") == value(
        after, "cti_pop_latency_seconds_count"
    )
    assert value(after, "cti_screenpop_messages_total") >= value(after, "cti_pop_latency_seconds_count")
    assert value(after, "cti_db_writer_written_total") > 0 and value(after, "cti_db_write_seconds_count") > 0
    assert total(after, "cti_dialer_attempts_total", campaign="relance") > 0
    assert total(after, "cti_dialer_outcomes_total", campaign="relance") > 0
    assert value(after, "cti_login_attempts_total", result="ok") >= 1
    assert value(after, "cti_login_attempts_total", result="bad_credentials") == 1
    assert value(after, "cti_login_limit_per_minute", per="user") == 5
    assert value(after, "cti_agi_sessions_total") == 1
    assert value(after, "cti_agi_lookups_total", result="miss") == 1
    assert value(after, "cti_agi_lookup_seconds_count") == 1
    assert value(after, "process_resident_memory_bytes") > 0


def test_latency_buckets_are_cumulative_and_bounded_above() -> None:
    histogram = LatencyHistogram((0.001, 0.005))
    for seconds in (0.0005, 0.001, 0.002, 0.5):
        histogram.observe(seconds)
    assert histogram.buckets() == [("0.001", 2.0), ("0.005", 3.0), ("+Inf", 4.0)]
    assert histogram.count == 4 and histogram.sum == pytest.approx(0.5035)


DOCS = Path(__file__).resolve().parents[1] / "docs"


def _exposed(name: str) -> str:
    """A documented series as the test run names it (counters without their `_total`)."""
    return name.removesuffix("_total")


def test_the_docs_and_the_dashboard_name_the_series_the_daemon_exposes() -> None:
    table = re.findall(r"^\| `(cti_\w+)` \|", (DOCS / "operations.md").read_text(), re.MULTILINE)
    assert {_exposed(n) for n in table} == SERIES
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {m for e in exprs for m in re.findall(r"\b(cti_\w+)", e)}
    unknown = {m for m in used if _exposed(re.sub(r"(_bucket|_count|_sum)$", "", m)) not in SERIES}
    assert not unknown, unknown
