"""Every claim of the paper with its verdict as measured here: ``results/claims.{md,csv}``.

The claims and their verdict rules are data (``guestio/analysis/claims.yaml``); how a rule's
outcome becomes one of the four verdicts is data too (``verdicts.yaml`` beside this module);
where the paper's setting differs in a way that can decide a claim is ``settings.yaml``.
This module only applies them to what exists:

* ratio quantities a figure draws are read from the figure's ratio summary
  (``figures/<fig>-ratios.csv``);
* other ratio quantities are computed from the long-form measurement tables with the same
  seeded bootstrap as the figures (``guestio.analysis.stats``);
* exit-site quantities are read from the exit tables (``tables/<artifact>.csv``, the exit schema);
* an artifact that no rule of this workflow builds, or whose files hold no rows for a quantity,
  gives "not measured here".

``build(evidence)`` returns the rows; ``write(rows, ...)`` the files.
"""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import yaml

from guestio.analysis import claims as claims_mod
from guestio.analysis import measurements
from guestio.analysis.stats import bootstrap_ratio_ci
from guestio.report.cost import Cost, closure_cost, load_records
from guestio.util import write_text_atomic

HERE = Path(__file__).parent
VERDICTS_FILE = HERE / "verdicts.yaml"
SETTINGS_FILE = HERE / "settings.yaml"

OUTCOMES = ("agrees", "differs", "undecided", "no_ci", "opposite", "no_data", "not_tested")


@functools.lru_cache(maxsize=4)
def _yaml(path: str) -> Any:
    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


def verdict_rules(path: str | os.PathLike = VERDICTS_FILE) -> dict:
    """The verdict mapping, checked: every outcome maps to a verdict (or null), precedence lists them all."""
    data = _yaml(str(path))
    verdicts = list(data["verdicts"])
    if len(verdicts) != 4:
        raise ValueError(f"{path}: expected the four verdicts, got {verdicts}")
    outcomes = data["outcomes"]
    for outcome in OUTCOMES:
        if outcome not in outcomes:
            raise ValueError(f"{path}: outcome {outcome!r} has no verdict")
        if outcomes[outcome] is not None and outcomes[outcome] not in verdicts:
            raise ValueError(f"{path}: outcome {outcome!r} maps to {outcomes[outcome]!r}, not a verdict")
    if sorted(data["precedence"]) != sorted(verdicts):
        raise ValueError(f"{path}: precedence must list every verdict once")
    return data


def settings(path: str | os.PathLike = SETTINGS_FILE) -> dict[str, list[dict]]:
    return _yaml(str(path)) or {}


# --- judging one quantity ---------------------------------------------------------------------------

def judge(rule: claims_mod.VerdictRule, value: float, low: float, high: float) -> str:
    """The outcome of a numeric verdict rule for a value and its CI (see verdicts.yaml)."""
    if rule.kind == "not_tested":
        return "not_tested"
    if value is None or not math.isfinite(value):
        return "no_data"
    if math.isnan(low) or math.isnan(high):
        return "no_ci"
    if rule.kind == "ratio_ci_contains":
        v, t = rule["value"], rule["tolerance"]
        if high >= v - t and low <= v + t:
            return "agrees"
        if (v < 1.0 and low > 1.0) or (v > 1.0 and high < 1.0):
            return "opposite"
        return "differs"
    if rule.kind == "direction":
        expect, ref = rule["expect"], rule["reference"]
        if expect == ">":
            return "agrees" if low > ref else "opposite" if high < ref else "undecided"
        if expect == "<":
            return "agrees" if high < ref else "opposite" if low > ref else "undecided"
        return "agrees" if (low > ref or high < ref) else "undecided"
    raise ValueError(f"judge: rule {rule.kind!r} does not judge a number")


def judge_sites(rule: claims_mod.VerdictRule, hottest: Sequence[tuple[str, str | None]]) -> tuple[str, int]:
    """(outcome, how many listed sites were found) of a sites_include rule over the hottest sites."""
    sites = rule["sites"]
    need = rule.get("at_least", len(sites))
    found = 0
    for site in sites:
        if any(fn == site.function and (site.caller is None or caller == site.caller) for fn, caller in hottest):
            found += 1
    return ("agrees" if found >= need else "differs"), found


def claim_verdict(quantity_verdicts: Iterable[str | None], rules: dict) -> str:
    """The claim's verdict from its quantities' verdicts (None: does not vote)."""
    voting = [v for v in quantity_verdicts if v is not None]
    if not voting:
        return rules["outcomes"]["no_data"]
    for verdict in rules["precedence"]:
        if verdict in voting:
            return verdict
    raise AssertionError("unreachable: precedence lists every verdict")


