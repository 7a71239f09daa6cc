"""Every claim of the paper with its verdict as measured here: ``results/claims.{md,csv}``.

The claims, their quantities and verdict rules are data (``guestio/analysis/claims.yaml``); how
a quantity gets its verdict (requirements of the run, A/A comparisons, the number of runs, the
rule on the CI) and how a claim's verdict follows from its quantities' is data too
(``verdicts.yaml`` beside this module); where the paper's setting differs in a way that can
decide a claim is ``settings.yaml``.  This module only applies them to what exists:

* ratio quantities a figure draws are read from the figure's ratio summary
  (``figures/<fig>-ratios.csv``), unless the quantity's numerator routes are judged apart;
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

from guestio.analysis.claim_model import Claim, Quantity, VerdictRule, selector_alternatives
from guestio.analysis.claims import load_artifacts, load_claims
from guestio.analysis.placeholders import resolve_placeholders
from guestio.analysis import measurements
from guestio.analysis.stats import bootstrap_ratio_ci, bootstrap_sum_ratio_ci
from guestio.report.cost import Cost, closure_cost, load_records
from guestio.util import write_text_atomic

HERE = Path(__file__).parent
VERDICTS_FILE = HERE / "verdicts.yaml"
SETTINGS_FILE = HERE / "settings.yaml"

REPRODUCED = "reproduced"
INCONCLUSIVE = "inconclusive"
NOT_REPRODUCED = "not reproduced"
CONTRADICTED = "contradicted"
NOT_TESTABLE = "not testable here"
NOT_MEASURED = "not measured here"
VERDICTS = (REPRODUCED, INCONCLUSIVE, NOT_REPRODUCED, CONTRADICTED, NOT_TESTABLE, NOT_MEASURED)
#: What a verdict rule can give on numbers (the other two come from the run and the data).
RULE_VERDICTS = (REPRODUCED, INCONCLUSIVE, NOT_REPRODUCED, CONTRADICTED)
#: What a requirement may be satisfied by: the run's accelerator, or a fact of its testbed.
TESTBED_KEYS = ("hosts", "guest_arch", "guest_kernel")
REQUIREMENT_KEYS = ("accelerator", *TESTBED_KEYS)


@functools.lru_cache(maxsize=4)
def _yaml(path: str) -> Any:
    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


def verdict_rules(path: str | os.PathLike = VERDICTS_FILE) -> dict:
    """verdicts.yaml, checked: the six verdicts, a precedence of them all, min_runs, and each
    requirement with one thing that satisfies it, its reason and the run that would test it."""
    data = _yaml(str(path))
    verdicts = list(data["verdicts"])
    if sorted(verdicts) != sorted(VERDICTS):
        raise ValueError(f"{path}: verdicts must be {', '.join(VERDICTS)}; got {verdicts}")
    if sorted(data["precedence"]) != sorted(verdicts):
        raise ValueError(f"{path}: precedence must list every verdict once")
    if not isinstance(data.get("min_runs"), int) or data["min_runs"] < 2:
        raise ValueError(f"{path}: min_runs must be an integer of at least 2 (an interval needs two runs)")
    for name, req in (data.get("requirements") or {}).items():
        keys = [k for k in REQUIREMENT_KEYS if k in req]
        if len(keys) != 1 or not req.get("reason") or not req.get("run"):
            raise ValueError(f"{path}: requirement {name!r} needs one of {', '.join(REQUIREMENT_KEYS)}, "
                             "a reason and a run")
    for key in TESTBED_KEYS:
        if key not in (data.get("testbed") or {}):
            raise ValueError(f"{path}: testbed lacks {key!r}")
    return data


def settings(path: str | os.PathLike = SETTINGS_FILE) -> dict[str, list[dict]]:
    return _yaml(str(path)) or {}


# --- judging numbers: the verdict rules of claims.yaml ------------------------------------------------

@dataclass(frozen=True)
class Judgement:
    verdict: str
    reason: str = ""   # why, in words (always given for anything but "reproduced")
    run: str = ""      # the run that would test it (not testable / not measured / inconclusive)


def _g(x: float) -> str:
    return f"{x:.3g}"


def _directional(side: str, reference: float, value: float, low: float, high: float,
                 target: tuple[float, float] | None, target_text: str = "") -> Judgement:
    """An effect claimed on *side* of no effect (*reference*); *target*: where the point must lie."""
    ci = f"CI [{_g(low)}, {_g(high)}]"
    wrong = high < reference if side == ">" else low > reference
    right = low > reference if side == ">" else high < reference
    if wrong:
        return Judgement(CONTRADICTED, f"{ci} lies wholly on the wrong side of no effect ({_g(reference)})")
    if not right:
        return Judgement(INCONCLUSIVE, f"{ci} includes no effect ({_g(reference)})")
    if target is not None and not target[0] <= value <= target[1]:
        return Judgement(NOT_REPRODUCED, f"an effect on the claimed side ({ci} excludes {_g(reference)}), but "
                                         f"{_g(value)} is not {target_text}")
    return Judgement(REPRODUCED, f"{ci} excludes no effect ({_g(reference)}) on the claimed side"
                     + (f" and {_g(value)} is {target_text}" if target is not None else ""))


def judge_numbers(rule: VerdictRule, value: float, low: float, high: float) -> Judgement:
    """Step 8 of verdicts.yaml: a numeric verdict rule on a point estimate and its CI."""
    if rule.kind not in ("ratio_ci_contains", "direction"):
        raise ValueError(f"judge_numbers: rule {rule.kind!r} does not judge a number")
    if value is None or not math.isfinite(value):
        return Judgement(NOT_MEASURED, "no value")
    if math.isnan(low) or math.isnan(high):
        return Judgement(INCONCLUSIVE, "no confidence interval")
    ci = f"CI [{_g(low)}, {_g(high)}]"
    if rule.kind == "ratio_ci_contains":
        v, t, ref = rule["value"], rule["tolerance"], rule.get("reference", 1.0)
        band = (v - t, v + t)
        band_text = f"within [{_g(band[0])}, {_g(band[1])}] (about {_g(v)})"
        if band[0] <= ref <= band[1]:   # "about equal": no wrong side
            if band[0] <= low and high <= band[1]:
                return Judgement(REPRODUCED, f"{ci} lies {band_text}")
            if high < band[0] or low > band[1]:
                return Judgement(NOT_REPRODUCED, f"{ci} lies wholly outside [{_g(band[0])}, {_g(band[1])}]: "
                                                 f"a difference where the paper says about {_g(v)}")
            return Judgement(INCONCLUSIVE, f"{ci} crosses the edge of [{_g(band[0])}, {_g(band[1])}]")
        return _directional(">" if v > ref else "<", ref, value, low, high, band, band_text)
    expect, ref = rule["expect"], rule["reference"]
    t = rule.get("tolerance", 0.0)
    if expect == "!=":
        if (low > ref or high < ref) and abs(value - ref) > t:
            return Judgement(REPRODUCED, f"{ci} excludes {_g(ref)} and {_g(value)} differs from it by more "
                                         f"than {_g(t)}")
        if t > 0 and ref - t <= low and high <= ref + t:
            return Judgement(NOT_REPRODUCED, f"{ci} lies within [{_g(ref - t)}, {_g(ref + t)}]: no noticeable "
                                             "change")
        return Judgement(INCONCLUSIVE, f"{ci} does not exclude a change of at most {_g(t)}")
    v = rule.get("value")
    if v is None:
        return _directional(expect, ref, value, low, high, None)
    target = (v - t, math.inf) if expect == ">" else (-math.inf, v + t)
    word = f"at least {_g(v - t)}" if expect == ">" else f"at most {_g(v + t)}"
    return _directional(expect, ref, value, low, high, target, f"{word} (the paper: {expect} {_g(v)})")


def judge(rule: VerdictRule, value: float, low: float, high: float) -> str:
    """The verdict a numeric rule gives on its own (no requirements, no run count): see judge_numbers."""
    return judge_numbers(rule, value, low, high).verdict


def countable_sites(rule: VerdictRule, unmet: Iterable[str]) -> tuple[list, list]:
    """(sites that can exist in this run, (site, reason) of those that cannot)."""
    unmet = set(unmet)
    can, cannot = [], []
    for site in rule["sites"]:
        (cannot if unmet & set(site.requires) else can).append(site)
    return can, [(s, s.reason) for s in cannot]


def _site_name(site) -> str:
    return f"{site.function}<-{site.caller}" if site.caller else site.function


def judge_sites(rule: VerdictRule, hottest: Sequence[tuple[str, str | None]],
                unmet: Iterable[str] = ()) -> tuple[Judgement, int]:
    """A sites_include rule over the hottest sites: (judgement, listed sites found).  Listed sites
    whose requirements are in *unmet* cannot exist in the run: left out of the count, named."""
    can, cannot = countable_sites(rule, unmet)
    left_out = "; ".join(f"{_site_name(s)} left out: {why}" for s, why in cannot)
    if not can:
        return Judgement(NOT_TESTABLE, left_out), 0
    need = min(rule.get("at_least", len(can)), len(can))
    found = sum(any(fn == s.function and (s.caller is None or caller == s.caller) for fn, caller in hottest)
                for s in can)
    text = f"{found} of the {len(can)} listed sites that can exist here found, {need} needed"
    text += f" ({left_out})" if left_out else ""
    return Judgement(REPRODUCED if found >= need else NOT_REPRODUCED, text), found


# --- what the run can test ---------------------------------------------------------------------------

def _requirement_text(unmet: Sequence[tuple[str, dict]], have: str) -> Judgement:
    reasons = "; ".join(" ".join(str(req["reason"]).split()) for _, req in unmet)
    return Judgement(NOT_TESTABLE, reasons + (f" (this run: {have})" if have else ""), unmet[0][1]["run"])


def testbed_unmet(names: Iterable[str], testbed: Mapping[str, Any], rules: dict) -> list[tuple[str, dict]]:
    """The requirements among *names* that the testbed (hosts, guest architecture, kernel) lacks."""
    out = []
    for name in names:
        req = rules["requirements"][name]
        key = next((k for k in TESTBED_KEYS if k in req), None)
        if key is not None and str(testbed.get(key)) not in {str(v) for v in req[key]}:
            out.append((name, req))
    return out


def accelerators_of(accelerator: str) -> set[str]:
    return {a.strip() for a in str(accelerator or "").split(",") if a.strip() and a.strip() != "-"}


def accelerator_unmet(names: Iterable[str], accelerator: str, rules: dict) -> list[tuple[str, dict]]:
    """The requirements among *names* that the run's accelerator(s) do not satisfy; an unknown
    accelerator satisfies none."""
    accs = accelerators_of(accelerator)
    out = []
    for name in names:
        req = rules["requirements"][name]
        if "accelerator" in req and (not accs or not accs <= set(req["accelerator"])):
            out.append((name, req))
    return out


def unmet_requirements(names: Iterable[str], accelerator: str, testbed: Mapping[str, Any], rules: dict) -> list[str]:
    names = list(names)
    return [n for n, _ in testbed_unmet(names, testbed, rules) + accelerator_unmet(names, accelerator, rules)]


def verdict_of(q: Quantity, value: float, low: float, high: float, n_numerator: int,
               n_denominator: int, accelerator: str, *, rules: dict | None = None,
               testbed: Mapping[str, Any] | None = None, aa: str | None = None) -> Judgement:
    """A measured ratio quantity's verdict, steps 3 and 5-8 of verdicts.yaml (requirements of the
    testbed and the accelerator, A/A, the number of runs, the rule).  *aa*: what the two sides
    share when they are an A/A comparison (None when they are not)."""
    rules = rules or verdict_rules()
    testbed = rules["testbed"] if testbed is None else testbed
    if q.verdict_rule.kind == "not_tested":
        return Judgement("", "not tested: " + q.verdict_rule["reason"])
    unmet = testbed_unmet(q.requires, testbed, rules)
    if unmet:
        return _requirement_text(unmet, ", ".join(f"{k} {testbed.get(k)}" for k in TESTBED_KEYS))
    unmet = accelerator_unmet(q.requires, accelerator, rules)
    if unmet:
        return _requirement_text(unmet, accelerator or "accelerator not recorded")
    if aa:
        return Judgement(NOT_TESTABLE, rules["aa"]["reason"].format(what=aa), rules["aa"]["run"])
    if min(n_numerator, n_denominator) < rules["min_runs"]:
        return Judgement(INCONCLUSIVE, f"n = {n_numerator} / {n_denominator}: fewer than {rules['min_runs']} "
                                       "independent runs on a side, no interval",
                         "more repetitions (config/paper-scale.yaml runs 10)")
    j = judge_numbers(q.verdict_rule, value, low, high)
    if j.verdict == INCONCLUSIVE and not j.run:
        j = Judgement(j.verdict, j.reason, "more repetitions (config/paper-scale.yaml runs 10)")
    return j


def claim_verdict(quantity_verdicts: Iterable[str | None], rules: dict) -> str:
    """The claim's verdict from its quantities' (None or "": does not vote): the first of `precedence`."""
    voting = [v for v in quantity_verdicts if v]
    if not voting:
        return NOT_MEASURED
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
    verdict: str | None = NOT_MEASURED      # None: shown, does not vote (not_tested)
    accelerator: str = ""
    from_emulation: bool = False
    source: str = ""
    note: str = ""
    role: str = "effect"
    route: str = ""                          # the numerator route judged (claims.yaml routes)
    n_numerator: int = 0                     # independent runs of each side (0: none / not a ratio)
    n_denominator: int = 0
    reason: str = ""                         # why this verdict
    would_test: str = ""                     # the run that would test it

    @property
    def name(self) -> str:
        return f"{self.label} ({self.route})" if self.route else self.label

    @property
    def n_text(self) -> str:
        if self.n_numerator and self.n_denominator:
            return f"n = {self.n_numerator} / {self.n_denominator}"
        return f"n = {self.n_numerator}" if self.n_numerator else "n = 0"


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
    decided_by: QuantityRow | None = None   # the first quantity with the claim's verdict

    @property
    def reason(self) -> str:
        return self.decided_by.reason if self.decided_by else "no quantity votes"

    @property
    def would_test(self) -> str:
        return self.decided_by.would_test if self.decided_by else ""


def _fmt(v: float, low: float, high: float) -> str:
    from guestio.analysis.figures import format_ratio
    return format_ratio(v, low, high)


def _selector_list(side) -> list[dict[str, str]]:
    """A selector as a list of mappings (any of them), as the figures read it."""
    return [] if side is None else selector_alternatives(side)


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
            if self.long_form:
                # One run can feed several tables (Fig 1's first baseline runs are also Fig 5's
                # vHZ1000 and Table 4's unmerged side): its rows count once, or n and the
                # bootstrap would take one run for several independent ones.
                self._df = self._df.drop_duplicates(subset=measurements.COLUMNS, keep="first", ignore_index=True)
        return self._df


def _values(rows: pd.DataFrame) -> np.ndarray:
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
    den_alts = [{k: v for k, v in a.items() if k not in free} for a in _selector_list(q.denominator)]
    den_parts = ([rows[_match(rows, [a], kept)] for a in den_alts] if q.combine == "sum"
                 else [rows[_match(rows, den_alts, kept)]])
    out = []
    for i, alternative in enumerate(_selector_list(q.numerator)):
        alt = {k: v for k, v in alternative.items() if k not in free}
        num = rows[_match(rows, [alt], kept)]
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
            nv, dvs = _values(n), [_values(d) for d in ds]
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


def _row_from_ratio(q: Quantity, r: Mapping, others: Sequence[Mapping] = ()) -> QuantityRow:
    row = QuantityRow("", "", q.id, q.label, q.paper.text, r["ratio"], r["low"], r["high"],
                      _fmt(r["ratio"], r["low"], r["high"]), accelerator=r["accelerator"],
                      source=", ".join(r["sources"]), n_numerator=r["n_numerator"], n_denominator=r["n_denominator"])

    def what(x):
        alt = ", ".join(f"{k} {v}" for k, v in x["numerator"].items() if k != "target")
        return f"{alt}, {x['device']}"
    row.note = what(r)
    if others:
        row.note += "; also " + "; ".join(f"{what(x)}: {_fmt(x['ratio'], x['low'], x['high'])}" for x in others)
    return row


def _ratio_from_tables(q: Quantity, tables: _Tables, ev: Evidence, alternative: int | None = None,
                       defaults: Mapping[str, Sequence[str]] | None = None) -> tuple[QuantityRow, Mapping] | None:
    """The judged ratio (the quantity's first numerator alternative, or *alternative*, on the first
    device in order: the paper's, ide before virtio) and the row showing it with the others."""
    out = ratios_by(q, tables.frame(), ev, defaults=defaults)
    if alternative is not None:
        out = [r for r in out if r["alternative"] == alternative]
    if not out:
        return None
    return _row_from_ratio(q, out[0], out[1:]), out[0]


def _ratio_from_summary(q: Quantity, path: str, claim: str | None = None) -> QuantityRow | None:
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
                      accelerator=str(first.accelerator), source=path,
                      n_numerator=int(first.n_numerator), n_denominator=int(first.n_denominator))
    row.note = f"{first.numerator} / {first.denominator}"
    if len(rows) > 1:
        row.note += "; also " + "; ".join(f"{r.numerator}: {_fmt(r.ratio, r.ci_low, r.ci_high)}"
                                          for r in rows.iloc[1:].itertuples(index=False))
    return row


