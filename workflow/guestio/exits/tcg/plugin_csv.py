"""The exitcount plugin's CSV: one row per phase, pc, exit kind, port or address and call site."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from guestio.exits.tcg import TcgExitError

PLUGIN_COLUMNS = ["phase", "pc", "kind", "detail", "port_or_address", "size", "caller_site_pc",
                  "device", "count", "starts"]
#: Phases the plugin derives from the guestio console lines, in order ("GUESTIO: phase NAME"
#: adds named windows).
PHASES = ("boot", "init", "benchmark", "shutdown")


@dataclass(frozen=True)
class PluginRow:
    phase: str
    pc: int | None
    kind: str
    detail: str
    port_or_address: int | None
    size: int
    caller_site: int | None
    device: str
    count: int
    starts: int


def _hex(s: str) -> int | None:
    return int(s, 16) if s else None


def read_plugin_csv(path: Path | str) -> list[PluginRow]:
    """The plugin's rows (including the per-phase ``insns`` rows)."""
    rows = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != PLUGIN_COLUMNS:
            raise TcgExitError(f"{path}: unexpected header {reader.fieldnames}")
        for r in reader:
            rows.append(PluginRow(
                phase=r["phase"], pc=_hex(r["pc"]), kind=r["kind"], detail=r["detail"],
                port_or_address=_hex(r["port_or_address"]), size=int(r["size"] or 0),
                caller_site=_hex(r["caller_site_pc"]), device=r["device"],
                count=int(r["count"]), starts=int(r["starts"])))
    return rows


def phase_instructions(rows: Iterable[PluginRow]) -> dict[str, int]:
    """Executed guest instructions per phase."""
    return {r.phase: r.count for r in rows if r.kind == "insns"}