# --- the evidence ----------------------------------------------------------------------------------

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


@dataclass
class QuantityRow:
    claim: str
    paper_id: str
    quantity: str
    label: str
    paper: str
    value: float = math.nan
    low: float = math.nan
    high: float = math.nan
    measured: str = "not measured here"
    outcome: str = "no_data"
    verdict: str | None = "not measured here"
    accelerator: str = ""
    from_emulation: bool = False
    source: str = ""
    note: str = ""


@dataclass
class ClaimRow:
    claim: str
    paper_id: str
    statement: str
    artifacts: list[str]
    quantities: list[QuantityRow]
    verdict: str
    accelerator: str
    from_emulation: bool
    verdict_text: str
    setting: str
    command: str
    cost: Cost
    note: str = ""


def _fmt(v: float, low: float, high: float) -> str:
    from guestio.analysis.figures import format_ratio
    return format_ratio(v, low, high)


def _selector_list(side) -> list[dict[str, str]]:
    """A selector as a list of mappings (any of them), as the figures read it."""
    return [] if side is None else claims_mod.selector_alternatives(side)


def _match(df: pd.DataFrame, sides: list[dict[str, str]], defaults: Mapping[str, Sequence[str]]) -> pd.Series:
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


class _Tables:
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
        return self._df


def _values(rows: pd.DataFrame) -> np.ndarray:
    rows = rows.sort_values("repetition", kind="stable")
    v = pd.to_numeric(rows["value"], errors="coerce").to_numpy(dtype=float)
    return v[~np.isnan(v)]


def ratios_by(q: claims_mod.Quantity, df: pd.DataFrame, ev: Evidence, device: str = "disk",
              free: Sequence[str] = (), defaults: Mapping[str, Sequence[str]] | None = None) -> list[dict]:
    """The quantity's ratio for each numerator alternative, accelerator and value of ``device``
    (a column: "disk", "nic") the numerator was run with; the denominator of the same accelerator
    and device, or all of it where it has none such (native).  ``free``: columns the selectors'
    values are dropped for (e.g. the device itself, to see a modification on another device)."""
    if df.empty or "metric" not in df.columns or "value" not in df.columns:
        return []
    df = df.assign(**{c: "-" for c in ("accelerator", device, "repetition", "target") if c not in df.columns})
    if "_source" not in df.columns:
        df = df.assign(_source="")
    rows = df[df["metric"] == q.metric]
    if q.experiment and "experiment" in rows.columns:
        rows = rows[rows["experiment"] == q.experiment]
    defaults = ev.defaults if defaults is None else defaults
    den_sel = [{k: v for k, v in a.items() if k not in free} for a in _selector_list(q.denominator)]
    den = rows[_match(rows, den_sel, {k: v for k, v in defaults.items() if k not in free})]
    out = []
    for i, alternative in enumerate(_selector_list(q.numerator)):
        alt = {k: v for k, v in alternative.items() if k not in free}
        num = rows[_match(rows, [alt], {k: v for k, v in defaults.items() if k not in free})]
        if num.empty or den.empty or device not in num.columns:
            continue
        for acc, dev in sorted(num[["accelerator", device]].drop_duplicates().itertuples(index=False, name=None)):
            n = num[(num.accelerator == acc) & (num[device] == dev)]
            d = den[(den.accelerator == acc) & (den[device] == dev)]
            if d.empty:
                d = den[den.target == "native"] if "target" in den.columns and (den.target == "native").any() else d
            nv, dv = _values(n), _values(d)
            if nv.size == 0 or dv.size == 0 or float(dv.mean()) == 0.0:
                continue
            ratio, low, high = bootstrap_ratio_ci(nv, dv, ev.seed, ev.n_resamples)
            if q.measure == "exits" and nv.size == 1 and dv.size == 1:
                low = high = ratio     # one count on each side: taken as exact (verdicts.yaml)
            out.append({"alternative": i, "numerator": alternative, "accelerator": str(acc), "device": str(dev),
                        "ratio": ratio, "low": low, "high": high, "n_numerator": int(nv.size),
                        "n_denominator": int(dv.size), "sources": sorted(set(n["_source"]) | set(d["_source"]))})
    return out