def _exit_rows(q: Quantity, path: str) -> pd.DataFrame | None:
    if not Path(path).is_file():
        return None
    df = pd.read_csv(path, dtype=str)
    sel = df[_match(df, _selector_list(q.condition), {})] if q.condition else df
    return sel if not sel.empty else None


def _sites(q: Quantity, path: str, testbed: Mapping[str, Any], rules: dict) -> QuantityRow | None:
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
    accelerator = ",".join(sorted(set(rows["accelerator"].dropna()))) if "accelerator" in rows.columns else ""
    site_needs = {r for s in q.verdict_rule["sites"] for r in s.requires}
    unmet = unmet_requirements(site_needs, accelerator, testbed, rules)
    judgement, found = judge_sites(q.verdict_rule, hottest, unmet)
    phases = sorted(set(rows["phase"])) if "phase" in rows.columns else []
    shown = ", ".join(f"{fn}<-{c}" if c else fn for fn, c in dict.fromkeys(hottest))
    row = QuantityRow("", "", q.id, q.label, q.paper.text, float(found), math.nan, math.nan,
                      f"{found} of the listed sites among the top {top}"
                      + (f" of the phase {', '.join(phases)}" if phases else "") + " (one exit run)",
                      accelerator=accelerator, source=path, n_numerator=1)
    row.verdict, row.reason = judgement.verdict, judgement.reason
    row.note = f"top {top} here: {shown}" + ("" if has_caller else "; no calling functions in this table")
    return row


