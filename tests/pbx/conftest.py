"""Fixtures of the real-PBX tier: a real Asterisk 22 with the shipped configuration, SIPp phones
and trunk, and `cti serve` against them.

In CI (`CTI_REQUIRE_PBX=1`, set by .ci/run) a missing Asterisk or SIPp fails the tier; on a
developer's machine the tier is skipped with the command that builds what is missing.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from daemon import AGENTS, CtiDaemon, Desk
from lab import Asterisk, Ports, asterisk_prefix, new_run_dir
from sipp import SIPP, Answer, SipLab

BUILD_HINT = (
    "no Asterisk build for the real-PBX tier: run "
    "`CTI_ASTERISK_SOURCES=../shared/asterisk scripts/build-asterisk --deps` "
    "(about 4 minutes; needs root for the Debian build packages) and `apt-get install sip-tester`"
)
ARTEFACTS = Path(os.environ.get("CTI_PBX_ARTEFACTS", "/tmp/cti-pbx-artefacts"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.pbx)
            # A real PBX, real phones and real timers: scenarios take seconds, not milliseconds.
            item.add_marker(pytest.mark.timeout(180))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def prefix() -> Path:
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
def pbx(prefix: Path, request: pytest.FixtureRequest) -> Iterator[Asterisk]:
    asterisk = Asterisk(prefix, new_run_dir(), Ports.pick())
    asterisk.prepare()
    asterisk.start()
    try:
        yield asterisk
    finally:
        asterisk.stop()
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
def cti(pbx: Asterisk, users_db: Path) -> Iterator[CtiDaemon]:
    daemon = CtiDaemon(pbx, pbx.run / "cti")
    daemon.write_config()
    daemon.add_users(template=users_db)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


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