def _ratio_from_tables(q: claims_mod.Quantity, tables: _Tables, ev: Evidence,
                       defaults: Mapping[str, Sequence[str]] | None = None) -> QuantityRow | None:
    # One ratio per numerator alternative and setting (accelerator, disk); the first is judged:
    # the claim's first alternative on the paper's device (ide sorts before virtio).
    out = ratios_by(q, tables.frame(), ev, defaults=defaults)
    if not out:
        return None
    first = out[0]
    measured = _fmt(first["ratio"], first["low"], first["high"])
    if q.measure == "exits" and first["n_numerator"] == first["n_denominator"] == 1:
        measured = f"{first['ratio']:.3g} (one count each side, no CI)"
    row = QuantityRow("", "", q.id, q.label, q.paper.text, first["ratio"], first["low"], first["high"],
                      measured, accelerator=first["accelerator"], source=", ".join(first["sources"]))

    def what(r):
        alt = ", ".join(f"{k} {v}" for k, v in r["numerator"].items() if k != "target")
        return f"{alt}, {r['device']}"
    row.note = f"{what(first)}, n = {first['n_numerator']} / {first['n_denominator']}"
    if len(out) > 1:
        row.note += "; also " + "; ".join(f"{what(r)}: {_fmt(r['ratio'], r['low'], r['high'])}" for r in out[1:])
    return row


def _ratio_from_summary(q: claims_mod.Quantity, path: str, claim: str | None = None) -> QuantityRow | None:
    """The quantity's row of a figure's ratio summary: by quantity id where the summary names
    quantities (several may share a metric), else by metric."""
    if not Path(path).is_file():
        return None
    df = pd.read_csv(path)
    if "quantity" in df.columns:
        rows = df[(df["quantity"] == q.id) & ((df["claim"] == claim) if claim and "claim" in df.columns else True)]
    else:
        rows = df[df["metric"] == q.metric]
    if rows.empty:
        return None
    first = rows.iloc[0]
    row = QuantityRow("", "", q.id, q.label, q.paper.text, float(first.ratio), float(first.ci_low),
                      float(first.ci_high), _fmt(float(first.ratio), float(first.ci_low), float(first.ci_high)),
                      accelerator=str(first.accelerator), source=path)
    row.note = f"{first.numerator} / {first.denominator}, n = {first.n_numerator} / {first.n_denominator}"
    if len(rows) > 1:
        row.note += "; also " + "; ".join(f"{r.numerator}: {_fmt(r.ratio, r.ci_low, r.ci_high)}"
                                          for r in rows.iloc[1:].itertuples(index=False))
    return row


def _exit_rows(q: claims_mod.Quantity, path: str) -> pd.DataFrame | None:
    if not Path(path).is_file():
        return None
    df = pd.read_csv(path, dtype=str)
    sel = df[_match(df, _selector_list(q.condition), {})] if q.condition else df
    return sel if not sel.empty else None


def _sites(q: claims_mod.Quantity, path: str) -> QuantityRow | None:
    rows = _exit_rows(q, path)
    if rows is None:
        return None
    top = q.verdict_rule.get("top", len(q.verdict_rule["sites"]))
    rank = pd.to_numeric(rows["rank"], errors="coerce")
    hottest_rows = rows[rank <= top]
    has_caller = "caller" in rows.columns and hottest_rows["caller"].notna().any()
    # A site without a symbol (a pc outside the kernel's System.map) has no function name.
    hottest = [((r.function if isinstance(r.function, str) else "(no symbol)"),
                (r.caller if has_caller and isinstance(r.caller, str) else None))
               for r in hottest_rows.itertuples(index=False)]
    outcome, found = judge_sites(q.verdict_rule, hottest)
    listed = len(q.verdict_rule["sites"])
    phases = sorted(set(rows["phase"])) if "phase" in rows.columns else []
    shown = ", ".join(f"{fn}<-{c}" if c else fn for fn, c in dict.fromkeys(hottest))
    row = QuantityRow("", "", q.id, q.label, q.paper.text, float(found), math.nan, math.nan,
                      f"{found} of {listed} listed sites among the top {top}"
                      + (f" of each phase ({', '.join(phases)})" if phases else ""),
                      outcome=outcome, accelerator=str(rows["accelerator"].iloc[0]), source=path)
    row.note = f"top {top} here: {shown}" + ("" if has_caller else "; no calling functions in this table")
    return row