def _share(q: Quantity, path: str) -> QuantityRow | None:
    rows = _exit_rows(q, path)
    if rows is None or "count_share" not in rows.columns:
        return None
    if "phase" in rows.columns and (rows["phase"] == "benchmark").any():
        rows = rows[rows["phase"] == "benchmark"]
    rank = pd.to_numeric(rows["rank"], errors="coerce")
    share = float(pd.to_numeric(rows[rank <= 5]["count_share"], errors="coerce").sum())
    # One exit run: the share is a count of that run, judged as it is (verdicts.yaml, step 7).
    return QuantityRow("", "", q.id, q.label, q.paper.text, share, share, share,
                       f"{share:.3f} (a count of one exit run, no CI)",
                       accelerator=str(rows["accelerator"].iloc[0]), source=path, n_numerator=1)


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


def _default(column: str, defaults: Mapping[str, Sequence[str]]) -> str | None:
    named = [str(v) for v in defaults.get(column, []) if str(v) != "-"]
    return named[-1] if named else None


def aa_comparison(numerator: Mapping[str, str], denominators: Sequence[Mapping[str, str]],
                  defaults: Mapping[str, Sequence[str]], kernels: Mapping[str, str],
                  qemus: Mapping[str, str]) -> str | None:
    """What the two sides of a ratio share when they are an A/A comparison, else None: the same
    condition, or conditions that differ only in the kernel or QEMU variant, each of which names
    the same build (the same sha256)."""
    if len(denominators) != 1:
        return None
    den = denominators[0]
    columns = sorted(set(numerator) | set(den))
    side = {c: (str(numerator.get(c, _default(c, defaults))), str(den.get(c, _default(c, defaults))))
            for c in columns}
    differ = {c: v for c, v in side.items() if v[0] != v[1]}
    if not differ:
        return "the same condition (" + ", ".join(f"{c} {v[0]}" for c, v in side.items()) + ")"
    if not set(differ) <= {"variant", "qemu"}:
        return None
    same = []
    for column, (a, b) in sorted(differ.items()):
        builds, what = (kernels, "kernel") if column == "variant" else (qemus, "QEMU")
        if builds.get(a) is None or builds.get(a) != builds.get(b):
            return None
        same.append(f"the same {what} build ({a} and {b}: sha256 {builds[a][:12]})")
    return " and ".join(same)


