"""Reports as CSV (REST `?format=csv`, `cti stats --format csv`) and as a terminal table."""

from __future__ import annotations

import csv
import io
from typing import Any

from cti.stats.history import Report

# Breakdowns held as dicts in JSON become one column per key in CSV.
_BREAKDOWNS = {"pause_by_reason": "pause", "choices_by_key": "choice"}

# The columns a supervisor reads first, per report (French names in the header).
TABLE_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "queues": [
        ("presented", "Présentés"),
        ("answered", "Décrochés"),
        ("abandoned", "Abandons"),
        ("timed_out", "Délai"),
        ("qs", "QS"),
        ("service_level", "NS"),
        ("asa_s", "ASA"),
        ("max_wait_s", "Att.max"),
        ("dmc_s", "DMC"),
        ("dmt_s", "DMT"),
    ],
    "agents": [
        ("handled", "Traités"),
        ("logged_in_s", "Connecté"),
        ("acd_s", "Conv ACD"),
        ("paused_s", "Pause"),
        ("dmc_s", "DMC"),
        ("dmt_s", "DMT"),
        ("calls_per_hour", "Appels/h"),
        ("occupancy", "Occupation"),
    ],
    "ivr": [
        ("entries", "Entrées"),
        ("visits", "Passages"),
        ("choices", "Choix"),
        ("invalid", "Invalides"),
        ("timeouts", "Sans saisie"),
        ("hangups", "Raccrochés"),
        ("containment", "Rétention"),
    ],
    "outbound": [
        ("attempts", "Tentatives"),
        ("connects", "Contacts"),
        ("contact_rate", "Joignab."),
        ("dropped", "Drops"),
        ("drop_rate", "Tx drop"),
        ("contacts_argued", "CA"),
        ("conversion_rate", "Transfo"),
    ],
}
_RATIOS = {"qs", "service_level", "occupancy", "containment", "contact_rate", "drop_rate", "conversion_rate"}
_DURATIONS = {"asa_s", "max_wait_s", "dmc_s", "dmt_s", "logged_in_s", "acd_s", "paused_s"}


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key in _BREAKDOWNS and isinstance(value, dict):
            out.update({f"{_BREAKDOWNS[key]}:{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def to_csv(report: Report) -> str:
    """Every interval row then a total row per key (`interval_start` = "total")."""
    rows = [_flat(r) for r in report.rows] + [{"interval_start": "total", **_flat(t)} for t in report.totals]
    columns: list[str] = ["interval_start", report.key]
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, extrasaction="ignore", lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
    return buffer.getvalue()


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "—"
    if key in _RATIOS:
        return f"{value * 100:.1f}%"
    if key in _DURATIONS:
        seconds = round(value)
        return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{value:.1f}s"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.2f}"
    return str(int(value)) if isinstance(value, float) else str(value)


def to_table(report: Report) -> str:
    columns = TABLE_COLUMNS[report.kind]
    label = {"queue": "File", "interface": "Agent", "menu": "Menu", "campaign": "Campagne"}[report.key]
    header = ["Intervalle", label, *(title for _, title in columns)]
    lines: list[list[str]] = []
    for row in report.rows:
        name = row.get("agent") or row.get(report.key) or "—"
        lines.append(
            [
                row["interval_start"][:16].replace("T", " "),
                str(name),
                *(_cell(k, row.get(k)) for k, _ in columns),
            ]
        )
    for row in report.totals:
        name = row.get("agent") or row.get(report.key) or "—"
        lines.append(["total", str(name), *(_cell(k, row.get(k)) for k, _ in columns)])
    widths = [
        max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)
    ]
    out = [
        "  ".join(
            h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True))
        )
    ]
    for line in lines:
        out.append(
            "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True))
            )
        )
    if not lines:
        out.append("(aucun appel sur la période / no calls in this period)")
    return "\n".join(out) + "\n"