def _share(q: claims_mod.Quantity, path: str) -> QuantityRow | None:
    rows = _exit_rows(q, path)
    if rows is None or "count_share" not in rows.columns:
        return None
    if "phase" in rows.columns and (rows["phase"] == "benchmark").any():
        rows = rows[rows["phase"] == "benchmark"]
    rank = pd.to_numeric(rows["rank"], errors="coerce")
    share = float(pd.to_numeric(rows[rank <= 5]["count_share"], errors="coerce").sum())
    row = QuantityRow("", "", q.id, q.label, q.paper.text, share, share, share, f"{share:.3f} (a count, no CI)",
                      accelerator=str(rows["accelerator"].iloc[0]), source=path)
    return row


def judge_quantity(claim: claims_mod.Claim, q: claims_mod.Quantity, ev: Evidence, tables: _Tables,
                   rules: dict) -> QuantityRow:
    blank = QuantityRow(claim.id, claim.paper_id, q.id, q.label, q.paper.text)
    untested = q.verdict_rule.kind == "not_tested"
    if untested:
        blank.outcome, blank.measured = "not_tested", "not tested: " + q.verdict_rule["reason"]
        blank.verdict = rules["outcomes"]["not_tested"]
        if not q.is_ratio:
            return blank
    unbuilt = [a for a in claim.artifact_ids if a not in ev.built]
    row: QuantityRow | None = None
    if len(unbuilt) == len(claim.artifact_ids):
        left = [a for a in unbuilt if a in ev.left_out]
        blank.note = (f"report.artifacts leaves out {', '.join(left)}" if left
                      else f"no rule of this workflow builds {', '.join(unbuilt)}")
        row = None
    elif q.measure == "sites":
        for a in claim.artifact_ids:
            if a in ev.exit_tables and (row := _sites(q, ev.exit_tables[a])) is not None:
                break
    elif q.measure == "share":
        for a in claim.artifact_ids:
            if a in ev.exit_tables and (row := _share(q, ev.exit_tables[a])) is not None:
                break
    elif q.is_ratio:
        if q.figure and q.figure in ev.ratios:
            row = _ratio_from_summary(q, ev.ratios[q.figure], claim.id)
        if row is None:
            for a in claim.artifact_ids:   # a figure's summary drawn by a stage's own rule
                if a in ev.ratios and row is None:
                    row = _ratio_from_summary(q, ev.ratios[a], claim.id)
        if row is None:
            row = _ratio_from_tables(q, tables, ev)
        if row is None:
            for a in claim.artifact_ids:   # a table artifact's own long-form CSV (metric, value columns)
                if a in ev.exit_tables and row is None:
                    # its own columns, selected as the claim names them (no default condition)
                    row = _ratio_from_tables(q, _Tables([ev.exit_tables[a]], long_form=False), ev, defaults={})
    if row is None and untested:
        return blank
    if row is None:
        if not blank.note:
            blank.note = "no measured rows for it in the artifact's files"
        blank.outcome = "no_data"
        blank.verdict = rules["outcomes"]["no_data"]
        return blank
    row.claim, row.paper_id = claim.id, claim.paper_id
    if untested:  # measured and shown, but it does not vote
        row.measured += " (not tested: " + q.verdict_rule["reason"] + ")"
    if q.measure not in ("sites",):
        row.outcome = judge(q.verdict_rule, row.value, row.low, row.high)
    row.verdict = rules["outcomes"][row.outcome]
    row.from_emulation = row.accelerator in rules["emulation"]
    return row


# --- settings and commands -------------------------------------------------------------------------

def _get(d: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, Mapping) or part not in d:
            return None
        d = d[part]
    return d


def _provenance_config(sources: Iterable[str]) -> dict:
    for s in list(sources):
        for candidate in (Path(s).with_suffix(".provenance.json"), Path(s).parent / "provenance.json"):
            if candidate.is_file():
                try:
                    return json.loads(candidate.read_text()).get("config") or {}
                except ValueError:
                    pass
    return {}


def setting_text(claim_id: str, sources: Sequence[str], ev: Evidence) -> str:
    parts = []
    run_config = _provenance_config([*sources, *ev.tables])
    for entry in settings().get(claim_id, []):
        text = " ".join(entry["text"].split())
        key = entry.get("key")
        if key:
            used = _get(run_config, key)
            origin = "the run's provenance"
            if used is None:
                used, origin = _get(ev.config, key), "this invocation's config"
            paper = entry.get("paper")
            if used is not None and str(used) == str(paper):
                text += f" This run used the paper's setting ({key}: {used}, from {origin})."
            else:
                text += (f" Here {key}: {used if used is not None else 'unknown'} (from {origin}); the paper's "
                         f"setting is {key}: {paper}" + (f", run with `{entry['run']}`" if entry.get("run") else "")
                         + ".")
        parts.append(text)
    return " ".join(parts)


