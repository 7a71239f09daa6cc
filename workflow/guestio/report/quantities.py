"""One quantity of a claim, measured from the evidence and judged: its ``QuantityRow``s.

* ratio quantities a figure draws are read from the figure's ratio summary
  (``figures/<fig>-ratios.csv``), unless the quantity's numerator routes are judged apart;
* other ratio quantities are computed from the long-form measurement tables with the same
  seeded bootstrap as the figures (``guestio.report.evidence.ratios_by``);
* exit-site quantities are read from the exit tables (``tables/<artifact>.csv``, the exit schema);
* an artifact that no rule of this workflow builds, or whose files hold no rows for a quantity,
  gives "not measured here".

``judge_quantity`` applies the steps of ``verdicts.yaml`` (``guestio.report.verdicts``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from guestio.analysis.claim_model import Claim, Quantity, selector_alternatives
from guestio.analysis.placeholders import resolve_placeholders
from guestio.report.evidence import (Evidence, MeasurementTables, build_hashes, command_for, match_rows, ratios_by,
                                     selector_list, testbed_of)
from guestio.report.verdicts import (NOT_MEASURED, TESTBED_KEYS, aa_comparison, accelerator_unmet, accelerators_of,
                                     judge_numbers, judge_sites, testbed_unmet, unmet_judgement, unmet_requirements,
                                     verdict_of)


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


def ratio_text(v: float, low: float, high: float) -> str:
    from guestio.analysis.figure_data import format_ratio
    return format_ratio(v, low, high)


def _row_from_ratio(q: Quantity, r: Mapping, others: Sequence[Mapping] = ()) -> QuantityRow:
    row = QuantityRow("", "", q.id, q.label, q.paper.text, r["ratio"], r["low"], r["high"],
                      ratio_text(r["ratio"], r["low"], r["high"]), accelerator=r["accelerator"],
                      source=", ".join(r["sources"]), n_numerator=r["n_numerator"], n_denominator=r["n_denominator"])

    def what(x):
        alt = ", ".join(f"{k} {v}" for k, v in x["numerator"].items() if k != "target")
        return f"{alt}, {x['device']}"
    row.note = what(r)
    if others:
        row.note += "; also " + "; ".join(f"{what(x)}: {ratio_text(x['ratio'], x['low'], x['high'])}" for x in others)
    return row


def _ratio_from_tables(q: Quantity, tables: MeasurementTables, ev: Evidence, alternative: int | None = None,
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
                      float(first.ci_high), ratio_text(float(first.ratio), float(first.ci_low), float(first.ci_high)),
                      accelerator=str(first.accelerator), source=path,
                      n_numerator=int(first.n_numerator), n_denominator=int(first.n_denominator))
    row.note = f"{first.numerator} / {first.denominator}"
    if len(rows) > 1:
        row.note += "; also " + "; ".join(f"{r.numerator}: {ratio_text(r.ratio, r.ci_low, r.ci_high)}"
                                          for r in rows.iloc[1:].itertuples(index=False))
    return row


def _exit_rows(q: Quantity, path: str) -> pd.DataFrame | None:
    if not Path(path).is_file():
        return None
    df = pd.read_csv(path, dtype=str)
    sel = df[match_rows(df, selector_list(q.condition), {})] if q.condition else df
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


def judge_quantity(claim: Claim, q: Quantity, ev: Evidence, tables: MeasurementTables,
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
        j = unmet_judgement(unmet, ", ".join(f"{k} {testbed.get(k)}" for k in TESTBED_KEYS))
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
            j = unmet_judgement(unmet, row.accelerator or "accelerator not recorded")
            row.verdict, row.reason, row.would_test = j.verdict, j.reason, j.run
        return row
    if q.measure == "share":   # one exit run: judged on its count (step 7)
        unmet = accelerator_unmet(q.requires, row.accelerator, rules)
        j = (unmet_judgement(unmet, row.accelerator) if unmet
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
                found = _ratio_from_tables(q, MeasurementTables([ev.exit_tables[a]], long_form=False), ev, alternative,
                                           defaults={})
                if found is not None:
                    break
    if found is None:
        return None, None, False
    row, judged = found
    return row, numerator if numerator is not None else judged["numerator"], judged["same_rows"]
