"""Exit records -> the exits schema: one row per (phase, guest pc, exit kind, port or address).

Each row is symbolised against the guest kernel's System.map (function and
offset) when a symbol table is given; handling times are summed over the row's
exits whose entry was seen.
"""

from __future__ import annotations

import math
from typing import Iterable

import pandas as pd

from guestio.exits import schema as exits_schema
from guestio.exits.kvm.parser import ExitRecord


def sites_frame(records: Iterable[ExitRecord], workload: str, variant: str, symbols=None) -> pd.DataFrame:
    """The exits schema (accelerator 'kvm'): one row per (phase, pc, kind, port/address)."""
    rows: dict[tuple, dict] = {}
    for r in records:
        key = (r.phase, r.guest_pc, r.exit_kind, r.port_or_address)
        row = rows.get(key)
        if row is None:
            hit = symbols.lookup(r.guest_pc) if symbols is not None else None
            row = rows[key] = {
                "accelerator": "kvm", "workload": workload, "variant": variant, "phase": r.phase,
                "guest_pc": r.guest_pc, "function": hit[0] if hit else "",
                "offset": hit[1] if hit else None, "caller": "", "exit_kind": r.exit_kind,
                "port_or_address": r.port_or_address, "count": 0, "handling_ns": math.nan,
            }
        row["count"] += 1
        if not math.isnan(r.handling_ns):
            row["handling_ns"] = r.handling_ns if math.isnan(row["handling_ns"]) else row["handling_ns"] + r.handling_ns
    return exits_schema.frame(list(rows.values()))
