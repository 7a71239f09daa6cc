"""One long-form schema for VM-exit sites, from KVM (measured) and TCG (modelled).

One row = one exit site in one measured window: (accelerator, workload,
variant, phase, guest_pc, caller, exit_kind, port_or_address) -> count and
handling time.

Columns
-------
accelerator      ``kvm`` (exits measured with kvm:kvm_exit/kvm_entry on the host) or
                 ``tcg-modelled`` (instructions that *would* exit under Intel VMX with
                 KVM's defaults, counted by a QEMU TCG plugin; TCG has no VM exits).
workload, variant  what ran (e.g. ``bonnie``, ``baseline``).
phase            ``boot``, ``benchmark`` or a named window.
guest_pc         guest virtual address of the exiting instruction (uint64; CSV and tables
                 print it as ``0x%016x``).
function, offset guest function containing guest_pc and the offset in it (from the guest
                 System.map); ``""`` / empty where the pc is in no known function.
caller           calling function, ``""`` where unknown (KVM tracepoints do not see the
                 guest stack, so KVM rows have no caller).
exit_kind        one of :data:`EXIT_KINDS`.
port_or_address  I/O port (pio_*), guest-physical address (mmio_*), MSR index (msr_*),
                 hypercall number (hypercall), interrupt vector (interrupt); empty where
                 unknown or not applicable.
count            number of exits (int >= 0).
handling_ns      total time spent handling those exits, in ns: for KVM the sum over the
                 exits of (next kvm_entry - kvm_exit) on the same vCPU thread, over the
                 exits whose entry was recorded (an exit with no entry is counted in
                 ``count`` but adds no time; the trace summary reports how many).  Always
                 empty (NaN) for ``tcg-modelled``.
count_share      count / (sum of count over the rows of the same accelerator, workload,
                 variant and phase).
time_share       handling_ns / (sum of handling_ns over the rows of that group where it is
                 known); empty where handling_ns is empty.

Both shares are relative to the whole group as it was when the frame was made
(:func:`frame` / :func:`with_shares`), so a filtered subset keeps "% of total".
Rendered as a table (Markdown, LaTeX) by :mod:`guestio.exits.exit_tables`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from guestio.util import write_text_atomic

COLUMNS = ["accelerator", "workload", "variant", "phase", "guest_pc", "function", "offset", "caller",
           "exit_kind", "port_or_address", "count", "handling_ns", "count_share", "time_share"]
ACCELERATORS = ("kvm", "tcg-modelled")
EXIT_KINDS = ("pio_in", "pio_out", "mmio_read", "mmio_write", "hlt", "cpuid", "msr_read", "msr_write",
              "hypercall", "interrupt", "other")
GROUP = ("accelerator", "workload", "variant", "phase")
SITE = ("guest_pc", "function", "offset", "exit_kind")
SITE_WITH_CALLER = SITE + ("caller",)

_STR_COLS = ["accelerator", "workload", "variant", "phase", "function", "caller", "exit_kind"]
_U64_MAX = (1 << 64) - 1


def empty_frame() -> pd.DataFrame:
    return _coerce(pd.DataFrame({c: [] for c in COLUMNS}))


def _to_uint64(v) -> int:
    if isinstance(v, str):
        v = int(v, 0)
    return int(v)


def _coerce(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    for c in _STR_COLS:
        df[c] = df[c].astype(object).where(df[c].notna(), "").astype(str)
    pcs = []
    for v in df["guest_pc"]:
        try:
            pc = _to_uint64(v)
        except (TypeError, ValueError):
            raise ValueError(f"exits table: column 'guest_pc': not an address: {v!r}") from None
        if not 0 <= pc <= _U64_MAX:
            raise ValueError(f"exits table: column 'guest_pc': must be a 64-bit address (value {pc:#x})")
        pcs.append(pc)
    df["guest_pc"] = pd.Series(pcs, index=df.index, dtype="uint64")
    for c in ("offset", "port_or_address"):
        vals = [None if (v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA or v == "")
                else (int(v, 0) if isinstance(v, str) else int(v)) for v in df[c]]
        df[c] = pd.array(vals, dtype="Int64")
    df["count"] = df["count"].astype("int64")
    for c in ("handling_ns", "count_share", "time_share"):
        df[c] = pd.to_numeric(df[c], errors="raise").astype("float64")
    return df[COLUMNS]


def with_shares(df: pd.DataFrame) -> pd.DataFrame:
    """Recompute count_share and time_share within each (accelerator, workload, variant, phase)."""
    df = df.copy()
    if df.empty:
        df["count_share"] = pd.Series(dtype="float64")
        df["time_share"] = pd.Series(dtype="float64")
        return df
    g = df.groupby(list(GROUP), sort=False, dropna=False)
    total_count = g["count"].transform("sum").astype("float64")
    total_time = g["handling_ns"].transform(lambda s: s.sum(min_count=1))
    df["count_share"] = np.where(total_count > 0, df["count"] / total_count.where(total_count > 0, 1.0), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        ts = df["handling_ns"] / total_time
    df["time_share"] = ts.where(df["handling_ns"].notna() & (total_time > 0))
    return df


def frame(rows: Iterable[Mapping] | pd.DataFrame) -> pd.DataFrame:
    """A validated exits table from rows (dicts with the columns; shares are computed here).

    Missing optional values: function/caller -> "", offset/port_or_address -> empty,
    handling_ns -> NaN.  Rows with the same group and site are *not* merged.
    """
    df = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if df.empty and not len(df.columns):
        return empty_frame()
    for c, default in (("function", ""), ("caller", ""), ("offset", None), ("port_or_address", None),
                       ("handling_ns", math.nan), ("count_share", math.nan), ("time_share", math.nan)):
        if c not in df.columns:
            df[c] = default
    _check_columns(df)
    df = _coerce(df)
    df = with_shares(df)
    df = _coerce(df)
    validate(df)
    return df


def _check_columns(df: pd.DataFrame) -> None:
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"exits table: missing column(s): {', '.join(missing)}")
    extra = [c for c in df.columns if c not in COLUMNS]
    if extra:
        raise ValueError(f"exits table: unknown column(s): {', '.join(extra)}")


def validate(df: pd.DataFrame) -> None:
    """Raise ValueError naming the first bad column and value."""

    def bad(col: str, what: str, rows=None):
        where = ""
        if rows is not None and len(rows):
            where = f" (row {rows[0]!r}, value {df.loc[rows[0], col]!r})"
        raise ValueError(f"exits table: column '{col}': {what}{where}")

    _check_columns(df)
    for c in _STR_COLS:
        not_str = [i for i, v in df[c].items() if not isinstance(v, str)]
        if not_str:
            bad(c, "must be text", not_str)
    acc = [i for i, v in df["accelerator"].items() if v not in ACCELERATORS]
    if acc:
        bad("accelerator", f"must be one of {', '.join(ACCELERATORS)}", acc)
    kinds = [i for i, v in df["exit_kind"].items() if v not in EXIT_KINDS]
    if kinds:
        bad("exit_kind", f"must be one of {', '.join(EXIT_KINDS)}", kinds)
    for c in ("workload", "variant", "phase"):
        empty = [i for i, v in df[c].items() if v == ""]
        if empty:
            bad(c, "must not be empty", empty)
    try:
        pcs = [int(v) for v in df["guest_pc"]]
    except (TypeError, ValueError):
        bad("guest_pc", "must be an integer")
    outside = [i for i, v in zip(df.index, pcs) if not 0 <= v <= _U64_MAX]
    if outside:
        bad("guest_pc", "must be a 64-bit address", outside)
    for c in ("offset", "port_or_address"):
        vals = df[c]
        neg = [i for i, v in vals.items() if v is not pd.NA and not pd.isna(v) and int(v) < 0]
        if neg:
            bad(c, "must be >= 0 or empty", neg)
    cnt = df["count"]
    if not pd.api.types.is_integer_dtype(cnt):
        bad("count", f"must be integers (dtype {cnt.dtype})")
    neg = [i for i, v in cnt.items() if v < 0]
    if neg:
        bad("count", "must be >= 0", neg)
    h = df["handling_ns"].astype("float64")
    tcg_time = [i for i in df.index[(df["accelerator"] == "tcg-modelled") & h.notna()]]
    if tcg_time:
        bad("handling_ns", "must be empty for tcg-modelled rows (TCG has no VM exits to time)", tcg_time)
    neg = [i for i in df.index[h.notna() & ~(h >= 0)]]
    if neg:
        bad("handling_ns", "must be >= 0 or empty", neg)
    for c in ("count_share", "time_share"):
        s = df[c].astype("float64")
        out = [i for i in df.index[s.notna() & ~((s >= 0) & (s <= 1 + 1e-9))]]
        if out:
            bad(c, "must be a fraction in [0, 1]", out)
    ts = df["time_share"].astype("float64")
    orphan = [i for i in df.index[ts.notna() & h.isna()]]
    if orphan:
        bad("time_share", "must be empty where handling_ns is empty", orphan)
    if len(df):
        sums = df.groupby(list(GROUP), dropna=False)[["count_share", "time_share"]].sum(min_count=1)
        for c in ("count_share", "time_share"):
            over = sums.index[sums[c].notna() & (sums[c] > 1 + 1e-6)]
            if len(over):
                raise ValueError(f"exits table: column '{c}': shares of group {over[0]!r} sum to "
                                 f"{sums.loc[over[0], c]:.6f} > 1")


# ---- ranking ---------------------------------------------------------------------------------

def _join_addresses(vals) -> str:
    xs = sorted({int(v) for v in vals if not pd.isna(v)})
    return ",".join(f"0x{x:x}" for x in xs)


def rank(df: pd.DataFrame, by: str = "count", n: int | None = 5, group: Sequence[str] = GROUP,
         site: Sequence[str] = SITE) -> pd.DataFrame:
    """Top ``n`` exit sites per group, ranked by ``by`` ('count' or 'handling_ns').

    Rows are first merged per site (default: guest_pc, function, offset,
    exit_kind; use :data:`SITE_WITH_CALLER` for Table 3): counts, handling
    times and shares are summed (shares stay relative to the whole group);
    ``port_or_address`` is kept where the site used one port/address and
    ``ports`` lists them all.  Ties are broken by the other measure, then by
    guest_pc.  ``rank`` numbers the sites 1..n within each group.
    """
    if by not in ("count", "handling_ns"):
        raise ValueError(f"rank: by must be 'count' or 'handling_ns', not {by!r}")
    group, site = list(group), list(site)
    for c in group + site:
        if c not in df.columns:
            raise ValueError(f"rank: unknown column {c!r}")
    if by == "handling_ns" and (df["accelerator"] == "tcg-modelled").any():
        raise ValueError("rank: tcg-modelled exits have no handling time; rank them by count")
    keys = group + [c for c in site if c not in group]
    if df.empty:
        out = pd.DataFrame(columns=keys + ["count", "handling_ns", "count_share", "time_share",
                                           "port_or_address", "ports", "rank"])
        return out
    work = df.copy()
    work["_off"] = work["offset"].astype("Int64").fillna(-1) if "offset" in keys else 0
    gkeys = [("_off" if c == "offset" else c) for c in keys]
    agg = work.groupby(gkeys, sort=False, dropna=False).agg(
        count=("count", "sum"),
        handling_ns=("handling_ns", lambda s: s.sum(min_count=1)),
        count_share=("count_share", "sum"),
        time_share=("time_share", lambda s: s.sum(min_count=1)),
        ports=("port_or_address", _join_addresses),
        n_ports=("port_or_address", lambda s: s.dropna().nunique()),
        first_port=("port_or_address", lambda s: s.dropna().iloc[0] if s.notna().any() else pd.NA),
    ).reset_index()
    if "offset" in keys:
        agg["offset"] = pd.array([None if v < 0 else int(v) for v in agg["_off"]], dtype="Int64")
        agg = agg.drop(columns="_off")
    agg["port_or_address"] = pd.array([p if k == 1 else None for p, k in zip(agg["first_port"], agg["n_ports"])],
                                      dtype="Int64")
    agg = agg.drop(columns=["first_port", "n_ports"])
    other = "handling_ns" if by == "count" else "count"
    agg["_pc"] = [int(v) for v in agg["guest_pc"]] if "guest_pc" in agg else 0
    agg = agg.sort_values(group + [by, other, "_pc"], ascending=[True] * len(group) + [False, False, True],
                          na_position="last", kind="stable")
    agg["rank"] = agg.groupby(group, sort=False).cumcount() + 1
    if n is not None:
        agg = agg[agg["rank"] <= n]
    agg = agg.drop(columns="_pc").reset_index(drop=True)
    if "guest_pc" in agg:
        agg["guest_pc"] = agg["guest_pc"].astype("uint64")
    return agg[keys + ["count", "handling_ns", "count_share", "time_share", "port_or_address", "ports", "rank"]]


def rank_functions(df: pd.DataFrame, n: int | None = 4, group: Sequence[str] = GROUP) -> pd.DataFrame:
    """Top ``n`` exiting functions per group, each with its most frequent caller: the ranking of the
    paper's Table 3 ("the top 4 hot functions; the caller column lists the function that calls the
    hot function most often").  ``count`` and ``count_share`` are the function's, summed over its
    sites and callers, and so are ``handling_ns`` and ``time_share`` where the exits have a handling
    time (KVM); ``caller_count`` is the exits from its most frequent caller."""
    group = list(group)
    columns = group + ["function", "caller", "caller_count", "count", "count_share", "handling_ns", "time_share",
                       "rank"]
    if df.empty:
        return pd.DataFrame(columns=columns)
    by_caller = df.groupby(group + ["function", "caller"], sort=False, dropna=False)["count"].sum().reset_index()
    by_caller = by_caller.sort_values(group + ["function", "count", "caller"],
                                      ascending=[True] * (len(group) + 1) + [False, True], kind="stable")
    top_caller = by_caller.groupby(group + ["function"], sort=False).head(1).rename(
        columns={"count": "caller_count"})
    totals = df.groupby(group + ["function"], sort=False, dropna=False).agg(
        count=("count", "sum"), count_share=("count_share", "sum"),
        handling_ns=("handling_ns", lambda s: s.sum(min_count=1)),
        time_share=("time_share", lambda s: s.sum(min_count=1))).reset_index()
    out = totals.merge(top_caller, on=group + ["function"], how="left")
    out = out.sort_values(group + ["count", "function"], ascending=[True] * len(group) + [False, True], kind="stable")
    out["rank"] = out.groupby(group, sort=False).cumcount() + 1
    if n is not None:
        out = out[out["rank"] <= n]
    return out[columns].reset_index(drop=True)


# ---- files -----------------------------------------------------------------------------------

def write_csv(df: pd.DataFrame, path: Path | str) -> None:
    """Validate and write atomically; guest_pc as 0x%016x, port_or_address as 0x%x."""
    validate(df)
    out = df[COLUMNS].copy()
    out["guest_pc"] = [f"0x{int(v):016x}" for v in out["guest_pc"]]
    out["port_or_address"] = ["" if pd.isna(v) else f"0x{int(v):x}" for v in out["port_or_address"]]
    out["offset"] = ["" if pd.isna(v) else str(int(v)) for v in out["offset"]]
    for c in ("handling_ns", "count_share", "time_share"):
        out[c] = ["" if pd.isna(v) else repr(float(v)) for v in out[c]]
    write_text_atomic(Path(path), out.to_csv(index=False, lineterminator="\n"))


def read_csv(path: Path | str) -> pd.DataFrame:
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in COLUMNS if c not in raw.columns]
    if missing:
        raise ValueError(f"{path}: not a guestio exits table (missing columns: {', '.join(missing)})")
    raw = raw[COLUMNS].copy()
    raw["count"] = raw["count"].astype("int64")
    for c in ("handling_ns", "count_share", "time_share"):
        raw[c] = [math.nan if v == "" else float(v) for v in raw[c]]
    df = _coerce(raw)
    validate(df)
    return df


def _sectors_written(stat_file: Path) -> int:
    # /sys/block/<dev>/stat: field 7 is sectors written (512 bytes each).
    return int(Path(stat_file).read_text().split()[6])


def run_summary(df: pd.DataFrame, guest_results: Path | None,
                instructions: dict[str, int] | None = None) -> dict:
    """Per phase exit totals and the benchmark's exits per MiB written to the data disk.

    The MiB come from the guest's /sys/block/<dev>/stat before and after bonnie++
    (the device level, so file-system metadata and journal writes count too); without
    them (a recording that lacks the guest's files) both MiB figures are None.
    """
    written = None
    if guest_results is not None and (Path(guest_results) / "diskstat-after.txt").is_file():
        guest_results = Path(guest_results)
        written = (_sectors_written(guest_results / "diskstat-after.txt")
                   - _sectors_written(guest_results / "diskstat-before.txt")) * 512 / 2**20
    by_phase = {str(k): int(v) for k, v in df.groupby("phase")["count"].sum().items()}
    pm_timer = df[df["function"] == "acpi_pm_read"].groupby("phase")["count"].sum()
    return {
        "exits_by_phase": by_phase,
        "exits_by_kind_benchmark": {str(k): int(v) for k, v in
                                    df[df["phase"] == "benchmark"].groupby("exit_kind")["count"].sum().items()},
        "acpi_pm_read_by_phase": {str(k): int(v) for k, v in pm_timer.items()},
        "written_mib": round(written, 1) if written is not None else None,
        "exits_per_mib_written": (by_phase.get("benchmark", 0) / written if written else float("nan"))
        if written is not None else None,
        "instructions_by_phase": instructions or {},
    }
