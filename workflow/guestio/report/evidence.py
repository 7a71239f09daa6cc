"""What exists to judge the claims by (``Evidence``), and the numbers read from it.

* the long-form measurement tables (``MeasurementTables``), the rows a selector picks
  (``match_rows``) and a ratio quantity's ratios with their seeded bootstrap CIs, the same as the
  figures' (``ratios_by``, ``guestio.analysis.stats``);
* the testbed and the builds the runs' provenance records (``testbed_of``, ``build_hashes``);
* the command that regenerates a claim's artifacts (``command_for``);
* the evidence of a results directory as it lies, without Snakemake (``evidence_for_results``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from guestio.analysis import measurements
from guestio.analysis.claim_model import Claim, Quantity, selector_alternatives
from guestio.analysis.claims import load_artifacts
from guestio.analysis.placeholders import resolve_placeholders
from guestio.analysis.stats import bootstrap_ratio_ci, bootstrap_sum_ratio_ci
from guestio.report.verdicts import TESTBED_KEYS


@dataclass


class Evidence:
    """What exists to judge the claims by.

    built:      artifact ids whose building rule exists in this workflow
    ratios:     figure id -> its ratio summary CSV
    exit_tables: artifact id -> its exit table CSV (exit schema, ranked)
    tables:     long-form measurement table CSVs (with ``.provenance.json`` beside them)
    targets:    artifact id -> the files that regenerate it (for the command column)
    defaults:   column -> the values an unnamed column of a selector may take
    """

    built: set[str] = field(default_factory=set)
    ratios: dict[str, str] = field(default_factory=dict)
    exit_tables: dict[str, str] = field(default_factory=dict)
    tables: list[str] = field(default_factory=list)
    targets: dict[str, list[str]] = field(default_factory=dict)
    defaults: dict[str, list[str]] = field(default_factory=dict)
    seed: int = 2010
    n_resamples: int = 10_000
    command: str = ".venv/bin/snakemake --cores all"
    results: str = "results"
    workdir: str = "."
    config: dict = field(default_factory=dict)   # the config of this invocation
    claims_file: str | None = None
    left_out: list[str] = field(default_factory=list)   # built here, but report.artifacts leaves them out


def selector_list(side) -> list[dict[str, str]]:
    """A selector as a list of mappings (any of them), as the figures read it."""
    return [] if side is None else selector_alternatives(side)


def match_rows(df: pd.DataFrame, sides: list[dict[str, str]], defaults: Mapping[str, Sequence[str]]) -> pd.Series:
    mask = pd.Series(False, index=df.index)
    for side in sides:
        m = pd.Series(True, index=df.index)
        for column, value in side.items():
            if column not in df.columns:
                m &= False
                continue
            m &= df[column].astype(str) == str(value)
        for column, allowed in defaults.items():
            if column in side or column not in df.columns:
                continue
            m &= df[column].astype(str).isin([str(a) for a in allowed])
        mask |= m
    return mask


class MeasurementTables:
    def __init__(self, paths: Sequence[str], long_form: bool = True):
        self.paths = [p for p in paths if Path(p).is_file()]
        self.long_form = long_form      # False: any CSV, its own columns kept
        self._df: pd.DataFrame | None = None

    def frame(self) -> pd.DataFrame:
        if self._df is None:
            parts = []
            for p in self.paths:
                try:
                    df = measurements.read_csv(Path(p)) if self.long_form else pd.read_csv(p, dtype=str)
                except (ValueError, OSError):
                    continue
                df["_source"] = p
                parts.append(df)
            self._df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
                columns=[*measurements.COLUMNS, "_source"])
            if self.long_form:
                # One run can feed several tables (Fig 1's first baseline runs are also Fig 5's
                # vHZ1000 and Table 4's unmerged side): its rows count once, or n and the
                # bootstrap would take one run for several independent ones.
                self._df = self._df.drop_duplicates(subset=measurements.COLUMNS, keep="first", ignore_index=True)
        return self._df


def run_values(rows: pd.DataFrame) -> np.ndarray:
    rows = rows.sort_values("repetition", kind="stable")
    v = pd.to_numeric(rows["value"], errors="coerce").to_numpy(dtype=float)
    return v[~np.isnan(v)]


def ratios_by(q: Quantity, df: pd.DataFrame, ev: Evidence, device: str = "disk",
              free: Sequence[str] = (), defaults: Mapping[str, Sequence[str]] | None = None) -> list[dict]:
    """The quantity's ratio for each numerator alternative, accelerator and value of ``device``
    (a column: "disk", "nic") the numerator was run with; the denominator of the same accelerator
    and device, or all of it where it has none such (native).  ``free``: columns the selectors'
    values are dropped for (e.g. the device itself, to see a modification on another device).
    A quantity whose denominator combines by sum divides by the sum of its alternatives' means."""
    if df.empty or "metric" not in df.columns or "value" not in df.columns:
        return []
    df = df.assign(**{c: "-" for c in ("accelerator", device, "repetition", "target") if c not in df.columns})
    if "_source" not in df.columns:
        df = df.assign(_source="")
    rows = df[df["metric"] == q.metric]
    if q.experiment and "experiment" in rows.columns:
        rows = rows[rows["experiment"] == q.experiment]
    defaults = ev.defaults if defaults is None else defaults
    q = resolve_placeholders(q, ev.defaults)
    kept = {k: v for k, v in defaults.items() if k not in free}
    den_alts = [{k: v for k, v in a.items() if k not in free} for a in selector_list(q.denominator)]
    den_parts = ([rows[match_rows(rows, [a], kept)] for a in den_alts] if q.combine == "sum"
                 else [rows[match_rows(rows, den_alts, kept)]])
    out = []
    for i, alternative in enumerate(selector_list(q.numerator)):
        alt = {k: v for k, v in alternative.items() if k not in free}
        num = rows[match_rows(rows, [alt], kept)]
        if num.empty or any(d.empty for d in den_parts) or device not in num.columns:
            continue
        for acc, dev in sorted(num[["accelerator", device]].drop_duplicates().itertuples(index=False, name=None)):
            n = num[(num.accelerator == acc) & (num[device] == dev)]
            ds = []
            for den in den_parts:
                d = den[(den.accelerator == acc) & (den[device] == dev)]
                if d.empty:
                    d = den[den.target == "native"] if "target" in den.columns and (den.target == "native").any() else d
                ds.append(d)
            nv, dvs = run_values(n), [run_values(d) for d in ds]
            if nv.size == 0 or any(dv.size == 0 for dv in dvs) or sum(float(dv.mean()) for dv in dvs) == 0.0:
                continue
            if q.combine == "sum":
                ratio, low, high = bootstrap_sum_ratio_ci(nv, dvs, ev.seed, ev.n_resamples)
            else:
                ratio, low, high = bootstrap_ratio_ci(nv, dvs[0], ev.seed, ev.n_resamples)
            same_rows = len(ds) == 1 and set(n.index) == set(ds[0].index)
            out.append({"alternative": i, "numerator": alternative, "accelerator": str(acc), "device": str(dev),
                        "ratio": ratio, "low": low, "high": high, "n_numerator": int(nv.size),
                        "n_denominator": int(min(dv.size for dv in dvs)), "same_rows": same_rows,
                        "sources": sorted(set(n["_source"]).union(*(set(d["_source"]) for d in ds)))})
    return out


