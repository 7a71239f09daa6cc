"""The plugin's rows -> rows of the exits schema, symbolised through the kernel's System.map."""

from __future__ import annotations

import collections
import csv
from pathlib import Path
from typing import Iterable, Mapping

from guestio.exits.schema import COLUMNS as EXIT_COLUMNS, EXIT_KINDS
from guestio.exits.tcg import TcgExitError
from guestio.exits.tcg.plugin_csv import PHASES, PluginRow
from guestio.util import atomic_path

ACCELERATOR = "tcg-modelled"
KERNEL_SPLIT = 1 << 63


# --------------------------------------------------------------------------------------------
# Symbols


def _symbol_table(system_map: Path | str):
    from guestio.exits.symbols import SymbolTable
    return SymbolTable.from_system_map(system_map)


def _function(symtab, pc: int | None) -> tuple[str, int | None]:
    """(function, offset) of a pc through the kernel's System.map; ("", None) elsewhere
    (user space, firmware below 1 MiB, early boot code) -- the exits schema's "unknown"."""
    if pc is None or symtab is None:
        return "", None
    hit = symtab.lookup(pc)
    if hit is None:
        return "", None
    return hit[0], hit[1]


def pc_space(pc: int) -> str:
    """"kernel", "user" or "firmware" (below 1 MiB): where an unsymbolised pc lives."""
    if pc >= KERNEL_SPLIT:
        return "kernel"
    return "firmware" if pc < 0x100000 else "user"


# --------------------------------------------------------------------------------------------
# Exits rows


def to_exits(rows: Iterable[PluginRow], system_map: Path | str | None, *, workload: str,
             variant: str, pio_ports: Mapping[tuple[str, int, int | None], Mapping[int, int]]
             | Mapping[int, Mapping[int, int]] | None = None,
             extra_columns: bool = False) -> list[dict]:
    """Rows of the exits schema (:data:`EXIT_COLUMNS`), most frequent first within a phase.

    One row per (phase, guest pc, exit kind, port/address, calling function).  Port I/O of
    DX-form instructions has an empty port unless *pio_ports* knows it:

    * ``{(phase, pc, caller_site): {port: count}}`` from :func:`parse_sequence` of the SAME
      run (``SequenceResult.pio_by_site``): the row is split by port exactly;
    * ``{pc: {port: count}}`` from :func:`learn_pio_ports` of another run: the port is filled
      in only where that pc used exactly one port.

    ``count_share`` is the row's share of all modelled exits of its phase; ``handling_ns``
    and ``time_share`` are empty (TCG has no exit handling time).  function/caller are ""
    outside the kernel's text (user space, firmware).  *extra_columns* adds ``detail``,
    ``size``, ``caller_site``, ``device``, ``starts`` and ``space`` (kernel/user/firmware);
    without it the rows have exactly the columns of :mod:`guestio.exits.schema` (see
    :func:`to_exits_frame`).
    """
    symtab = _symbol_table(system_map) if system_map is not None else None
    exact = per_pc = None
    if pio_ports:
        first_key = next(iter(pio_ports))
        if isinstance(first_key, tuple):
            exact = pio_ports
        else:
            per_pc = pio_ports

    agg: dict[tuple, dict] = {}
    for r in rows:
        if r.kind == "insns":
            continue
        if r.kind not in EXIT_KINDS:
            raise TcgExitError(f"unknown exit kind {r.kind!r} in the plugin's CSV")
        splits: list[tuple[int | None, int, int]] = [(r.port_or_address, r.count, r.starts)]
        if r.kind in ("pio_in", "pio_out") and r.port_or_address is None:
            if exact is not None:
                ports = exact.get((r.phase, r.pc, r.caller_site))
                if ports is None or sum(ports.values()) != r.count:
                    raise TcgExitError(
                        f"sequence log and CSV disagree for {r.phase} pc {r.pc:#x} caller "
                        f"{r.caller_site}: CSV {r.count}, sequence {ports}")
                # starts are not split by port: attribute them proportionally (integers).
                splits = [(p, n, n if r.starts == r.count else 0) for p, n in
                          sorted(ports.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))]
                if r.starts != r.count:
                    # REP string I/O: keep the starts on the most used port.
                    top = max(ports, key=lambda p: ports[p])
                    splits = [(p, n, r.starts if p == top else 0) for p, n, _ in splits]
            elif per_pc is not None:
                ports = per_pc.get(r.pc)
                if ports and len(ports) == 1:
                    splits = [(next(iter(ports)), r.count, r.starts)]
        fn, off = _function(symtab, r.pc)
        caller_fn, _ = _function(symtab, r.caller_site)
        for port, n, starts in splits:
            key = (r.phase, r.pc, r.kind, port, caller_fn)
            row = agg.get(key)
            if row is None:
                row = agg[key] = {
                    "accelerator": ACCELERATOR, "workload": workload, "variant": variant,
                    "phase": r.phase, "guest_pc": f"0x{r.pc:016x}", "function": fn,
                    "offset": off, "caller": caller_fn, "exit_kind": r.kind,
                    "port_or_address": "" if port is None else f"0x{port:x}",
                    "count": 0, "handling_ns": None, "count_share": None, "time_share": None,
                    "_detail": set(), "_size": set(), "_sites": set(), "_device": set(),
                    "_starts": 0, "_space": pc_space(r.pc),
                }
            row["count"] += n
            row["_starts"] += starts
            row["_detail"].add(r.detail)
            row["_size"].add(r.size)
            if r.caller_site is not None:
                row["_sites"].add(r.caller_site)
            if r.device:
                row["_device"].add(r.device)

    totals: collections.Counter = collections.Counter()
    for row in agg.values():
        totals[row["phase"]] += row["count"]
    out = []
    for row in agg.values():
        row["count_share"] = row["count"] / totals[row["phase"]] if totals[row["phase"]] else None
        detail, size, sites, device, starts, space = (
            row.pop("_detail"), row.pop("_size"), row.pop("_sites"), row.pop("_device"),
            row.pop("_starts"), row.pop("_space"))
        if extra_columns:
            row["detail"] = "|".join(sorted(d for d in detail if d))
            row["size"] = "|".join(str(s) for s in sorted(size))
            row["caller_site"] = "|".join(f"0x{s:016x}" for s in sorted(sites))
            row["device"] = "|".join(sorted(device))
            row["starts"] = starts
            row["space"] = space
        out.append(row)
    phase_order = {p: i for i, p in enumerate(PHASES)}
    out.sort(key=lambda r: (phase_order.get(r["phase"], len(PHASES)), r["phase"], -r["count"],
                            r["guest_pc"], r["port_or_address"], r["caller"]))
    return out


def to_exits_frame(rows: Iterable[PluginRow], system_map: Path | str | None, *, workload: str,
                   variant: str, pio_ports=None):
    """:func:`to_exits` as a validated :mod:`guestio.exits.schema` DataFrame."""
    from guestio.exits import schema as exits
    return exits.frame(to_exits(rows, system_map, workload=workload, variant=variant,
                                pio_ports=pio_ports))


def write_exits_csv(rows: list[dict], path: Path | str) -> None:
    """Write :func:`to_exits` rows as they are (also with extra columns)."""
    columns = list(EXIT_COLUMNS) + [c for c in (rows[0] if rows else {}) if c not in EXIT_COLUMNS]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else v) for k, v in r.items()})