def command_for(claim: claims_mod.Claim, ev: Evidence) -> str:
    targets = [t for a in claim.artifact_ids if a in ev.built for t in ev.targets.get(a, [])]
    if not targets:
        if any(a in ev.left_out for a in claim.artifact_ids):
            return "left out of this table by report.artifacts"
        return "not built by any rule of this workflow yet"
    if "{targets}" in ev.command:
        return ev.command.replace("{targets}", " ".join(targets))
    return f"{ev.command} {' '.join(targets)}"


# --- the table -------------------------------------------------------------------------------------

def _claim_files(claim: claims_mod.Claim, ev: Evidence) -> list[str]:
    files = [t for a in claim.artifact_ids if a in ev.built for t in ev.targets.get(a, [])]
    files += [ev.ratios[a] for a in claim.artifact_ids if a in ev.ratios]
    files += [ev.exit_tables[a] for a in claim.artifact_ids if a in ev.exit_tables]
    return files


def compute_costs(ev: Evidence) -> dict[str, dict]:
    """{claim id: cost} from Snakemake's records of the working directory (see guestio.report.cost).
    A claim computed from a measurement table (no figure of its own) is charged that table."""
    records = load_records(ev.workdir)
    out = {}
    for claim in claims_mod.load_claims(ev.claims_file).values():
        files = _claim_files(claim, ev)
        if files and not any(a in ev.ratios for a in claim.artifact_ids):
            files += ev.tables
        c = closure_cost(files, records, ev.results) if files else Cost()
        out[claim.id] = {"run_s": round(c.run_s, 1), "build_s": round(c.build_s, 1), "run_bytes": c.run_bytes,
                         "build_bytes": c.build_bytes, "jobs": c.jobs}
    return out


def build(ev: Evidence, costs: Mapping[str, Mapping] | None = None) -> list[ClaimRow]:
    """The claims table's rows; ``costs`` as compute_costs() gives (computed here when None)."""
    rules = verdict_rules()
    claims = claims_mod.load_claims(ev.claims_file)
    tables = _Tables(ev.tables)
    costs = compute_costs(ev) if costs is None else costs
    out = []
    for claim in claims.values():
        qrows = [judge_quantity(claim, q, ev, tables, rules) for q in claim.quantities]
        verdict = claim_verdict([r.verdict for r in qrows], rules)
        measured = [r for r in qrows if r.outcome not in ("no_data", "not_tested")]
        accs = sorted({r.accelerator for r in measured if r.accelerator})
        emulation = any(r.from_emulation for r in measured)
        text = verdict + (f" ({rules['emulation_note']})" if emulation and verdict != "not measured here" else "")
        sources = [s for r in measured for s in r.source.split(", ") if s]
        c = costs.get(claim.id) or {}
        cost = Cost(c.get("run_s", 0.0), c.get("build_s", 0.0), c.get("run_bytes", 0), c.get("build_bytes", 0),
                    c.get("jobs", 0))
        out.append(ClaimRow(claim.id, claim.paper_id, claim.statement, list(claim.artifact_ids), qrows, verdict,
                            ", ".join(accs) or "-", emulation, text, setting_text(claim.id, sources, ev),
                            command_for(claim, ev), cost, claim.note))
    return out


CLAIM_COLUMNS = ["paper_id", "claim", "statement", "measured", "accelerator", "verdict", "from_emulation",
                 "setting", "command", "run_time_s", "build_time_s", "run_disk_bytes", "build_disk_bytes", "note"]
QUANTITY_COLUMNS = ["paper_id", "claim", "quantity", "label", "paper", "value", "ci_low", "ci_high", "measured",
                    "outcome", "verdict", "accelerator", "from_emulation", "source", "note"]


def _measured_summary(row: ClaimRow) -> str:
    return "; ".join(f"{q.label}: {q.measured}" for q in row.quantities if q.outcome != "not_tested") or "-"