# --- judging one quantity ----------------------------------------------------------------------------

def _finish(row: QuantityRow, claim: Claim, q: Quantity, rules: dict) -> QuantityRow:
    row.claim, row.paper_id, row.role = claim.id, claim.paper_id, q.role
    row.from_emulation = bool(accelerators_of(row.accelerator) & set(rules["emulation"]))
    return row


def _not_measured(row: QuantityRow, reason: str, run: str) -> QuantityRow:
    row.verdict, row.reason, row.would_test = NOT_MEASURED, " ".join(reason.split()), run
    return row


def _judge_ratio(row: QuantityRow, q: Quantity, ev: Evidence, rules: dict, testbed: Mapping,
                 numerator: Mapping[str, str] | None, same_rows: bool) -> QuantityRow:
    kernels, qemus = build_hashes(ev)
    dens = selector_alternatives(resolve_placeholders(q.denominator, ev.defaults))
    aa = "the same rows of the table" if same_rows else (
        aa_comparison(numerator, dens, ev.defaults, kernels, qemus) if numerator is not None else None)
    j = verdict_of(q, row.value, row.low, row.high, row.n_numerator, row.n_denominator, row.accelerator,
                   rules=rules, testbed=testbed, aa=aa)
    row.verdict, row.reason, row.would_test = j.verdict, j.reason, j.run
    return row


