"""Two guestio runs side by side, the way mmtests' compare-mmtests.pl lays out two kernels.

    .venv/bin/python -m guestio.report.compare A B --out DIR [--robust] [--alpha 0.05]

A and B are each a results directory, an unpacked bundle (``guestio-bundle/`` or the directory
it was unpacked in) or a bundle archive (``.tar.gz``).  DIR gets ``compare.md``,
``compare.csv`` (one row per compared quantity), ``compare-provenance.csv`` (what differs in
the runs' provenance and config) and ``compare.html`` (a standalone page with the same content).

Every row holds both runs' centre (mean; median with ``--robust``) with its 95% percentile
bootstrap CI (seeded, as everywhere in guestio) and n, the ratio B/A, a two-sided p-value
(Welch's t-test; Mann-Whitney U with ``--robust``) and mmtests' mark ``*`` where p < alpha.
n counts independent runs (repetitions), never samples inside one run: the values of one
repetition are averaged first.  Below the header one line gives the geometric mean of B/A.

Claims quantities (``claims-quantities.csv``) are ratios with a CI and no samples; their test
is a z-test on the two CIs (on the log scale where the values are positive), labelled as such.
See docs/compare.md.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import json
import math
import re
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import yaml
from scipy import stats as _stats

from guestio.analysis import measurements
from guestio.analysis.stats import (DEFAULT_CONFIDENCE, SIGNIFICANCE_LEVEL, bootstrap_mean_ci, significance_mark,
                                    welch_t_test)
from guestio.util import write_text_atomic

DEFAULT_SEED = 2010
DEFAULT_N_RESAMPLES = 10_000
BUNDLE_ROOT = "guestio-bundle"
CLAIMS_QUANTITIES = "claims-quantities.csv"
#: The condition of a measurement; "accelerator" joins it only where a run holds several (see key_columns).
CONDITION = [c for c in measurements.CONDITION_COLUMNS if c != "accelerator"]
CSV_COLUMNS = ["section", "table", "experiment", *CONDITION, "quantity", "unit", "accelerator_a", "accelerator_b",
               "n_a", "centre_a", "ci_low_a", "ci_high_a", "n_b", "centre_b", "ci_low_b", "ci_high_b",
               "ratio", "change_pct", "test", "p_value", "mark", "verdict_a", "verdict_b", "note"]
#: Provenance keys that differ between any two checkouts or builds without saying anything about
#: the result: where a file lay, how long a build took, how many jobs built it.
VOLATILE_KEYS = {"binary", "probe_kernel", "probe_qemu", "tarball", "dsc", "orig_tarball", "debian_tarball",
                 "file", "build_seconds", "build_cpu_seconds", "jobs", "recorded_from", "runs", "firmware_dir"}
SECTION_TITLES = {"accelerator": "accelerator", "host": "host", "kernel": "kernel builds", "qemu": "QEMU builds",
                  "image": "guest image", "guestio": "guestio checkout", "config": "config", "tables": "tables"}


# --- where a run's files are -------------------------------------------------------------------------

@dataclass
class Run:
    given: str           # as the user named it
    root: Path           # the results directory (inside a bundle: files/<results_dir>)
    bundle: Path | None  # the bundle's root, when it is one


def _bundle_results(bundle: Path) -> Path:
    """The results directory inside an unpacked bundle: files/<results_dir of config/used.yaml>."""
    used = bundle / "config" / "used.yaml"
    name = "results"
    if used.is_file():
        name = str((yaml.safe_load(used.read_text(encoding="utf-8")) or {}).get("results_dir") or name)
    candidate = bundle / "files" / name.lstrip("/")
    if candidate.is_dir():
        return candidate
    # A results dir named otherwise: the first directory under files/ that holds tables or claims.
    for d in sorted(p for p in (bundle / "files").rglob("*") if p.is_dir()):
        if (d / "tables").is_dir() or (d / CLAIMS_QUANTITIES).is_file():
            return d
    return candidate


def locate(path: str | Path, scratch: contextlib.ExitStack) -> Run:
    """A run from a results dir, an unpacked bundle or a bundle archive (unpacked into a temporary
    directory that ``scratch`` removes)."""
    p = Path(path)
    if p.is_file() and tarfile.is_tarfile(p):
        tmp = Path(scratch.enter_context(tempfile.TemporaryDirectory(prefix="guestio-compare-")))
        with tarfile.open(p) as t:
            t.extractall(tmp, filter="data")
        p = tmp
    if not p.is_dir():
        raise SystemExit(f"compare: {path}: not a results directory, an unpacked bundle or a bundle archive; "
                         "give a results dir (e.g. results) or a guestio-bundle")
    if (p / BUNDLE_ROOT / "files").is_dir():
        p = p / BUNDLE_ROOT
    if (p / "files").is_dir() and ((p / "manifest.sha256").is_file() or (p / "config" / "used.yaml").is_file()):
        return Run(str(path), _bundle_results(p), p)
    return Run(str(path), p, None)


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# --- provenance: what each run was made of, flattened to dotted keys ----------------------------------

def _item_name(item: Mapping) -> str | None:
    """A patch or fragment record's name that does not depend on the checkout's location."""
    name = item.get("name") or item.get("file") or item.get("package")
    if not name:
        return None
    name = str(name)
    return name.split("layers/", 1)[1] if "layers/" in name else Path(name).name


def flatten(value: Any, prefix: str, out: dict[str, str]) -> None:
    """Dotted keys with text values; lists of records (patches, fragments, debs) keyed by name."""
    if isinstance(value, Mapping):
        for k in sorted(value, key=str):
            if str(k) not in VOLATILE_KEYS:
                flatten(value[k], f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(value, list) and value and all(isinstance(v, Mapping) and _item_name(v) for v in value):
        for item in value:
            rest = {k: v for k, v in item.items() if k not in ("name", "file", "package")}
            key = f"{prefix}[{_item_name(item)}]"
            if set(rest) == {"sha256"}:
                out[key] = str(rest["sha256"])
            else:
                flatten(rest, key, out)
    elif isinstance(value, list):
        out[prefix] = ", ".join(str(v) for v in value) if value else "(none)"
    else:
        out[prefix] = json.dumps(value) if isinstance(value, bool) or value is None else str(value)


def _put(sections: dict[str, dict[str, str]], section: str, value: Any, prefix: str = "") -> None:
    """Adds a source to a section; a key already there (from a more direct source) is kept."""
    if value is None:
        return
    flat: dict[str, str] = {}
    flatten(value, prefix, flat)
    target = sections.setdefault(section, {})
    for k, v in flat.items():
        target.setdefault(k, v)


def provenance(run: Run) -> dict[str, dict[str, str]]:
    """{section: {key: value}} from the files a results dir may hold; a missing file leaves its
    keys out (a bundle of a KVM run, a results dir from a partial run).  The host's own records
    (host/, kernels/, qemu/) come first; the tables' provenance fills in what they lack."""
    root = run.root
    sections: dict[str, dict[str, str]] = {}
    _put(sections, "accelerator", _read_json(root / "host" / "accelerator.json"))
    host = _read_json(root / "host" / "host.json")
    if host is not None:
        _put(sections, "host", {("host_qemu" if k == "qemu" else k): v for k, v in host.items()})
    for build in sorted(root.glob("kernels/*/build.json")):
        _put(sections, "kernel", _read_json(build), build.parent.name)
    for build in sorted(root.glob("qemu/*/build.json")):
        _put(sections, "qemu", _read_json(build), build.parent.name)
    tables = sorted((root / "tables").glob("*.provenance.json")) if (root / "tables").is_dir() else []
    for path in tables:
        prov = _read_json(path) or {}
        name = path.name[: -len(".provenance.json")]
        _put(sections, "accelerator", prov.get("accelerator"))
        _put(sections, "host", {k: prov[k] for k in ("host", "host_qemu", "debian_packages", "python",
                                                      "python_packages") if k in prov})
        for variant, record in sorted((prov.get("kernels") or {}).items()):
            _put(sections, "kernel", record, variant)
        qemus = prov.get("qemus") or ({prov["qemu"].get("variant", "default"): prov["qemu"]}
                                      if isinstance(prov.get("qemu"), Mapping) else {})
        for variant, record in sorted(qemus.items()):
            _put(sections, "qemu", record, variant)
        _put(sections, "image", prov.get("image"))
        _put(sections, "guestio", prov.get("guestio"))
        _put(sections, "config", prov.get("config"))
        _put(sections, "tables", {name: {"run_count": len(prov.get("runs") or [])}})
    if "config" not in sections and run.bundle is not None:
        used = run.bundle / "config" / "used.yaml"
        if used.is_file():
            _put(sections, "config", yaml.safe_load(used.read_text(encoding="utf-8")))
    return sections