def claims_frame(rows: Sequence[ClaimRow]) -> pd.DataFrame:
    return pd.DataFrame([{
        "paper_id": r.paper_id, "claim": r.claim, "statement": r.statement, "measured": _measured_summary(r),
        "accelerator": r.accelerator, "verdict": r.verdict, "from_emulation": r.from_emulation,
        "setting": r.setting, "command": r.command,
        "run_time_s": round(r.cost.run_s, 1) if r.cost.known else None,
        "build_time_s": round(r.cost.build_s, 1) if r.cost.known else None,
        "run_disk_bytes": r.cost.run_bytes if r.cost.known else None,
        "build_disk_bytes": r.cost.build_bytes if r.cost.known else None,
        "note": r.note} for r in rows], columns=CLAIM_COLUMNS)


def quantities_frame(rows: Sequence[ClaimRow]) -> pd.DataFrame:
    return pd.DataFrame([{
        "paper_id": q.paper_id, "claim": q.claim, "quantity": q.quantity, "label": q.label, "paper": q.paper,
        "value": q.value, "ci_low": q.low, "ci_high": q.high, "measured": q.measured, "outcome": q.outcome,
        "verdict": q.verdict if q.verdict is not None else "-", "accelerator": q.accelerator or "-",
        "from_emulation": q.from_emulation, "source": q.source, "note": q.note}
        for r in rows for q in r.quantities], columns=QUANTITY_COLUMNS)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(rows: Sequence[ClaimRow], *, title: str = "The paper's claims, as measured here") -> str:
    rules = verdict_rules()
    counts = {v: sum(r.verdict == v for r in rows) for v in rules["verdicts"]}
    lines = [f"# {title}", "",
             "One row per claim of the paper (PAPER.md: Fig 1-7, Tables 1-4, §3.2.2). Verdicts by the rule stated "
             "once in `workflow/guestio/report/verdicts.yaml`, applied to the verdict rules of "
             "`workflow/guestio/analysis/claims.yaml`; intervals are 95% bootstrap CIs (seeded). "
             f"A verdict from TCG says \"{rules['emulation_note']}\": TCG has no VM exits and no hardware "
             "virtualisation, so its numbers are not KVM's.", "",
             "Verdicts: " + ", ".join(f"{v}: {n}" for v, n in counts.items()) + ".", "",
             "| claim | paper says | measured here (95% CI) | accelerator | verdict | cost |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| " + " | ".join(_cell(x) for x in (
            r.paper_id, r.statement, _measured_summary(r), r.accelerator, r.verdict_text, r.cost.text())) + " |")
    lines += ["", "## Each claim", ""]
    for r in rows:
        lines += [f"### {r.paper_id}: {r.verdict_text}", "", f"*Paper:* {r.statement}", ""]
        lines += ["| quantity | paper | here (95% CI) | rule outcome | verdict | accelerator |", "|---|---|---|---|---|---|"]
        for q in r.quantities:
            lines.append("| " + " | ".join(_cell(x) for x in (
                q.label, q.paper, q.measured, q.outcome, q.verdict or "does not vote",
                q.accelerator or "-")) + " |")
        lines.append("")
        notes = [f"- {q.label}: {q.note}" + (f" (from {q.source})" if q.source else "")
                 for q in r.quantities if q.note or q.source]
        if notes:
            lines += notes + [""]
        if r.setting:
            lines += [f"*Setting:* {r.setting}", ""]
        if r.note:
            lines += [f"*Note:* {r.note}", ""]
        lines += [f"*Regenerate:* `{r.command}`" if "snakemake" in r.command else f"*Regenerate:* {r.command}",
                  "", f"*Cost:* {r.cost.text()}", ""]
    return "\n".join(lines).rstrip() + "\n"


def write(rows: Sequence[ClaimRow], markdown_path: str, csv_path: str, quantities_path: str | None = None) -> None:
    write_text_atomic(Path(csv_path), claims_frame(rows).to_csv(index=False, lineterminator="\n"))
    if quantities_path:
        write_text_atomic(Path(quantities_path), quantities_frame(rows).to_csv(index=False, lineterminator="\n"))
    write_text_atomic(Path(markdown_path), markdown(rows))


def evidence_for_results(results: str, **kw) -> Evidence:
    """Evidence from a results directory as it lies (no Snakemake): every figure summary, exit
    table and measurement table found, every artifact counted as built when a file of it exists.
    For a look at a recorded run: ``python -m guestio.report.claims_table RESULTS``."""
    res = Path(results)
    ev = Evidence(results=results, **kw)
    artifacts = claims_mod.load_artifacts(ev.claims_file)
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


if __name__ == "__main__":
    import sys
    ev = evidence_for_results(sys.argv[1] if len(sys.argv) > 1 else "results")
    sys.stdout.write(markdown(build(ev)))
