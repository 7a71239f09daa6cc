"""The rows of a comparison: the runs' long-form measurements and their claims quantities, matched."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from guestio.analysis import measurements
from guestio.analysis.stats import significance_mark, welch_t_test
from guestio.report.compare_runs import CLAIMS_QUANTITIES
from guestio.report.compare_stats import Options, centre_ci, ci_z_test, mann_whitney

#: The condition of a measurement; "accelerator" joins it only where a run holds several (see key_columns).
CONDITION = [c for c in measurements.CONDITION_COLUMNS if c != "accelerator"]


# --- the measurements ------------------------------------------------------------------------------

def load_measurements(root: Path) -> tuple[pd.DataFrame, list[str]]:
    """Every long-form measurement table under tables/, with a "table" column; and the CSVs
    that are not long-form tables (exit tables, rendered tables), which are not compared."""
    parts, skipped = [], []
    for path in sorted((root / "tables").glob("*.csv")) if (root / "tables").is_dir() else []:
        try:
            df = measurements.read_csv(path)
        except (ValueError, OSError, pd.errors.ParserError):
            skipped.append(path.name)
            continue
        parts.append(df.assign(table=path.stem))
    if not parts:
        return pd.DataFrame(columns=["table", *measurements.COLUMNS]), skipped
    return pd.concat(parts, ignore_index=True), skipped


def _vm_accelerators(df: pd.DataFrame) -> set[str]:
    return {str(a) for a in df["accelerator"].unique()} - {"native"}


def key_columns(a: pd.DataFrame, b: pd.DataFrame) -> list[str]:
    """Rows are matched on table, experiment, condition, metric and unit.  The accelerator is left
    out while each run used one (a KVM run against a TCG run compares the same conditions); a run
    that holds several keeps it in the key, so no two accelerators are pooled."""
    several = len(_vm_accelerators(a)) > 1 or len(_vm_accelerators(b)) > 1
    return ["table", "experiment", *CONDITION, *(["accelerator"] if several else []), "metric", "unit"]


def run_values(df: pd.DataFrame, keys: list[str]) -> dict[tuple, tuple[np.ndarray, str]]:
    """{key: (one value per repetition, in repetition order; the accelerators)}."""
    if df.empty:
        return {}
    df = df.assign(value=pd.to_numeric(df["value"], errors="coerce"))
    df = df[np.isfinite(df["value"].to_numpy(dtype=float))]    # a failed run's missing value is no run
    df = df.astype({k: str for k in keys})
    out = {}
    for key, rows in df.groupby(keys, sort=True, dropna=False):
        per_rep = rows.groupby("repetition", sort=True)["value"].mean()
        out[tuple(key)] = (per_rep.to_numpy(dtype=float), ", ".join(sorted({str(x) for x in rows["accelerator"]})))
    return out


# --- rows ------------------------------------------------------------------------------------------

@dataclass
class Row:
    section: str                  # "claims" or "measurements"
    table: str
    quantity: str                 # metric, or the claim quantity's label
    unit: str = ""
    experiment: str = ""
    condition: dict[str, str] = field(default_factory=dict)
    accelerator_a: str = ""
    accelerator_b: str = ""
    n_a: str = "0"
    n_b: str = "0"
    a: tuple[float, float, float] = (math.nan, math.nan, math.nan)
    b: tuple[float, float, float] = (math.nan, math.nan, math.nan)
    test: str = ""
    p: float = math.nan
    mark: str = ""
    verdict_a: str = ""
    verdict_b: str = ""
    note: str = ""

    @property
    def ratio(self) -> float:
        ca, cb = self.a[0], self.b[0]
        return cb / ca if math.isfinite(ca) and math.isfinite(cb) and ca != 0 else math.nan

    @property
    def change_pct(self) -> float:
        return (self.ratio - 1.0) * 100.0 if math.isfinite(self.ratio) else math.nan

    @property
    def direction(self) -> str:
        """"higher" / "lower" in B where the row is marked significant, else ""."""
        if not self.mark or not math.isfinite(self.ratio) or self.ratio == 1.0:
            return ""
        return "higher" if self.b[0] > self.a[0] else "lower"


def measurement_rows(a: pd.DataFrame, b: pd.DataFrame, opts: Options) -> list[Row]:
    keys = key_columns(a, b)
    va, vb = run_values(a, keys), run_values(b, keys)
    test = "mann-whitney" if opts.robust else "welch"
    rows = []
    for key in sorted(set(va) | set(vb)):
        k = dict(zip(keys, key))
        xa, acc_a = va.get(key, (np.array([]), ""))
        xb, acc_b = vb.get(key, (np.array([]), ""))
        p = math.nan
        if xa.size and xb.size:
            p = mann_whitney(xa, xb) if opts.robust else welch_t_test(xa, xb)[2]
        note = "only in A" if not xb.size else "only in B" if not xa.size else ""
        if not note and (xa.size < 2 or xb.size < 2):
            note = "fewer than 2 runs on a side: no test"
        rows.append(Row("measurements", k["table"], k["metric"], k["unit"], k["experiment"],
                        {c: k[c] for c in CONDITION}, acc_a, acc_b, str(xa.size), str(xb.size),
                        centre_ci(xa, opts), centre_ci(xb, opts), test, p, significance_mark(p, opts.alpha),
                        note=note))
    return rows


def _column(df: pd.DataFrame, name: str, default: str = "") -> pd.Series:
    return df[name].astype(str) if name in df.columns else pd.Series(default, index=df.index, dtype=object)


def _number(df: pd.DataFrame, name: str) -> pd.Series:
    return pd.to_numeric(df[name], errors="coerce") if name in df.columns else pd.Series(math.nan, index=df.index)


_N_IN_NOTE = re.compile(r"n = (\d+) / (\d+)")


def load_claims(root: Path) -> pd.DataFrame | None:
    """The claims quantities, read by column name: ``claim`` (or ``paper_id``), ``quantity`` and
    ``value`` are needed; ``ci_low``, ``ci_high``, ``label``, ``verdict``, ``accelerator`` and
    ``note`` are used where present; other columns are ignored."""
    path = root / CLAIMS_QUANTITIES
    if not path.is_file():
        return None
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "quantity" not in df.columns or "value" not in df.columns or not ({"claim", "paper_id"} & set(df.columns)):
        return None
    claim = _column(df, "claim") if "claim" in df.columns else _column(df, "paper_id")
    out = pd.DataFrame({"claim": claim, "paper_id": _column(df, "paper_id", ""), "quantity": _column(df, "quantity"),
                        "label": _column(df, "label"), "value": _number(df, "value"), "low": _number(df, "ci_low"),
                        "high": _number(df, "ci_high"), "verdict": _column(df, "verdict"),
                        "accelerator": _column(df, "accelerator"), "note": _column(df, "note")})
    return out.drop_duplicates(subset=["claim", "quantity"], keep="first")


def _claim_n(note: str) -> str:
    m = _N_IN_NOTE.search(note or "")
    return f"{m.group(1)}/{m.group(2)}" if m else "-"


def claim_rows(a: pd.DataFrame | None, b: pd.DataFrame | None, opts: Options) -> list[Row]:
    a = a if a is not None else pd.DataFrame(columns=["claim", "quantity"])
    b = b if b is not None else pd.DataFrame(columns=["claim", "quantity"])
    ia = {(r.claim, r.quantity): r for r in a.itertuples(index=False)}
    ib = {(r.claim, r.quantity): r for r in b.itertuples(index=False)}
    rows = []
    for key in sorted(set(ia) | set(ib)):
        ra, rb = ia.get(key), ib.get(key)
        first = ra or rb
        est_a = (ra.value, ra.low, ra.high) if ra is not None else (math.nan,) * 3
        est_b = (rb.value, rb.low, rb.high) if rb is not None else (math.nan,) * 3
        p = ci_z_test(*est_a, *est_b)
        note = "only in A" if rb is None else "only in B" if ra is None else ""
        if not note and math.isnan(p) and all(math.isfinite(x) for x in (est_a[0], est_b[0])):
            note = "no CI on a side: no test"
        rows.append(Row("claims", first.paper_id or first.claim, first.label or first.quantity,
                        experiment=first.claim, condition={"quantity": first.quantity},
                        accelerator_a=ra.accelerator if ra is not None else "",
                        accelerator_b=rb.accelerator if rb is not None else "",
                        n_a=_claim_n(ra.note) if ra is not None else "0", n_b=_claim_n(rb.note) if rb is not None else "0",
                        a=est_a, b=est_b, test="z from CIs", p=p, mark=significance_mark(p, opts.alpha),
                        verdict_a=ra.verdict if ra is not None else "", verdict_b=rb.verdict if rb is not None else "",
                        note=note))
    return rows


def geometric_mean_ratio(rows: Iterable[Row]) -> tuple[float, int]:
    """(geometric mean of B/A, how many rows) over the rows with a positive centre on both sides."""
    logs = [math.log(r.ratio) for r in rows if math.isfinite(r.ratio) and r.ratio > 0 and r.a[0] > 0]
    return (math.exp(sum(logs) / len(logs)) if logs else math.nan), len(logs)
