"""The compose lab itself (docker/lab): what only the containers can show.

Its passwords are public and it runs with host networking, so nothing of it may listen anywhere
but on 127.0.0.1, including the RTP ports Asterisk opens for each call leg.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from daemon import CtiDaemon, Desk
from external import LabConfig
from floor import call_in, finish, log_in
from lab import Asterisk
from sipp import Answer, SipLab

LAB = LabConfig.from_env()
pytestmark = [
    pytest.mark.external,
    pytest.mark.skipif(LAB is None or not LAB.containers, reason="the compose lab only (CTI_PBX_EXTERNAL)"),
]
LOOPBACK = ("127.0.0.1", "[::1]")


def lab_sockets() -> list[tuple[str, str, int, str]]:
    """(protocol, address, port, process) of every listening TCP and unconnected UDP socket of the
    lab's processes (every process of its containers, seen from the host's network namespace)."""
    assert LAB is not None
    pids: set[str] = set()
    for container in LAB.containers:
        top = subprocess.run(
            ["docker", "top", container, "-eo", "pid"], capture_output=True, text=True, check=True
        )
        pids.update(line.strip() for line in top.stdout.splitlines()[1:] if line.strip())
    listing = subprocess.run(["ss", "-H", "-tulnp"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in listing.splitlines():
        owners = re.findall(r'\("([^"]+)",pid=(\d+),', line)
        if not any(pid in pids for _, pid in owners):
            continue
        protocol, local = line.split()[0], line.split()[4]
        address, _, port = local.rpartition(":")
        found.append((protocol, address, int(port), owners[0][0]))
    return found


def ephemeral(port: int) -> bool:
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    return low <= port <= high


@pytest.mark.skipif(os.geteuid() != 0, reason="ss names other users' processes to root only")
async def test_every_socket_of_the_lab_is_on_loopback_rtp_included(
    pbx: Asterisk, sip: SipLab, cti: CtiDaemon, desks: dict[str, Desk]
) -> None:
    await log_in(pbx, sip, ["1001"], Answer(ring_ms=500))
    caller = call_in(sip, pbx, "1,1,1", hangup_after_ms=7000)  # answered: a trunk leg and an agent leg
    await desks["agent1"].next("pop.answered", timeout_s=30)
    during = lab_sockets()
    assert await finish(caller) == 0, caller.errors()

    rtp = [s for s in during if s[0] == "udp" and 10000 <= s[2] <= 10099]
    assert len(rtp) >= 4, during  # RTP and RTCP of both legs
    # PJSIP's DNS client keeps one IPv4 and one IPv6 socket on an ephemeral port of every
    # interface for nameservers' answers (nothing configures its address; the lab looks nothing
    # up: every address in it is numeric). Nothing else may be off loopback.
    elsewhere = [s for s in during if s[1] not in LOOPBACK]
    resolver = [s for s in elsewhere if s[0] == "udp" and s[3] == "asterisk" and ephemeral(s[2])]
    assert len(resolver) <= 2 and {s[1] for s in resolver} <= {"0.0.0.0", "[::]", "*"}, resolver
    assert [s for s in elsewhere if s not in resolver] == []
    listening = {(s[0], s[2]) for s in during}
    ports = pbx.ports
    assert {("tcp", ports.ami), ("udp", ports.sip), ("tcp", ports.agi)} <= listening
