"""Reading Asterisk's queue_log for the gap after a reconnect."""

from __future__ import annotations

from pathlib import Path

from cti.calls.queue_log import parse_line, read_since

CAPTURES = Path(__file__).resolve().parent / "captures" / "lab"


def test_real_queue_log_lines_parse() -> None:
    lines = (CAPTURES / "mixed_seed1.queue_log").read_text().splitlines()
    entries = [e for e in map(parse_line, lines) if e is not None]
    verbs = {e.verb for e in entries}
    assert {"ENTERQUEUE", "CONNECT", "COMPLETEAGENT", "COMPLETECALLER", "ABANDON", "EXITWITHTIMEOUT"} <= verbs
    connect = next(e for e in entries if e.verb == "CONNECT")
    assert connect.agent and connect.data(0) is not None and connect.data(99) is None


def test_member_and_garbage_lines_are_ignored() -> None:
    assert parse_line("1795389527|NONE|NONE|NONE|QUEUESTART|") is None
    assert parse_line("1795389527|NONE|support|Agent5|ADDMEMBER|") is None
    assert parse_line("not a queue_log line") is None
    assert parse_line("abc|1.2|support|Agent1|CONNECT|2|x|1") is None


def test_read_since_reads_only_the_tail_that_matters(tmp_path: Path) -> None:
    path = tmp_path / "queue_log"
    old = "".join(f"{1000 + i // 10}|1.{i}|support|NONE|ENTERQUEUE||+336|1\n" for i in range(5000))
    new = "2000|9.9|support|Agent1|CONNECT|4|9.10|2\n2001|9.9|support|Agent1|COMPLETEAGENT|4|1|1\n"
    path.write_text(old + new)
    entries = read_since(path, 2000.0)
    assert [e.verb for e in entries] == ["CONNECT", "COMPLETEAGENT"]
    # Only the last bytes are read; a cut first line is dropped, not misparsed.
    tail = read_since(path, 0.0, max_bytes=len(new) + 10)
    assert [e.verb for e in tail] == ["CONNECT", "COMPLETEAGENT"]
