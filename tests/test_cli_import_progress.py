"""Progress bars on long imports: drawn on a terminal's stderr, never in a pipe (CI, scripts,
these tests' own captured output), and the results on stdout are the same either way."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from cti.humanize import duration, is_day, parse_until, parse_when, percent, plural
from cti.progress import Bar

ROWS = 5000  # past the importers' first report (every 2,048 rows)


def _contacts(tmp_path: Path) -> Path:
    path = tmp_path / "contacts.csv"
    path.write_text("nom;telephone\n" + "".join(f"C{i};06{i:08d}\n" for i in range(ROWS)), "utf-8")
    return path


def _customers(tmp_path: Path) -> Path:
    path = tmp_path / "customers.csv"
    path.write_text("name;phone\n" + "".join(f"Client {i};06{i:08d}\n" for i in range(ROWS)), "utf-8")
    return path


def _cti(args: list[str], *, terminal: bool) -> tuple[int, str, str]:
    """Run `cti` with stderr on a pseudo-terminal 100 columns wide, or on a pipe."""
    command = [sys.executable, "-m", "cti.cli", *args]
    env = {**os.environ, "TZ": "Europe/Paris"}
    if not terminal:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
        return done.returncode, done.stdout, done.stderr
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=follower, env=env) as child:
        os.close(follower)
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal's other end closed: the child is done with it
                break
            if not chunk:
                break
            seen += chunk
        out = child.stdout.read() if child.stdout else b""
        code = child.wait(timeout=120)
    os.close(leader)
    return code, out.decode(), seen.decode(errors="replace")


@pytest.mark.parametrize("terminal", [True, False])
def test_campaign_import_draws_a_bar_only_on_a_terminal(tmp_path: Path, terminal: bool) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cti.db'}"
    assert _cti(["campaign", "create", "promo", "--url", url], terminal=False)[0] == 0
    code, out, err = _cti(
        ["campaign", "import", str(_contacts(tmp_path)), "--campaign", "promo", "--url", url],
        terminal=terminal,
    )
    assert code == 0, err
    assert f"campaign promo: {ROWS:,} contacts imported; 0 rows rejected" in out
    assert "\r" not in out and "reading" not in out  # the bar never reaches the results
    if terminal:
        assert "reading:" in err and "rows" in err and "100%" in err and "saving" in err
    else:
        assert err == ""


@pytest.mark.parametrize("terminal", [True, False])
def test_customers_import_draws_a_bar_only_on_a_terminal(tmp_path: Path, terminal: bool) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cti.db'}"
    code, out, err = _cti(["customers", "import", str(_customers(tmp_path)), "--url", url], terminal=terminal)
    assert code == 0, err
    assert f"customers were: {ROWS:,} created, 0 updated, 0 unchanged; 0 rows rejected" in out
    if terminal:
        assert "reading:" in err and "saving:" in err and f"{ROWS}/{ROWS}" in err
    else:
        assert "\r" not in err and "reading" not in err


def test_dnc_draws_nothing_in_a_pipe(tmp_path: Path) -> None:
    numbers = tmp_path / "dnc.txt"
    numbers.write_text("".join(f"06{i:08d}\n" for i in range(ROWS)), "utf-8")
    url = f"sqlite+aiosqlite:///{tmp_path / 'cti.db'}"
    code, out, err = _cti(["campaign", "dnc", str(numbers), "--url", url], terminal=False)
    assert (code, err) == (0, "")
    assert out == f"{ROWS:,} numbers read, {ROWS:,} added to the global list; 0 invalid numbers skipped\n"


def test_a_terminal_that_gives_no_size_still_gets_a_bar() -> None:
    """A new pseudo-terminal is 0 x 0 until someone sizes it (`script`, `docker exec -t`, a
    serial console): tqdm alone draws nothing there."""
    leader, follower = pty.openpty()
    assert os.get_terminal_size(follower) == (0, 0)
    with os.fdopen(follower, "w", encoding="utf-8") as stream, Bar(stream, "reading", 100, "rows") as bar:
        bar.update(100, 7)
        stream.flush()
        # The bar may reach the terminal in several writes: read until its last frame is in.
        seen, deadline = "", time.monotonic() + 10
        while not ("reading: 100%" in seen and "7 rows" in seen) and time.monotonic() < deadline:
            readable, _, _ = select.select([leader], [], [], 0.5)
            if readable:
                seen += os.read(leader, 65536).decode(errors="replace")
    os.close(leader)
    assert "reading: 100%" in seen and "100/100" in seen and "7 rows" in seen


# ----------------------------------------------------------------------------------- humanize
@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0 s"), (45, "45 s"), (900, "15 min"), (3600, "1 h"), (5400, "1 h 30 min"), (172800, "2 d"),
     (90000, "1 d 1 h"), (86400 + 300, "1 d"), (2592000, "30 d"), (-900, "-15 min")],
)  # fmt: skip
def test_durations_read_as_people_say_them(seconds: int, text: str) -> None:
    assert duration(seconds) == text


def test_days_in_words_as_cti_stats_reads_them() -> None:
    from datetime import date, datetime
    from zoneinfo import ZoneInfo

    paris, today = ZoneInfo("Europe/Paris"), date(2026, 3, 29)  # the day summer time starts
    assert parse_when("yesterday", paris, today, "--at") == datetime(2026, 3, 28, tzinfo=paris)
    assert parse_when("2026-03-02T10:30", paris, today, "--at") == datetime(2026, 3, 2, 10, 30, tzinfo=paris)
    # A day as an end means through that day: the next midnight, whatever the day's length.
    assert parse_until("today", paris, today, "--stop") == datetime(2026, 3, 30, tzinfo=paris)
    assert parse_until("2026-03-02T10:30Z", paris, today, "--stop").hour == 10
    assert is_day("Tomorrow") and is_day("2026-03-02") and not is_day("2026-03-02T00:00")
    with pytest.raises(ValueError, match="--at must be a date or date-time"):
        parse_when("next week", paris, today, "--at")
    assert (percent(0.4), percent(None), plural(1, "contact"), plural(2000, "contact")) == (
        "40.0 %", "-", "1 contact", "2,000 contacts"
    )  # fmt: skip
