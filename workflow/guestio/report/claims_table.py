"""Every claim of the paper with its verdict as measured here: ``results/claims.{md,csv}``.

The claims, their quantities and verdict rules are data (``guestio/analysis/claims.yaml``); how
a quantity gets its verdict (requirements of the run, A/A comparisons, the number of runs, the
rule on the CI) and how a claim's verdict follows from its quantities' is data too
(``verdicts.yaml``, applied by ``guestio.report.verdicts``); where the paper's setting differs in
a way that can decide a claim is ``settings.yaml``.  Each quantity is measured from what exists
(``guestio.report.evidence``) and judged by ``guestio.report.quantities``; this module makes the
table of them.

``build(evidence)`` returns the rows; ``write(rows, ...)`` the files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import pandas as pd

from guestio.analysis.claim_model import Claim
from guestio.analysis.claims import load_claims
from guestio.analysis.placeholders import resolve_placeholders
from guestio.report.cost import Cost, closure_cost, load_records
from guestio.report.evidence import (Evidence, MeasurementTables, command_for, config_value, evidence_for_results,
                                     testbed_of)
from guestio.report.quantities import QuantityRow, judge_quantity
from guestio.report.verdicts import (NOT_MEASURED, NOT_TESTABLE, RULE_VERDICTS, accelerators_of, claim_verdict,
                                     settings, verdict_rules)
from guestio.util import write_text_atomic


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


# --- settings -------------------------------------------------------------------------------------


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
            used = config_value(run_config, key)
            origin = "the run's provenance"
            if used is None:
                used, origin = config_value(ev.config, key), "this invocation's config"
            paper = entry.get("paper")
            if used is not None and str(used) == str(paper):
                text += f" This run used the paper's setting ({key}: {used}, from {origin})."
            else:
                text += (f" Here {key}: {used if used is not None else 'unknown'} (from {origin}); the paper's "
                         f"setting is {key}: {paper}" + (f", run with `{entry['run']}`" if entry.get("run") else "")
                         + ".")
        parts.append(text)
    return " ".join(parts)


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
    tables = MeasurementTables(ev.tables)
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


if __name__ == "__main__":
    import sys
    ev = evidence_for_results(sys.argv[1] if len(sys.argv) > 1 else "results")
    sys.stdout.write(markdown(build(ev)))