def judge_quantity(claim: Claim, q: Quantity, ev: Evidence, tables: _Tables,
                   rules: dict, testbed: Mapping[str, Any] | None = None) -> list[QuantityRow]:
    """The quantity's rows (one per route where it names routes), judged as verdicts.yaml says."""
    testbed = testbed_of(ev, rules) if testbed is None else testbed
    routes = list(enumerate(q.routes)) or [(None, "")]
    return [_judge_one(claim, q, ev, tables, rules, testbed, i, name) for i, name in routes]


def _judge_one(claim, q, ev, tables, rules, testbed, alternative: int | None, route: str) -> QuantityRow:
    blank = QuantityRow(claim.id, claim.paper_id, q.id, q.label, q.paper.text, role=q.role, route=route)
    _finish(blank, claim, q, rules)
    untested = q.verdict_rule.kind == "not_tested"
    if untested:   # step 1: context only; a ratio is still measured and shown
        blank.verdict, blank.measured = None, "not tested: " + q.verdict_rule["reason"]
        blank.reason = blank.measured
        if not q.is_ratio:
            return blank
    elif q.not_measured:   # step 2
        return _not_measured(blank, q.not_measured, "a run that records it: " + " ".join(q.not_measured.split()))
    unmet = testbed_unmet(q.requires, testbed, rules)
    if unmet and not untested:   # step 3
        j = _requirement_text(unmet, ", ".join(f"{k} {testbed.get(k)}" for k in TESTBED_KEYS))
        blank.verdict, blank.reason, blank.would_test = j.verdict, j.reason, j.run
        blank.measured = "not testable here"
        return blank
    row, numerator, same_rows = _measure(claim, q, ev, tables, rules, testbed, alternative, blank)
    if row is None:   # step 4
        if untested:
            return blank
        return _not_measured(blank, blank.note or "no measured rows for it in the artifact's files",
                             command_for(claim, ev))
    row.role, row.route = q.role, route
    _finish(row, claim, q, rules)
    if untested:   # measured and shown, but it does not vote
        row.measured += " (not tested: " + q.verdict_rule["reason"] + ")"
        row.verdict, row.reason = None, "not tested: " + q.verdict_rule["reason"]
        return row
    if q.measure == "sites":
        unmet = accelerator_unmet(q.requires, row.accelerator, rules)
        if unmet:
            j = _requirement_text(unmet, row.accelerator or "accelerator not recorded")
            row.verdict, row.reason, row.would_test = j.verdict, j.reason, j.run
        return row
    if q.measure == "share":   # one exit run: judged on its count (step 7)
        unmet = accelerator_unmet(q.requires, row.accelerator, rules)
        j = (_requirement_text(unmet, row.accelerator) if unmet
             else judge_numbers(q.verdict_rule, row.value, row.low, row.high))
        row.verdict, row.reason, row.would_test = j.verdict, j.reason, j.run
        return row
    return _judge_ratio(row, q, ev, rules, testbed, numerator, same_rows)


