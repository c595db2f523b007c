"""docker/scaleout's files, without Docker: the PBX entrypoint's edits on the shipped
configuration (then the compose lab's overlay on top: loopback, a lint-clean result), and the
ports and names written in three places (docker-compose.yml, cti.toml, run) agreeing.

The stack itself is checked by tests/pbx/test_scaleout_lab.py, against the running containers
only (docs/scale-out.md, "Try it in containers").
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from cti.asterisk_lint import lint, parse_conf
from cti.config import load_settings

ROOT = Path(__file__).resolve().parent.parent
STACK = ROOT / "docker" / "scaleout"
COMPOSE = (STACK / "docker-compose.yml").read_text(encoding="utf-8")


def services() -> dict[str, str]:
    """Each service's block of docker-compose.yml, as text."""
    body = COMPOSE[COMPOSE.index("\nservices:\n") :]
    body = body[: body.index("\nvolumes:\n")]
    return dict(re.findall(r"^  (\w+):\n((?:    .*\n|\n)*)", body, re.MULTILINE))


def env(service: str, name: str) -> str:
    found = re.findall(rf'^      {name}: "?([^"\n]*)"?$', services()[service], re.MULTILINE)
    assert len(found) == 1, (service, name, found)
    return found[0]


def pbx_conf(tmp_path: Path, pbx: str) -> Path:
    """/etc/asterisk as the `pbx` container gets it: scale-out's edits, then the lab's overlay."""
    conf = tmp_path / "conf"
    names = ["CTI_SCALEOUT_RTP", "CTI_SCALEOUT_RECORDS_DB", "CTI_LAB_AMI_PORT", "CTI_LAB_SIP_PORT"]
    names += ["CTI_LAB_PSTN_PORT", "CTI_LAB_CALLER_PORTS", "CTI_LAB_AGI_PORT"]
    variables = {name: env(pbx, name) for name in names}
    result = subprocess.run(
        ["sh", str(STACK / "asterisk-entrypoint.sh")],
        env={
            "PATH": "/usr/bin:/bin", "CTI_SCALEOUT_CONF": str(conf),
            "CTI_SCALEOUT_SHIPPED": str(ROOT / "asterisk-conf"), "CTI_SCALEOUT_NEXT": "true",
            "CTI_SCALEOUT_PG_PORT": "5434", "CTI_SCALEOUT_RECORDS_PASSWORD": "pw",
            **variables,
        },
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    etc = tmp_path / "etc"
    shutil.copytree(conf, etc)
    shutil.copytree(ROOT / "dialplans", etc / "dialplans")
    result = subprocess.run(
        ["sh", str(ROOT / "docker" / "asterisk" / "overlay.sh"), str(etc)],
        env={"PATH": "/usr/bin:/bin", **{k: v for k, v in variables.items() if k.startswith("CTI_LAB_")}},
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return etc


@pytest.mark.parametrize("pbx", ["pbx1", "pbx2"])
def test_each_pbx_gets_its_rtp_range_records_database_and_loopback_ports(tmp_path: Path, pbx: str) -> None:
    etc = pbx_conf(tmp_path, pbx)
    start, end = env(pbx, "CTI_SCALEOUT_RTP").split()
    rtp = parse_conf(etc / "rtp.conf").section("general")
    assert rtp is not None and (rtp.get("rtpstart"), rtp.get("rtpend")) == (start, end)
    for name, section in (("res_pgsql.conf", "general"), ("cel_pgsql.conf", "global")):
        found = parse_conf(etc / name).section(section)
        assert found is not None
        assert (found.get("hostname"), found.get("port")) == ("127.0.0.1", "5434")
        assert found.get("dbname") == env(pbx, "CTI_SCALEOUT_RECORDS_DB") == f"asterisk_{pbx}"
    # The password, in the file both include inside their section (as its .example says).
    assert (etc / "pgsql_cti_local.conf").read_text(encoding="utf-8") == "password = pw\n"
    manager = parse_conf(etc / "manager.conf").section("general")
    assert manager is not None
    assert (manager.get("bindaddr"), manager.get("port")) == ("127.0.0.1", env(pbx, "CTI_LAB_AMI_PORT"))
    transports = [s for s in parse_conf(etc / "pjsip.conf").sections if s.get("type") == "transport"]
    assert [t.get("bind") for t in transports] == [f"127.0.0.1:{env(pbx, 'CTI_LAB_SIP_PORT')}"]
    # Lint-clean but for that fragment, a secret the lint has no rules for (deploy step 6).
    (etc / "pgsql_cti_local.conf").unlink()
    assert lint(etc, etc / "dialplans") == []


def test_the_two_pbxs_share_no_port_and_no_rtp_port() -> None:
    ports = {}
    for pbx in ("pbx1", "pbx2"):
        start, end = map(int, env(pbx, "CTI_SCALEOUT_RTP").split())
        taken = set(range(start, end + 1))
        for name in ("CTI_LAB_AMI_PORT", "CTI_LAB_SIP_PORT", "CTI_LAB_PSTN_PORT", "CTI_LAB_AGI_PORT"):
            taken.add(int(env(pbx, name)))
        taken.update(int(p) for p in env(pbx, "CTI_LAB_CALLER_PORTS").split())
        ports[pbx] = taken
    assert not ports["pbx1"] & ports["pbx2"]
    # Nor with the compose lab's defaults (docker/docker-compose.yml): both may run at once.
    lab = {5038, 5060, 5070, 5071, 5072, 5073, 4573, 8080, 5433} | set(range(10000, 10100))
    assert not (ports["pbx1"] | ports["pbx2"]) & lab


def test_nodes_compose_toml_and_run_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    run = (STACK / "run").read_text(encoding="utf-8")
    nodes = [name for name in services() if name.startswith("cti")]
    assert nodes == ["cti1", "cti2", "cti3"]
    assert [env(n, "CTI_HA_NODE") for n in nodes] == nodes
    web = {n: env(n, "CTI_WEB_PORT") for n in nodes}
    assert re.search(r"web_port=\(\[cti1\]=(\d+) \[cti2\]=(\d+) \[cti3\]=(\d+)\)", run).groups() == tuple(  # type: ignore[union-attr]
        web.values()
    )
    agi = {n: env(n, "CTI_AGI_PORT") for n in nodes}
    assert len(set(web.values()) | set(agi.values())) == 6
    # Each PBX's caller lookup goes to a node's FastAGI port.
    assert {env(p, "CTI_LAB_AGI_PORT") for p in ("pbx1", "pbx2")} <= set(agi.values())
    nats = services()["nats"]
    assert '"--port", "4223"' in nats and '"--addr", "127.0.0.1"' in nats and "--jetstream" in nats
    for name, block in services().items():
        assert "network_mode: host" in block or "<<: *" in block, name

    for node in nodes:
        monkeypatch.setenv("CTI_HA_NODE", node)
        monkeypatch.setenv("CTI_WEB_PORT", web[node])
        settings = load_settings(str(STACK / "cti.toml"))
        assert settings.ha.enabled and settings.ha.node == node
        assert settings.bus.nats_url == "nats://127.0.0.1:4223"
        assert settings.web.host == settings.agi.host == "127.0.0.1"
        servers = {s.name: s for s in settings.asterisk}
        assert set(servers) == {"pbx1", "pbx2"}
        for pbx, server in servers.items():
            assert (server.host, str(server.port)) == ("127.0.0.1", env(pbx, "CTI_LAB_AMI_PORT"))
            assert server.records_url.endswith(f"@127.0.0.1:5434/{env(pbx, 'CTI_SCALEOUT_RECORDS_DB')}")
        # A phone on one PBX only: an action from a node that owns no stream has one place to go.
        assert not set(servers["pbx1"].phones) & set(servers["pbx2"].phones)
        assert len(servers["pbx1"].phones + servers["pbx2"].phones) == 6