@dataclass
class ProvenanceDiff:
    rows: list[tuple[str, str, str, str]]       # (section, key, value in A, value in B)
    missing: list[tuple[str, str]]              # (section, "A" / "B"): a section one run does not record
    same: int                                   # keys both record with the same value


NOT_RECORDED = "(not recorded)"


def diff_provenance(a: Mapping[str, Mapping[str, str]], b: Mapping[str, Mapping[str, str]]) -> ProvenanceDiff:
    rows, missing, same = [], [], 0
    for section in sorted(set(a) | set(b), key=lambda s: (list(SECTION_TITLES).index(s)
                                                          if s in SECTION_TITLES else 99, s)):
        sa, sb = a.get(section), b.get(section)
        if not sa and not sb:
            continue
        if not sa or not sb:
            missing.append((section, "A" if not sa else "B"))
            continue
        for key in sorted(set(sa) | set(sb)):
            va, vb = sa.get(key, NOT_RECORDED), sb.get(key, NOT_RECORDED)
            if va == vb:
                same += 1
            else:
                rows.append((section, key, va, vb))
    return ProvenanceDiff(rows, missing, same)


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


# --- statistics of one row -------------------------------------------------------------------------

@dataclass
class Options:
    robust: bool = False
    alpha: float = SIGNIFICANCE_LEVEL
    seed: int = DEFAULT_SEED
    n_resamples: int = DEFAULT_N_RESAMPLES