def _measure(claim, q, ev, tables, rules, testbed, alternative, blank):
    """(row, the numerator alternative judged, whether both sides are the same rows) or (None, ...)."""
    unbuilt = [a for a in claim.artifact_ids if a not in ev.built]
    if len(unbuilt) == len(claim.artifact_ids):
        left = [a for a in unbuilt if a in ev.left_out]
        blank.note = (f"report.artifacts leaves out {', '.join(left)}" if left
                      else f"no rule of this workflow builds {', '.join(unbuilt)}")
        return None, None, False
    if q.measure in ("sites", "share"):
        for a in claim.artifact_ids:
            if a in ev.exit_tables:
                row = (_sites(q, ev.exit_tables[a], testbed, rules) if q.measure == "sites"
                       else _share(q, ev.exit_tables[a]))
                if row is not None:
                    return row, None, False
        return None, None, False
    if not q.is_ratio:
        return None, None, False
    alternatives = selector_alternatives(resolve_placeholders(q.numerator, ev.defaults))
    numerator = alternatives[alternative or 0] if len(alternatives) == 1 or alternative is not None else None
    if alternative is None:   # a figure's summary (drawn by the figure or a stage's own rule)
        for fig in [q.figure, *claim.artifact_ids]:
            if fig and fig in ev.ratios and (row := _ratio_from_summary(q, ev.ratios[fig], claim.id)) is not None:
                return row, numerator, False
    found = _ratio_from_tables(q, tables, ev, alternative)
    if found is None:
        for a in claim.artifact_ids:   # a table artifact's own long-form CSV (metric, value columns)
            if a in ev.exit_tables:
                # its own columns, selected as the claim names them (no default condition)
                found = _ratio_from_tables(q, _Tables([ev.exit_tables[a]], long_form=False), ev, alternative,
                                           defaults={})
                if found is not None:
                    break
    if found is None:
        return None, None, False
    row, judged = found
    return row, numerator if numerator is not None else judged["numerator"], judged["same_rows"]


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


def command_for(claim: Claim, ev: Evidence) -> str:
    targets = [t for a in claim.artifact_ids if a in ev.built for t in ev.targets.get(a, [])]
    if not targets:
        if any(a in ev.left_out for a in claim.artifact_ids):
            return "left out of this table by report.artifacts"
        return "not built by any rule of this workflow yet"
    if "{targets}" in ev.command:
        return ev.command.replace("{targets}", " ".join(targets))
    return f"{ev.command} {' '.join(targets)}"