# --- provenance: the testbed and the builds --------------------------------------------------------


def _provenances(ev: Evidence) -> list[dict]:
    out = []
    for t in [*ev.tables, *ev.exit_tables.values()]:
        for candidate in (Path(t).with_suffix(".provenance.json"), Path(t).parent / "provenance.json"):
            if candidate.is_file():
                try:
                    out.append(json.loads(candidate.read_text()))
                except ValueError:
                    pass
                break
    return out


def testbed_of(ev: Evidence, rules: dict) -> dict[str, Any]:
    """verdicts.yaml's testbed, with what the runs' provenance records instead (a "testbed" entry;
    a kernel build's "arch")."""
    testbed = dict(rules["testbed"])
    arches: set[str] = set()
    for prov in _provenances(ev):
        recorded = prov.get("testbed") or {}
        testbed.update({k: v for k, v in recorded.items() if k in TESTBED_KEYS})
        arches |= {k.get("arch") for k in (prov.get("kernels") or {}).values() if isinstance(k, Mapping)} - {None}
    # One architecture for every kernel of the run: that is the guest's.  Mixed (the x86_64 guests
    # and Fig 6's boot-only 32-bit kernels): the benchmarks ran on the default's, and the 32-bit
    # kernels' quantities name their own variants.
    if len(arches) == 1:
        testbed["guest_arch"] = arches.pop()
    return testbed


def build_hashes(ev: Evidence) -> tuple[dict[str, str], dict[str, str]]:
    """({kernel variant: its bzImage (or vmlinux) sha256}, {QEMU variant: its binary's sha256})
    from the provenance of the tables."""
    kernels, qemus = {}, {}
    for prov in _provenances(ev):
        for variant, k in (prov.get("kernels") or {}).items():
            outputs = (k or {}).get("outputs") or {}
            digest = outputs.get("bzImage") or outputs.get("vmlinux")
            if digest:
                kernels[variant] = digest
        for variant, qm in (prov.get("qemus") or {}).items():
            if isinstance(qm, Mapping) and qm.get("sha256"):
                qemus[variant] = qm["sha256"]
    return kernels, qemus


# --- the config and the commands ------------------------------------------------------------------


def config_value(d: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, Mapping) or part not in d:
            return None
        d = d[part]
    return d


def command_for(claim: Claim, ev: Evidence) -> str:
    targets = [t for a in claim.artifact_ids if a in ev.built for t in ev.targets.get(a, [])]
    if not targets:
        if any(a in ev.left_out for a in claim.artifact_ids):
            return "left out of this table by report.artifacts"
        return "not built by any rule of this workflow yet"
    if "{targets}" in ev.command:
        return ev.command.replace("{targets}", " ".join(targets))
    return f"{ev.command} {' '.join(targets)}"


def evidence_for_results(results: str, **kw) -> Evidence:
    """Evidence from a results directory as it lies (no Snakemake): every figure summary, exit
    table and measurement table found, every artifact counted as built when a file of it exists.
    For a look at a recorded run: ``python -m guestio.report.claims_table RESULTS``."""
    res = Path(results)
    ev = Evidence(results=results, **kw)
    artifacts = load_artifacts(ev.claims_file)
    for aid, art in artifacts.items():
        ratios = res / "figures" / f"{aid}-ratios.csv"
        table = res / "tables" / f"{aid}.csv"
        if ratios.is_file():
            ev.ratios[aid] = str(ratios)
            ev.built.add(aid)
            ev.targets[aid] = [str(res / "figures" / f"{aid}.pdf"), str(res / "figures" / f"{aid}.png")]
        if table.is_file():
            ev.exit_tables[aid] = str(table)
            ev.built.add(aid)
            ev.targets[aid] = [str(table.with_suffix(".md"))]
    for p in sorted((res / "tables").glob("*.provenance.json")):
        csv = p.with_name(p.name.replace(".provenance.json", ".csv"))
        if csv.is_file():
            ev.tables.append(str(csv))
    return ev
