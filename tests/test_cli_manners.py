"""The `cti` command as an admin meets it: one-line errors, no tracebacks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

CTI = str(Path(sys.executable).with_name("cti"))
CAPTURE = Path(__file__).parent / "captures" / "lab" / "mixed_seed1.ami"


def _env(tmp_path: Path, **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTI_")}
    env.update(CTI_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'cti.db'}", CTI_CONFIG=os.devnull, **more)
    return env


def test_replay_into_a_pipe_closed_early_ends_quietly(tmp_path: Path) -> None:
    # `cti replay ... | head -1`: the reader goes away after a line.
    replay = subprocess.Popen(
        [CTI, "replay", str(CAPTURE), str(CAPTURE), "--json", "--pretty"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(tmp_path),
    )
    assert replay.stdout is not None and replay.stderr is not None
    replay.stdout.readline()
    replay.stdout.close()
    _, err = replay.communicate(timeout=60)
    assert replay.returncode == 0 and b"Traceback" not in err and b"BrokenPipe" not in err, err


def test_users_add_without_a_terminal_says_how_to_give_the_password(tmp_path: Path) -> None:
    result = subprocess.run(
        [CTI, "users", "add", "alice"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
        env=_env(tmp_path), timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "--password-stdin" in result.stderr


def test_serve_on_a_port_already_taken_says_so_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [CTI, "serve"], capture_output=True, text=True, timeout=60,
            env=_env(tmp_path, CTI_WEB_PORT=str(port), CTI_AMI_PORT="9", CTI_LOG_LEVEL="error"),
        )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"127.0.0.1:{port} is already in use" in result.stderr


def test_stats_from_today_to_today(tmp_path: Path) -> None:
    result = subprocess.run(
        [CTI, "stats", "--from", "today", "--to", "today", "--format", "json"], capture_output=True,
        text=True, env=_env(tmp_path), timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