# --- the table -------------------------------------------------------------------------------------

def _claim_files(claim: Claim, ev: Evidence) -> list[str]:
    files = [t for a in claim.artifact_ids if a in ev.built for t in ev.targets.get(a, [])]
    files += [ev.ratios[a] for a in claim.artifact_ids if a in ev.ratios]
    files += [ev.exit_tables[a] for a in claim.artifact_ids if a in ev.exit_tables]
    return files


def compute_costs(ev: Evidence) -> dict[str, dict]:
    """{claim id: cost} from Snakemake's records of the working directory (see guestio.report.cost).
    A claim computed from a measurement table (no figure of its own) is charged that table."""
    records = load_records(ev.workdir)
    out = {}
    for claim in load_claims(ev.claims_file).values():
        files = _claim_files(claim, ev)
        if files and not any(a in ev.ratios for a in claim.artifact_ids):
            files += ev.tables
        c = closure_cost(files, records, ev.results) if files else Cost()
        out[claim.id] = {"run_s": round(c.run_s, 1), "build_s": round(c.build_s, 1), "run_bytes": c.run_bytes,
                         "build_bytes": c.build_bytes, "jobs": c.jobs}
    return out


def _decided_by(rows: Sequence[QuantityRow], verdict: str) -> QuantityRow | None:
    return next((r for r in rows if r.verdict == verdict), None)


def _verdict_text(verdict: str, decided: QuantityRow | None, rows: Sequence[QuantityRow], rules: dict) -> str:
    """The verdict, with "from emulation" where TCG's numbers decided it, and what the claim's
    mechanism (or check) showed when its effect could not be tested."""
    text = verdict
    if decided is not None and decided.from_emulation and verdict in RULE_VERDICTS:
        text += f" ({rules['emulation_note']})"
    if verdict in (NOT_TESTABLE, NOT_MEASURED):
        shown = [r for r in rows if r.role != "effect" and r.verdict in RULE_VERDICTS]
        if shown:
            text += "; " + "; ".join(f"{r.role} {r.name}: {r.verdict}" for r in shown)
    return text


def build(ev: Evidence, costs: Mapping[str, Mapping] | None = None) -> list[ClaimRow]:
    """The claims table's rows; ``costs`` as compute_costs() gives (computed here when None)."""
    rules = verdict_rules()
    # "{sched_host}": the host scheduler that stood in for the paper's CFQ here (CONDITION_DEFAULTS)
    claims = resolve_placeholders(load_claims(ev.claims_file), ev.defaults)
    tables = _Tables(ev.tables)
    testbed = testbed_of(ev, rules)
    costs = compute_costs(ev) if costs is None else costs
    out = []
    for claim in claims.values():
        qrows = [r for q in claim.quantities for r in judge_quantity(claim, q, ev, tables, rules, testbed)]
        verdict = claim_verdict([r.verdict for r in qrows], rules)
        decided = _decided_by(qrows, verdict)
        measured = [r for r in qrows if r.accelerator]
        accs = sorted({a for r in measured for a in accelerators_of(r.accelerator)})
        emulation = bool(decided and decided.from_emulation)
        sources = [s for r in measured for s in r.source.split(", ") if s]
        c = costs.get(claim.id) or {}
        cost = Cost(c.get("run_s", 0.0), c.get("build_s", 0.0), c.get("run_bytes", 0), c.get("build_bytes", 0),
                    c.get("jobs", 0))
        out.append(ClaimRow(claim.id, claim.paper_id, claim.statement, list(claim.artifact_ids), qrows, verdict,
                            ", ".join(accs) or "-", emulation, _verdict_text(verdict, decided, qrows, rules),
                            setting_text(claim.id, sources, ev), command_for(claim, ev), cost, claim.note,
                            decided))
    return out


CLAIM_COLUMNS = ["paper_id", "claim", "statement", "verdict", "decided_by", "decided_value", "n", "reason",
                 "would_test", "measured", "accelerator", "from_emulation", "setting", "command", "run_time_s",
                 "build_time_s", "run_disk_bytes", "build_disk_bytes", "note"]
QUANTITY_COLUMNS = ["paper_id", "claim", "quantity", "route", "role", "label", "paper", "value", "ci_low", "ci_high",
                    "n_numerator", "n_denominator", "measured", "verdict", "reason", "would_test", "accelerator",
                    "from_emulation", "source", "note"]


def _measured_summary(row: ClaimRow) -> str:
    return "; ".join(f"{q.name}: {q.measured}" for q in row.quantities if q.verdict is not None) or "-"


def _decided_fields(row: ClaimRow) -> tuple[str, str, str]:
    d = row.decided_by
    if d is None:
        return "-", "-", "-"
    return d.name, d.measured, d.n_text