def median_ci(values: np.ndarray, seed: int, n_resamples: int) -> tuple[float, float, float]:
    """(median, low, high): the percentile-bootstrap CI of the median, drawn as
    guestio.analysis.stats draws the mean's (one generator seeded with ``seed``)."""
    median = float(np.median(values))
    if values.size < 2:
        return median, math.nan, math.nan
    result = _stats.bootstrap((values,), np.median, n_resamples=n_resamples, vectorized=True, axis=-1,
                              confidence_level=DEFAULT_CONFIDENCE, method="percentile",
                              rng=np.random.default_rng(seed))
    return median, float(result.confidence_interval.low), float(result.confidence_interval.high)


def mann_whitney(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p of the Mann-Whitney U test (exact for small samples without ties);
    nan with fewer than two values a side, as Welch's test."""
    if a.size < 2 or b.size < 2:
        return math.nan
    if np.all(a == a[0]) and np.all(b == a[0]):
        return 1.0      # one value everywhere: nothing to rank
    return float(_stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)


def centre_ci(values: np.ndarray, opts: Options) -> tuple[float, float, float]:
    if values.size == 0:
        return math.nan, math.nan, math.nan
    if opts.robust:
        return median_ci(values, opts.seed, opts.n_resamples)
    return bootstrap_mean_ci(values, opts.seed, opts.n_resamples)


def ci_z_test(va: float, la: float, ha: float, vb: float, lb: float, hb: float) -> float:
    """Two-sided p that two estimates with 95% CIs are equal, the standard error read from each
    CI's width (on the log scale where everything is positive, as a ratio's CI is skewed)."""
    values = [va, la, ha, vb, lb, hb]
    if not all(math.isfinite(v) for v in values):
        return math.nan
    if all(v > 0 for v in values):
        va, la, ha, vb, lb, hb = (math.log(v) for v in values)
    z975 = float(_stats.norm.ppf(0.5 + DEFAULT_CONFIDENCE / 2))
    se = math.hypot((ha - la) / (2 * z975), (hb - lb) / (2 * z975))
    if se == 0.0:
        return 1.0 if va == vb else 0.0    # both exact (counts): equal or not
    return float(2 * _stats.norm.sf(abs(vb - va) / se))


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


# --- the comparison --------------------------------------------------------------------------------

@dataclass
class Comparison:
    a: Run
    b: Run
    opts: Options
    provenance: ProvenanceDiff
    claims: list[Row]
    measurements: list[Row]
    skipped: dict[str, list[str]]     # "A"/"B" -> files not compared
    notes: list[str]

    @property
    def rows(self) -> list[Row]:
        return [*self.claims, *self.measurements]


def compare(a: Run, b: Run, opts: Options) -> Comparison:
    ma, skipped_a = load_measurements(a.root)
    mb, skipped_b = load_measurements(b.root)
    ca, cb = load_claims(a.root), load_claims(b.root)
    notes = []
    for side, run, claims in (("A", a, ca), ("B", b, cb)):
        if claims is None:
            notes.append(f"{side} ({run.given}) has no readable {CLAIMS_QUANTITIES}: its claims are not compared "
                         "(make it with `snakemake claims`)")
    for side, run, df in (("A", a, ma), ("B", b, mb)):
        if df.empty:
            notes.append(f"{side} ({run.given}) has no long-form measurement table under tables/")
    return Comparison(a, b, opts, diff_provenance(provenance(a), provenance(b)),
                      claim_rows(ca, cb, opts), measurement_rows(ma, mb, opts),
                      {"A": skipped_a, "B": skipped_b}, notes)


# --- output ----------------------------------------------------------------------------------------

def _num(v: float) -> str:
    if not math.isfinite(v):
        return "-"
    if abs(v) >= 1000:
        return f"{v:.0f}"
    return f"{v:.4g}"


def _estimate(est: tuple[float, float, float], n: str) -> str:
    centre, low, high = est
    if not math.isfinite(centre):
        return "-"
    ci = f" [{_num(low)}, {_num(high)}]" if math.isfinite(low) and math.isfinite(high) else ""
    return f"{_num(centre)}{ci} (n={n})"


def _ratio_text(r: Row) -> str:
    return f"{r.ratio:.3f} ({r.change_pct:+.1f}%)" if math.isfinite(r.ratio) else "-"


def _ratio(v: float) -> str:
    return f"{v:.4f}" if math.isfinite(v) else "-"


def _p_text(p: float) -> str:
    return f"{p:.3g}" if math.isfinite(p) else "-"


def condition_text(r: Row) -> str:
    c = r.condition
    if r.section == "claims":
        return f"{r.table}: {c.get('quantity', '')}"
    head = " ".join(c[k] for k in ("target", "variant", "disk") if c.get(k, "-") != "-")
    rest = " ".join(f"{k}={c[k]}" for k in CONDITION if k not in ("target", "variant", "disk")
                    and c.get(k, "-") != "-")
    return " ".join(x for x in (head, rest) if x)


def _accelerators(r: Row) -> str:
    if r.accelerator_a == r.accelerator_b or not (r.accelerator_a and r.accelerator_b):
        return r.accelerator_a or r.accelerator_b or "-"
    return f"{r.accelerator_a} / {r.accelerator_b}"


def table_cells(r: Row) -> list[str]:
    what = r.quantity + (f" ({r.unit})" if r.unit else "")
    verdict = ""
    if r.verdict_a or r.verdict_b:
        verdict = r.verdict_a if r.verdict_a == r.verdict_b else f"{r.verdict_a or '-'} / {r.verdict_b or '-'}"
    return [condition_text(r), what, _accelerators(r), _estimate(r.a, r.n_a), _estimate(r.b, r.n_b),
            _ratio_text(r), _p_text(r.p), r.mark, "; ".join(x for x in (verdict, r.note) if x)]


HEADERS = ["condition", "quantity", "accelerator A / B", "A {centre} [95% CI] (n)", "B {centre} [95% CI] (n)",
           "B/A", "p", "sig", "note"]


def headers(opts: Options, section: str = "measurements") -> list[str]:
    centre = "value" if section == "claims" else "median" if opts.robust else "mean"
    return [h.format(centre=centre) for h in HEADERS]


def groups(c: Comparison) -> list[tuple[str, list[Row]]]:
    """The tables of the page: the claims first, then one per measurement table and experiment."""
    out = []
    if c.claims:
        out.append(("Claims quantities (ratios as the claims table measures them)", c.claims))
    by: dict[tuple[str, str], list[Row]] = {}
    for r in c.measurements:
        by.setdefault((r.table, r.experiment), []).append(r)
    for (table, experiment), rows in sorted(by.items()):
        title = f"tables/{table}.csv" + (f", experiment {experiment}" if experiment != table else "")
        out.append((title, rows))
    return out


def method_text(c: Comparison) -> str:
    o = c.opts
    if o.robust:
        how = ("median of the runs, 95% percentile-bootstrap CI of the median, two-sided Mann-Whitney U test "
               "(it cannot reach p < 0.05 with 3 runs a side: its smallest two-sided p is then 0.1)")
    else:
        how = "mean of the runs, 95% percentile-bootstrap CI of the mean, Welch's two-sided t-test"
    return (f"{how}; bootstrap seed {o.seed}, {o.n_resamples} resamples. `*`: p < {o.alpha:g} "
            "(one test per row, not corrected for the number of rows: at this level about one row in "
            f"{round(1 / o.alpha)} is marked by chance alone). n counts runs (repetitions); a run's "
            "values are averaged first. Claims quantities have a CI and no samples: their p is a z-test "
            "on the two CIs (log scale for positive ratios).")


def summary_text(c: Comparison) -> str:
    gm, n = geometric_mean_ratio(c.measurements)
    gm_c, n_c = geometric_mean_ratio(c.claims)
    marked = [r for r in c.rows if r.mark]
    higher = sum(r.direction == "higher" for r in marked)
    text = (f"Geometric mean of B/A over {n} measurement rows: {_ratio(gm)}"
            + (f"; over {n_c} claims quantities: {_ratio(gm_c)}" if n_c else "")
            + f". {len(marked)} of {len(c.rows)} rows marked significant ({higher} higher in B, "
            f"{len(marked) - higher} lower).")
    return text


def provenance_rows(d: ProvenanceDiff) -> list[tuple[str, str, str, str]]:
    rows = [(SECTION_TITLES.get(s, s), k, va, vb) for s, k, va, vb in d.rows]
    rows += [(SECTION_TITLES.get(s, s), "(whole section)", NOT_RECORDED if side == "A" else "recorded",
              NOT_RECORDED if side == "B" else "recorded") for s, side in d.missing]
    return rows


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(c: Comparison) -> str:
    lines = [f"# Comparison: A = {c.a.given}, B = {c.b.given}", "", method_text(c), "", summary_text(c), "",
             "## What differs between the runs", ""]
    prov = provenance_rows(c.provenance)
    if prov:
        lines += ["| section | key | A | B |", "|---|---|---|---|"]
        lines += ["| " + " | ".join(_md_cell(_short(x)) for x in row) + " |" for row in prov]
    else:
        lines.append("Nothing: every provenance and config key both runs record is the same.")
    lines += ["", f"{c.provenance.same} keys are the same in both.", ""]
    for title, rows in groups(c):
        lines += [f"## {title}", "", "| " + " | ".join(headers(c.opts, rows[0].section)) + " |",
                  "|" + "---|" * len(HEADERS)]
        lines += ["| " + " | ".join(_md_cell(x) for x in table_cells(r)) + " |" for r in rows]
        lines.append("")
    extra = list(c.notes) + [f"{side}: not a long-form measurement table, not compared: {', '.join(files)}"
                             for side, files in sorted(c.skipped.items()) if files]
    if extra:
        lines += ["## Not compared", ""] + [f"- {x}" for x in extra] + [""]
    return "\n".join(lines).rstrip() + "\n"


def frame(c: Comparison) -> pd.DataFrame:
    def record(r: Row) -> dict:
        return {"section": r.section, "table": r.table, "experiment": r.experiment,
                **{k: r.condition.get(k, "-") for k in CONDITION}, "quantity": r.quantity, "unit": r.unit,
                "accelerator_a": r.accelerator_a, "accelerator_b": r.accelerator_b, "n_a": r.n_a,
                "centre_a": r.a[0], "ci_low_a": r.a[1], "ci_high_a": r.a[2], "n_b": r.n_b, "centre_b": r.b[0],
                "ci_low_b": r.b[1], "ci_high_b": r.b[2], "ratio": r.ratio, "change_pct": r.change_pct,
                "test": r.test, "p_value": r.p, "mark": r.mark, "verdict_a": r.verdict_a,
                "verdict_b": r.verdict_b, "note": r.note}
    return pd.DataFrame([record(r) for r in c.rows], columns=CSV_COLUMNS)


def provenance_frame(c: Comparison) -> pd.DataFrame:
    return pd.DataFrame(provenance_rows(c.provenance), columns=["section", "key", "a", "b"])


_CSS = """body{font-family:sans-serif;margin:2em;max-width:110em}
table{border-collapse:collapse;margin-bottom:1.5em}th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#eee}tr.sig td{background:#fff3cd}td.num{text-align:right;font-variant-numeric:tabular-nums}
p.summary{font-weight:bold}"""


def _html_table(head: Sequence[str], rows: Iterable[tuple[Sequence[str], str]], numeric: set[int] = frozenset()) -> list[str]:
    out = ["<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for cells, css in rows:
        tds = "".join(("<td class=\"num\">" if i in numeric else "<td>") + html.escape(str(x)) + "</td>"
                      for i, x in enumerate(cells))
        out.append((f'<tr class="{css}">' if css else "<tr>") + tds + "</tr>")
    out.append("</table>")
    return out


def html_page(c: Comparison) -> str:
    title = f"Comparison: A = {c.a.given}, B = {c.b.given}"
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>{html.escape(title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
             f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(method_text(c))}</p>",
             f'<p class="summary">{html.escape(summary_text(c))}</p>', "<h2>What differs between the runs</h2>"]
    prov = provenance_rows(c.provenance)
    if prov:
        parts += _html_table(["section", "key", "A", "B"], [([s, k, _short(a, 300), _short(b, 300)], "")
                                                            for s, k, a, b in prov])
    else:
        parts.append("<p>Nothing: every provenance and config key both runs record is the same.</p>")
    parts.append(f"<p>{c.provenance.same} keys are the same in both.</p>")
    for title_, rows in groups(c):
        parts.append(f"<h2>{html.escape(title_)}</h2>")
        parts += _html_table(headers(c.opts, rows[0].section), [(table_cells(r), "sig" if r.mark else "") for r in rows],
                             numeric={3, 4, 5, 6})
    extra = list(c.notes) + [f"{side}: not a long-form measurement table, not compared: {', '.join(files)}"
                             for side, files in sorted(c.skipped.items()) if files]
    if extra:
        parts += ["<h2>Not compared</h2>", "<ul>"] + [f"<li>{html.escape(x)}</li>" for x in extra] + ["</ul>"]
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"


OUTPUTS = {"markdown": "compare.md", "csv": "compare.csv", "provenance": "compare-provenance.csv",
           "html": "compare.html"}


def write(c: Comparison, out: str | Path) -> dict[str, Path]:
    out = Path(out)
    paths = {k: out / v for k, v in OUTPUTS.items()}
    write_text_atomic(paths["csv"], frame(c).to_csv(index=False, lineterminator="\n"))
    write_text_atomic(paths["provenance"], provenance_frame(c).to_csv(index=False, lineterminator="\n"))
    write_text_atomic(paths["html"], html_page(c))
    write_text_atomic(paths["markdown"], markdown(c))
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m guestio.report.compare", description=__doc__.split("\n\n")[0])
    ap.add_argument("a", help="run A (the baseline): a results dir, an unpacked bundle or a bundle .tar.gz")
    ap.add_argument("b", help="run B (compared with A): the same kinds")
    ap.add_argument("--out", required=True, help="directory for compare.{md,csv,html} and compare-provenance.csv")
    ap.add_argument("--robust", action="store_true", help="median and Mann-Whitney U instead of mean and Welch")
    ap.add_argument("--alpha", type=float, default=SIGNIFICANCE_LEVEL, help="significance level of the mark")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED, help="bootstrap seed")
    ap.add_argument("--resamples", type=int, default=DEFAULT_N_RESAMPLES, help="bootstrap resamples")
    args = ap.parse_args(argv)
    if not 0.0 < args.alpha < 1.0:
        ap.error(f"--alpha must be in (0, 1), not {args.alpha}")
    opts = Options(robust=args.robust, alpha=args.alpha, seed=args.seed, n_resamples=args.resamples)
    with contextlib.ExitStack() as scratch:
        c = compare(locate(args.a, scratch), locate(args.b, scratch), opts)
        paths = write(c, args.out)
    print(summary_text(c))
    for p in paths.values():
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
