"""The scale-out stack (docker/scaleout): two Asterisk servers, three cti nodes, PostgreSQL, NATS.

Runs only against the running stack: `docker/scaleout/run up` writes build/scaleout/scaleout.json,
and `docker/scaleout/run check` runs this file with `CTI_SCALEOUT` naming it; without it every
test here is skipped (it is in no CI run). docs/scale-out.md, "Try it in containers".

What it checks, on the real thing: each PBX is owned by exactly one node (`/healthz`
links[].role); a call into pbx1, made by SIPp through pbx1's test trunk and answered by a SIPp
phone logged in with *41, pops on the desktop of an agent logged in on a node that does not own
pbx1 (the events cross the JetStream bus); `docker kill` of pbx1's owner: another node owns pbx1
within two lease periods (with a new fencing token in `stream_leases`), and the agent, still on
their node, gets the next call's pop. The killed node is started again at the end: it stands by.

The stack is left as it was found, but what the tier's fixtures do to a lab happens here too:
the tier's users and passwords (`tests/pbx/daemon.py`) are written over the stack's, and the
calls made stay in its database.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from daemon import Desk
from external import ExternalAsterisk, ExternalCti, LabConfig
from floor import call_in, finish, log_in
from lab import new_run_dir
from sipp import SIPP, Answer, SipLab

ENV = "CTI_SCALEOUT"
STACK: dict[str, Any] | None = (
    json.loads(Path(os.environ[ENV]).read_text(encoding="utf-8")) if os.environ.get(ENV) else None
)
pytestmark = [
    pytest.mark.skipif(STACK is None, reason=f"the scale-out stack only ({ENV}: docker/scaleout/run check)"),
    pytest.mark.skipif(not Path(SIPP).is_file(), reason="SIPp plays the phones and the trunk"),
]
SUPPORT = "1,1,1"  # French, "problème technique", "panne ou incident": the support queue


def stack() -> dict[str, Any]:
    assert STACK is not None
    return STACK


def health(node: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{stack()['nodes'][node]['web_url']}/healthz", timeout=2) as response:
            return dict(json.load(response))
    except OSError:
        return None


def owners() -> dict[str, list[str]]:
    """Each PBX's owners according to the nodes' /healthz (links[].role == "owner")."""
    found: dict[str, list[str]] = {pbx: [] for pbx in stack()["pbxs"]}
    for node in stack()["nodes"]:
        for link in (health(node) or {}).get("links", []):
            if link.get("role") == "owner":
                found[link["server"]].append(node)
    return found


async def wait_single_owners(timeout_s: float = 30.0, without: str = "") -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    while True:
        now = owners()
        if all(len(nodes) == 1 and without not in nodes for nodes in now.values()):
            return {pbx: nodes[0] for pbx, nodes in now.items()}
        if time.monotonic() > deadline:
            raise AssertionError(f"not one owner per PBX within {timeout_s} s: {now}")
        await asyncio.sleep(0.1)


async def stream_lease(server: str) -> tuple[str, int]:
    url = stack()["database_url"].replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow("SELECT holder, token FROM stream_leases WHERE server = $1", server)
    finally:
        await conn.close()
    assert row is not None, f"no lease row for {server}"
    return str(row["holder"]), int(row["token"])


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True, timeout=60).stdout


def lab_config(pbx: str, node: str) -> LabConfig:
    """The tier's view of one PBX of the stack and of one node (tests/pbx/external.py)."""
    p, n = stack()["pbxs"][pbx], stack()["nodes"][node]
    return LabConfig(
        ami_port=p["ami_port"], sip_port=p["sip_port"], pstn_port=p["pstn_port"],
        caller_ports=tuple(p["caller_ports"]), agi_port=p["agi_port"], web_url=n["web_url"],
        ami_secret=stack()["ami_secret"], database_url=stack()["database_url"],
        asterisk_exec=("docker", "exec", p["container"]),
        cti_exec=("docker", "exec", "-i", n["container"]), cti_logs=("docker", "logs", n["container"]),
        containers=(p["container"], n["container"]),
    )  # fmt: skip


async def test_each_pbx_is_owned_by_exactly_one_node_the_others_stand_by() -> None:
    owned = await wait_single_owners()
    for node in stack()["nodes"]:
        h = health(node)
        assert h is not None and h["status"] == "ok", (node, h)
        roles = {link["server"]: link["role"] for link in h["links"]}
        assert roles == {pbx: "owner" if owned[pbx] == node else "standby" for pbx in stack()["pbxs"]}
    for pbx, node in owned.items():
        holder, _ = await stream_lease(pbx)
        assert holder == node, (pbx, holder, node)


