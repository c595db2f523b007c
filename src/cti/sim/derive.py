"""Derive the event header layouts from real Asterisk captures (a maintenance tool, not used at run time).

    python -m cti.sim.derive ../shared/ami-captures > src/cti/sim/layouts.py

For every event name it collects the header names in the order Asterisk sent them, and folds the
repeated blocks Asterisk builds from one snapshot (the 14 channel headers, the 7 bridge headers,
with or without a prefix such as ``Dest`` or ``Transferer``) into one slot each. The output is
reviewed and committed as `layouts.py`, so the simulator runs from an installed package without
the captures.
"""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from pathlib import Path

from cti.ami.parser import AmiParser

CHANNEL_FIELDS = (
    "Channel",
    "ChannelState",
    "ChannelStateDesc",
    "CallerIDNum",
    "CallerIDName",
    "ConnectedLineNum",
    "ConnectedLineName",
    "Language",
    "AccountCode",
    "Context",
    "Exten",
    "Priority",
    "Uniqueid",
    "Linkedid",
)
BRIDGE_FIELDS = (
    "BridgeUniqueid",
    "BridgeType",
    "BridgeTechnology",
    "BridgeCreator",
    "BridgeName",
    "BridgeNumChannels",
    "BridgeVideoSourceMode",
)


def _fold(names: list[str], fields: tuple[str, ...], marker: str) -> list[str]:
    """Replace each run `<prefix>field...` matching `fields` by one `<marker><prefix>` slot."""
    out: list[str] = []
    i = 0
    while i < len(names):
        name = names[i]
        if name.endswith(fields[0]):
            prefix = name[: -len(fields[0])]
            run = [prefix + f for f in fields]
            if names[i : i + len(run)] == run:
                out.append(marker + prefix)
                i += len(run)
                continue
        out.append(name)
        i += 1
    return out


def layout_of(names: list[str]) -> tuple[str, ...]:
    return tuple(_fold(_fold(names, CHANNEL_FIELDS, "@"), BRIDGE_FIELDS, "#"))


def collect(directory: Path) -> dict[str, Counter[tuple[str, ...]]]:
    layouts: dict[str, Counter[tuple[str, ...]]] = defaultdict(Counter)
    for path in sorted(directory.glob("*.ami")):
        parser = AmiParser()
        for raw in parser.feed(path.read_bytes()):
            name = raw.get("Event")
            if name is None:
                continue
            keys = [k for k in raw if k not in ("Event", "Privilege", "Timestamp", "ActionID")]
            layouts[name][layout_of(keys)] += 1
    return layouts


def render(layouts: dict[str, Counter[tuple[str, ...]]]) -> str:
    lines = [
        '"""Header layouts of the events Asterisk 22 sends, derived from real captures by `derive.py`.',
        "",
        "`@<prefix>` is a channel snapshot block (Channel, ChannelState, ... Linkedid, each with the",
        "prefix), `#<prefix>` a bridge snapshot block. Other names are plain headers. Event, Privilege,",
        "Timestamp and ActionID are placed by the writer. Variants seen only when a channel was already",
        "gone are listed under `<Event>/<variant>`.",
        '"""',
        "",
        "LAYOUTS: dict[str, tuple[str, ...]] = {",
    ]
    for name in sorted(layouts):
        for i, (layout, _) in enumerate(layouts[name].most_common()):
            key = name if i == 0 else f"{name}/{i}"
            lines.append(f"    {key!r}: {layout!r},")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    directory = Path(argv[1]) if len(argv) > 1 else Path("../shared/ami-captures")
    sys.stdout.write(render(collect(directory)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
