"""The FastAGI caller lookup in its worker process (cti/agi/worker.py), through real sockets:
the daemon's directory changes reach it, a worker that dies is replaced, a daemon killed with
SIGKILL takes its worker with it (the port is free for the daemon started after it), and a
port already taken is a clear start-up error.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from cti.app import Daemon
from cti.config import AgiSettings, DatabaseSettings, Settings, WebSettings
from test_fastagi import fill, play_asterisk, until


def _settings(tmp_path: Path, port: int = 0) -> Settings:
    return Settings(
        asterisk=(),
        database=DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'cti.db'}"),
        web=WebSettings(port=0),
        agi=AgiSettings(host="127.0.0.1", port=port),
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (not yet reaped by its parent) is dead for our purpose.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _refused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_the_lookup_runs_in_another_process_and_sees_directory_changes_at_once(tmp_path: Path) -> None:
    daemon = Daemon(_settings(tmp_path))
    await daemon.start()
    assert daemon.agi is not None
    worker = daemon.agi.pid
    try:
        assert worker is not None and worker != os.getpid() and _alive(worker)
        # Asked once before the customer exists: the worker shares that answer for a few
        # seconds with the next callers, unless the daemon tells it the directory changed.
        first = await play_asterisk(daemon.agi.port, "06 12 34 56 78")
        assert first.variables[-1] == ("CTI_LOOKUP", "miss")
        customers = await fill(daemon.directory)
        again = await play_asterisk(daemon.agi.port, "06 12 34 56 78")
        assert again.variables[0] == ("CTI_CUSTOMER_ID", str(customers.jean))
        assert again.variables[-1] == ("CTI_LOOKUP", "hit")
        agi = daemon.agi
        await until(lambda: agi.sessions_served == 2 and agi.lookup.outcomes["hit"] == 1)
        assert agi.lookup.histogram.count == 2
    finally:
        await daemon.shutdown()
    assert not _alive(worker)  # a clean stop stops the worker too


async def test_a_worker_that_dies_is_replaced_and_its_counts_are_kept(tmp_path: Path) -> None:
    daemon = Daemon(_settings(tmp_path))
    await daemon.start()
    try:
        agi = daemon.agi
        assert agi is not None and agi.pid is not None
        port = agi.port
        await play_asterisk(port, "06 12 34 56 78")
        await until(lambda: agi.sessions_served == 1)
        dead = agi.pid
        os.kill(dead, signal.SIGKILL)
        # Meanwhile Asterisk's connections are refused (its dialplan goes on without the lookup);
        # then another worker listens on the same port.
        await until(lambda: agi.restarts == 1 and agi.pid not in (None, dead), within_s=60)
        call = await play_asterisk(port, "06 12 34 56 78")
        assert call.variables[-1] == ("CTI_LOOKUP", "miss")
        await until(lambda: agi.sessions_served == 2)  # 1 before the death + 1 after: never backwards
        assert agi.lookup.outcomes["miss"] == 2
    finally:
        await daemon.shutdown()


async def test_a_taken_port_is_a_start_up_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        daemon = Daemon(_settings(tmp_path, port=taken.getsockname()[1]))
        with pytest.raises(OSError, match="FastAGI cannot listen"):
            await daemon.start()
        await daemon.shutdown()


async def test_kill_9_of_the_daemon_takes_its_worker_along(tmp_path: Path) -> None:
    port = _free_port()
    config = tmp_path / "cti.toml"
    config.write_text(
        f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path / "cti.db"}"\n'
        f'[log]\nformat = "json"\n[web]\nport = 0\n[agi]\nhost = "127.0.0.1"\nport = {port}\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTI_")}

    async def serve() -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cti.cli", "serve", "--config", str(config),
            env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip

    first = await serve()
    try:
        await until(lambda: not _refused(port), within_s=60)
        children = (
            await asyncio.to_thread(Path(f"/proc/{first.pid}/task/{first.pid}/children").read_text)
        ).split()
        workers = [int(pid) for pid in children if _alive(int(pid))]
        assert workers, "no worker process under the daemon"
        first.kill()
        await first.wait()
        await until(lambda: not any(_alive(pid) for pid in workers), within_s=10)
        assert _refused(port)
    finally:
        if first.returncode is None:
            first.kill()
            await first.wait()
    # The daemon started after it can listen there, and answers.
    second = await serve()
    try:
        deadline = time.monotonic() + 60
        while _refused(port):
            assert time.monotonic() < deadline and second.returncode is None, "the new daemon never listened"
            await asyncio.sleep(0.1)
        call = await play_asterisk(port, "06 12 34 56 78")
        assert call.variables[-1] == ("CTI_LOOKUP", "miss")
    finally:
        second.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(second.wait(), 30)
        except TimeoutError:
            second.kill()
            await second.wait()
    assert second.returncode == 0


@pytest.mark.parametrize("realtime", [True, False])
async def test_the_worker_asks_for_real_time_scheduling(tmp_path: Path, realtime: bool) -> None:
    """[agi] realtime: the worker takes SCHED_RR when it may (CAP_SYS_NICE: root here, in CI),
    else it says so and runs at normal priority; off, it never asks."""
    settings = _settings(tmp_path)
    settings = dataclasses.replace(settings, agi=dataclasses.replace(settings.agi, realtime=realtime))
    daemon = Daemon(settings)
    await daemon.start()
    try:
        assert daemon.agi is not None and daemon.agi.pid is not None
        policy = os.sched_getscheduler(daemon.agi.pid)
        may = os.geteuid() == 0
        assert policy == (os.SCHED_RR if realtime and may else os.SCHED_OTHER)
        call = await play_asterisk(daemon.agi.port, "06 12 34 56 78")
        assert call.variables[-1] == ("CTI_LOOKUP", "miss")
    finally:
        await daemon.shutdown()