class Floor:
    """pbx1 through the tier's helpers, a desktop on `node`."""

    def __init__(self, node: str) -> None:
        self.lab = lab_config("pbx1", node)
        self.pbx = ExternalAsterisk(
            Path("/nonexistent"), new_run_dir(), self.lab.ports, ami_secret=self.lab.ami_secret, lab=self.lab
        )
        self.sip = SipLab(self.lab.sip_port, self.pbx.run / "sipp")
        self.cti = ExternalCti(self.pbx, self.pbx.run / "cti", lab=self.lab)

    async def __aenter__(self) -> Floor:
        try:
            await asyncio.to_thread(self._enter)
        except BaseException:
            await self.__aexit__(*sys.exc_info())
            raise
        return self

    def _enter(self) -> None:  # the tier's fixtures are synchronous (they run their own loops)
        self.pbx.prepare()
        self.pbx.start()  # booted; no agent logged in on pbx1
        self.sip.pstn = self.sip.listen("pstn", self.lab.pstn_port, Answer(ring_ms=1000))
        self.pbx.qualify_trunk()
        self.cti.write_config()
        self.cti.add_users()  # the tier's users and password, through the desktop's node
        self.cti.start()  # healthy; the calls stored before this test are left out of its own

    async def __aexit__(self, *exc: object) -> None:
        self.sip.close()
        self.pbx.stop()
        if exc[0] is None:
            shutil.rmtree(self.pbx.run, ignore_errors=True)
        else:
            with suppress(Exception):  # what can be had: the containers may be gone
                self.pbx.collect()
                self.cti.collect()
            print(f"\nscale-out artefacts kept in {self.pbx.run}")


@pytest.fixture
def restore() -> Iterator[list[str]]:
    """Containers this test kills, started again after it (they come back as standbys)."""
    killed: list[str] = []
    yield killed
    for container in killed:
        subprocess.run(["docker", "start", container], capture_output=True, timeout=60)
    for node in [n for n, v in stack()["nodes"].items() if v["container"] in killed]:
        deadline = time.monotonic() + 90
        while health(node) is None and time.monotonic() < deadline:
            time.sleep(0.5)


@pytest.mark.timeout(240)
async def test_pbx1_call_pops_on_another_node_and_a_standby_takes_over_a_killed_owner(
    restore: list[str],
) -> None:
    lease_s = float(stack()["lease_s"])
    owned = await wait_single_owners()
    owner = owned["pbx1"]
    # The desktop's node: one that does not own pbx1 (one that owns nothing, when there is one).
    others = [n for n in stack()["nodes"] if n != owner]
    node = next((n for n in others if n not in owned.values()), others[0])
    holder, token = await stream_lease("pbx1")
    assert holder == owner

    async with Floor(node) as floor:
        desks = [Desk(floor.cti, "agent1"), Desk(floor.cti, "agent4")]
        try:
            for desk in desks:
                await desk.login()
                await desk.connect()
            # Two support agents (pjsip.conf: 1001, 1004): the queue's wrap-up (30 s) keeps the
            # first call's agent out of the second.
            await log_in(floor.pbx, floor.sip, ["1001", "1004"], Answer(ring_ms=500))

            # A call into pbx1, tracked by its owner, pops on a desktop served by another node.
            await call_pops(floor, desks)

            # pbx1's owner dies: a standby owns pbx1 within two lease periods.
            container = stack()["nodes"][owner]["container"]
            killed_at = time.monotonic()
            docker("kill", container)
            restore.append(container)
            taken = await wait_single_owners(timeout_s=4 * lease_s, without=owner)
            took_s = time.monotonic() - killed_at
            print(f"\npbx1: {owner} killed, {taken['pbx1']} owns it {took_s:.2f} s later; desktops on {node}")
            assert took_s <= 2 * lease_s, f"takeover in {took_s:.2f} s, lease {lease_s} s"
            new_holder, new_token = await stream_lease("pbx1")
            assert new_holder == taken["pbx1"] and new_token > token, (new_holder, new_token, token)

            # The agents, still on their node, get the next call's pop from the new owner.
            await call_pops(floor, desks)

            # Each call stored once, answered in support: the first (ended just before the kill,
            # possibly not stored yet by the killed owner) by the new owner from pbx1's CEL.
            calls = await floor.cti.customer_calls(2, within_s=30)
            assert len(calls) == 2 and len({c["linkedid"] for c in calls}) == 2, calls
            assert all(c["outcome"] == "answered" and c["queue"] == "support" for c in calls), calls
            print(f"stored: {[(c['linkedid'], c['closed_by']) for c in calls]}")
        finally:
            for desk in desks:
                await desk.close()


async def call_pops(floor: Floor, desks: list[Desk]) -> None:
    """A caller into pbx1's support queue: one of `desks` gets the pop, then its answer."""
    caller = call_in(floor.sip, floor.pbx, SUPPORT, hangup_after_ms=4000)
    waits = {asyncio.ensure_future(desk.next("pop", timeout_s=30)): desk for desk in desks}
    done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    first = done.pop()
    pop = first.result()["pop"]
    assert pop["caller"]["e164"] == "+33612345678"
    assert pop["queue"] == "support"
    answered = await waits[first].next("pop.answered", timeout_s=15)
    assert answered["pop"]["state"] == "answered"
    assert await finish(caller) == 0, caller.errors()
