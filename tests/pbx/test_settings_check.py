"""`cti config check --connect` against the real Asterisk: the admin's first command after
writing cti.toml logs in with the daemon's own account and reads the PBX's version."""

from __future__ import annotations

import json
import subprocess

from daemon import CTI, CtiDaemon
from external import ExternalCti


def test_config_check_connects_to_the_real_asterisk(cti: CtiDaemon) -> None:
    doc = json.loads(cti.cli("config", "check", "--connect", "--json"))
    found = {f["setting"]: f for f in doc["findings"]}
    assert doc["ok"], doc
    ami = found["asterisk[pbx1]"]
    assert ami["level"] == "ok"
    # Asterisk 22's AMI banner, and the version CoreSettings gives to an account allowed
    # `reporting` (asterisk-conf/manager.conf): the daemon's account needs nothing more.
    assert "(Asterisk Call Manager/" in ami["text"] and ", Asterisk 22." in ami["text"], ami
    assert found["database.url"]["level"] == "ok"
    if isinstance(cti, ExternalCti):
        return  # its settings live in the container; the rest runs beside the local build
    # A wrong secret is said as Asterisk says it.
    wrong = cti.env() | {"CTI_AMI_SECRET": "not-the-secret"}
    refused = subprocess.run(
        [CTI, "config", "check", "--connect"], capture_output=True, text=True, env=wrong, timeout=60
    )
    assert refused.returncode == 1
    assert "error: asterisk[pbx1]: login as 'cti' refused: Authentication failed" in refused.stdout
