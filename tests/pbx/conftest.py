"""Fixtures of the real-PBX tier: a real Asterisk 22 with the shipped configuration, SIPp phones
and trunk, and `cti serve` against them.

In CI (`CTI_REQUIRE_PBX=1`, set by .ci/run) a missing Asterisk or SIPp fails the tier; on a
developer's machine the tier is skipped with the command that builds what is missing. Run with
the rest of the suite, the tier runs after it; .ci/run builds its Asterisk in the background and
runs the tier in another background job beside the rest; the tier waits for that build
(`CTI_ASTERISK_BUILD_STATUS`) and fails with its log if it failed.

With `CTI_PBX_EXTERNAL` (tests/pbx/external.py) the scenarios marked `external` run against a
PBX and a daemon that already run, the compose lab (docker/lab), and the others are skipped.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from daemon import AGENTS, CtiDaemon, Desk
from external import ENV as EXTERNAL_ENV
from external import ExternalAsterisk, ExternalCti, LabConfig
from lab import (
    PG_HOST,
    PG_PORT,
    Asterisk,
    PgTarget,
    Ports,
    asterisk_prefix,
    create_records_database,
    drop_records_database,
    new_run_dir,
)
from sipp import SIPP, Answer, SipLab

BUILD_HINT = (
    "no Asterisk build for the real-PBX tier: run "
    "`CTI_ASTERISK_SOURCES=../shared/asterisk scripts/build-asterisk --deps` "
    "(about 4 minutes; needs root for the Debian build packages) and `apt-get install sip-tester`"
)
# .ci/run builds Asterisk in the background while the rest of the suite runs: this names the
# build's status file, which the tier waits on (`prefix`).
BUILD_STATUS_ENV = "CTI_ASTERISK_BUILD_STATUS"
ARTEFACTS = Path(os.environ.get("CTI_PBX_ARTEFACTS", "/tmp/cti-pbx-artefacts"))
EXTERNAL = LabConfig.from_env()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"external: a scenario that also runs against a PBX and daemon already running ({EXTERNAL_ENV}: "
        "the compose lab, docker/lab)",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.pbx)
            # A real PBX, real phones and real timers: scenarios take seconds, not milliseconds.
            item.add_marker(pytest.mark.timeout(180))
            if EXTERNAL is not None and item.get_closest_marker("external") is None:
                only = f"{EXTERNAL_ENV}: only the scenarios marked external"
                item.add_marker(pytest.mark.skip(reason=only))
    # The tier runs after the rest of the suite (collected first otherwise: `pbx/` sorts before
    # `test_*.py`), so that .ci/run can build its Asterisk in the background meanwhile.
    tier = [item for item in items if item.get_closest_marker("pbx") is not None]
    if tier:
        items[:] = [item for item in items if item.get_closest_marker("pbx") is None] + tier


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[object]:
    # A background build is waited for here, before the first scenario's timeout starts.
    if EXTERNAL is None and item.get_closest_marker("pbx") is not None:
        status = _build_status()
        if status is not None and "exit" not in status:
            reporter = item.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.write_line(f"\nreal-PBX tier: waiting for the Asterisk build ({BUILD_STATUS_ENV})")
            _wait_for_build()  # `prefix` reports a failure
    return (yield)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def _build_status() -> dict[str, str] | None:
    """The background build's status file (`pid=`, `log=`, then `exit=` when it ends), as .ci/run
    writes it and names it in CTI_ASTERISK_BUILD_STATUS; None without one."""
    path = os.environ.get(BUILD_STATUS_ENV)
    if not path:
        return None
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        return {"exit": f"unknown: {exc}"}
    return dict(line.split("=", 1) for line in lines if "=" in line)


def _running(pid: str) -> bool:
    try:
        state = Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, ValueError, IndexError):
        return False
    return state not in ("Z", "X")


def _wait_for_build() -> str | None:
    """Wait for the background Asterisk build, if there is one; why it failed (with its log's
    tail), or None when it succeeded or there is none."""
    deadline = time.monotonic() + float(os.environ.get("CTI_ASTERISK_BUILD_WAIT_S", "3600"))
    while True:
        status = _build_status()
        if status is None or status.get("exit") == "0":
            return None
        if "exit" in status:
            why = f"the background Asterisk build failed (exit {status['exit']})"
            break
        if not _running(status.get("pid", "")):
            why = "the background Asterisk build stopped without an exit status"
            break
        if time.monotonic() > deadline:
            why = "the background Asterisk build is still running"
            break
        time.sleep(2)
    log = Path(status.get("log", "/nonexistent"))
    try:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
    except OSError:
        tail = "(no log)"
    return f"{why}; the end of {log}:\n{tail}"


@pytest.fixture(scope="session")
def prefix() -> Path:
    failed = _wait_for_build()
    if failed is not None:
        if os.environ.get("CTI_REQUIRE_PBX") == "1":
            pytest.fail(failed, pytrace=False)
        pytest.skip(failed)
    found = asterisk_prefix()
    missing = found is None or not Path(SIPP).is_file()
    if missing:
        if os.environ.get("CTI_REQUIRE_PBX") == "1":
            pytest.fail(BUILD_HINT, pytrace=False)
        pytest.skip(BUILD_HINT)
    assert found is not None
    return found


def _failed(request: pytest.FixtureRequest) -> bool:
    return any(
        getattr(getattr(request.node, f"report_{when}", None), "failed", False) for when in ("setup", "call")
    )


@pytest.fixture
async def records_db() -> AsyncIterator[PgTarget]:
    """Deploy step 6: a database holding asterisk-conf/postgresql-tables.sql's tables, where the
    lab's Asterisk writes its queue_log and CEL as the shipped files make it (a throwaway one per
    test on the local PostgreSQL; `CTI_TEST_PG_HOST`/`_PORT` move it)."""
    target = await create_records_database("cti_tier")
    if target is None:
        hint = f"no PostgreSQL at {PG_HOST}:{PG_PORT}: the tier gives Asterisk its records database there"
        if os.environ.get("CTI_REQUIRE_PBX") == "1":
            pytest.fail(hint, pytrace=False)
        pytest.skip(hint)
    try:
        yield target
    finally:
        await drop_records_database(target)


@pytest.fixture
def pbx(request: pytest.FixtureRequest) -> Iterator[Asterisk]:
    if EXTERNAL is not None:
        if not Path(SIPP).is_file():
            pytest.fail("SIPp plays the phones and the trunk: apt-get install sip-tester", pytrace=False)
        asterisk: Asterisk = ExternalAsterisk(
            Path("/nonexistent"), new_run_dir(), EXTERNAL.ports, ami_secret=EXTERNAL.ami_secret, lab=EXTERNAL
        )
    else:
        prefix = request.getfixturevalue("prefix")
        asterisk = Asterisk(prefix, new_run_dir(), Ports.pick(), pgsql=request.getfixturevalue("records_db"))
    asterisk.prepare()
    asterisk.start()
    try:
        yield asterisk
    finally:
        asterisk.stop()
        if isinstance(asterisk, ExternalAsterisk) and _failed(request):
            asterisk.collect()
        if _failed(request) or os.environ.get("CTI_PBX_KEEP") == "1":
            ARTEFACTS.mkdir(parents=True, exist_ok=True)
            kept = ARTEFACTS / f"{request.node.name}"
            shutil.rmtree(kept, ignore_errors=True)
            shutil.move(str(asterisk.run), kept)
            print(f"\nreal-PBX artefacts kept in {kept}")
        else:
            shutil.rmtree(asterisk.run, ignore_errors=True)


@pytest.fixture
def sip(pbx: Asterisk) -> Iterator[SipLab]:
    lab = SipLab(pbx.ports.sip, pbx.run / "sipp")
    # The far end of the trunk answers Asterisk's qualify from the start: a trunk found
    # unreachable stays so for a minute (qualify_frequency = 60) and every call out would fail.
    lab.pstn = lab.listen("pstn", pbx.ports.pstn, Answer(ring_ms=1000))
    if isinstance(pbx, ExternalAsterisk):
        pbx.qualify_trunk()  # the lab's Asterisk started long before this operator
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture(scope="session")
def users_db(prefix: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database holding the lab's users, made once with the CLI (`cti users add`)."""
    run = tmp_path_factory.mktemp("cti-users")
    maker = CtiDaemon(None, run)  # no PBX: only the CLI and the database file are used
    maker.write_config()
    maker.add_users()
    return maker.db_path


@pytest.fixture
def cti(pbx: Asterisk, request: pytest.FixtureRequest) -> Iterator[CtiDaemon]:
    if isinstance(pbx, ExternalAsterisk):
        daemon: CtiDaemon = ExternalCti(pbx, pbx.run / "cti", lab=pbx.lab)
        template = None
    else:
        daemon = CtiDaemon(pbx, pbx.run / "cti")
        template = request.getfixturevalue("users_db")
    daemon.write_config()
    daemon.add_users(template=template)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()
        if isinstance(daemon, ExternalCti) and _failed(request):
            daemon.collect()


@pytest.fixture
async def desks(cti: CtiDaemon) -> AsyncIterator[dict[str, Desk]]:
    """Every lab agent (and the supervisor `chef`) logged in, desktops connected."""
    opened: dict[str, Desk] = {}
    try:
        for user in [*AGENTS, "chef"]:
            desk = Desk(cti, user)
            await desk.login()
            await desk.connect()
            opened[user] = desk
        yield opened
    finally:
        for desk in opened.values():
            await desk.close()