def claims_frame(rows: Sequence[ClaimRow]) -> pd.DataFrame:
    records = []
    for r in rows:
        decided, value, n = _decided_fields(r)
        records.append({
            "paper_id": r.paper_id, "claim": r.claim, "statement": r.statement, "verdict": r.verdict,
            "decided_by": decided, "decided_value": value, "n": n, "reason": r.reason, "would_test": r.would_test,
            "measured": _measured_summary(r), "accelerator": r.accelerator, "from_emulation": r.from_emulation,
            "setting": r.setting, "command": r.command,
            "run_time_s": round(r.cost.run_s, 1) if r.cost.known else None,
            "build_time_s": round(r.cost.build_s, 1) if r.cost.known else None,
            "run_disk_bytes": r.cost.run_bytes if r.cost.known else None,
            "build_disk_bytes": r.cost.build_bytes if r.cost.known else None,
            "note": r.note})
    return pd.DataFrame(records, columns=CLAIM_COLUMNS)


def quantities_frame(rows: Sequence[ClaimRow]) -> pd.DataFrame:
    return pd.DataFrame([{
        "paper_id": q.paper_id, "claim": q.claim, "quantity": q.quantity, "route": q.route, "role": q.role,
        "label": q.label, "paper": q.paper, "value": q.value, "ci_low": q.low, "ci_high": q.high,
        "n_numerator": q.n_numerator, "n_denominator": q.n_denominator, "measured": q.measured,
        "verdict": q.verdict if q.verdict is not None else "-", "reason": q.reason, "would_test": q.would_test,
        "accelerator": q.accelerator or "-", "from_emulation": q.from_emulation, "source": q.source, "note": q.note}
        for r in rows for q in r.quantities], columns=QUANTITY_COLUMNS)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _run_text(run: str) -> str:
    """A run as Markdown: the command part (from ".venv/") in backticks."""
    i = run.find(".venv/")
    return run if i < 0 else f"{run[:i]}`{run[i:]}`"


def markdown(rows: Sequence[ClaimRow], *, title: str = "The paper's claims, as measured here") -> str:
    rules = verdict_rules()
    counts = {v: sum(r.verdict == v for r in rows) for v in rules["verdicts"]}
    lines = [f"# {title}", "",
             "One row per claim of the paper (PAPER.md: Fig 1-7, Tables 1-4, §3.2.2). Verdicts by the rules stated "
             "once in `workflow/guestio/report/verdicts.yaml`, applied to the quantities of "
             "`workflow/guestio/analysis/claims.yaml`; intervals are 95% bootstrap CIs (seeded), n the independent "
             "runs of each side. \"reproduced\" needs the CI to exclude no effect on the claimed side (and the "
             "point near the paper's number where it gives one); timing under TCG is the emulator's, so a "
             "timing quantity of a TCG run is \"not testable here\", with the run that would test it. "
             f"A verdict from TCG's numbers (modelled exits, timer interrupts) says \"{rules['emulation_note']}\".",
             "", "Verdicts: " + ", ".join(f"{v}: {n}" for v, n in counts.items()) + ".", "",
             "| claim | paper says | verdict | decided by (95% CI, n) | reason | would test it | accelerator | cost |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        decided, value, n = _decided_fields(r)
        lines.append("| " + " | ".join(_cell(x) for x in (
            r.paper_id, r.statement, r.verdict_text, f"{decided}: {value}, {n}" if r.decided_by else "-",
            r.reason or "-", _run_text(r.would_test) if r.would_test else "-", r.accelerator,
            r.cost.text())) + " |")
    lines += ["", "## Each claim", ""]
    for r in rows:
        lines += [f"### {r.paper_id}: {r.verdict_text}", "", f"*Paper:* {r.statement}", ""]
        lines += ["| quantity | role | paper | here (95% CI) | n | verdict | reason | accelerator |",
                  "|---|---|---|---|---|---|---|---|"]
        for q in r.quantities:
            lines.append("| " + " | ".join(_cell(x) for x in (
                q.name, q.role, q.paper, q.measured, q.n_text, q.verdict or "does not vote", q.reason or "-",
                q.accelerator or "-")) + " |")
        lines.append("")
        notes = [f"- {q.name}: {q.note}" + (f" (from {q.source})" if q.source else "")
                 for q in r.quantities if q.note or q.source]
        if notes:
            lines += notes + [""]
        if r.would_test:
            lines += [f"*Would test it:* {_run_text(r.would_test)}", ""]
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


if __name__ == "__main__":
    import sys
    ev = evidence_for_results(sys.argv[1] if len(sys.argv) > 1 else "results")
    sys.stdout.write(markdown(build(ev)))
