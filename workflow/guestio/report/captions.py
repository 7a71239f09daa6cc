"""Captions of the Snakemake report (``snakemake --report report.html``).

The caption templates are ``workflow/report/*.rst``; Snakemake renders them with Jinja2 and
hands them the job's ``snakemake.params``.  The report rules (``workflow/rules/report.smk``)
pass a ``ReportFacts`` there, whose methods read the artifacts' files *when the report is
made* and return reStructuredText: the claim, the measured ratio with its CI, the accelerator,
the QEMU and kernel variants, and what is missing.  Its ``repr`` is constant, so it never
makes Snakemake rerun a job (params are a rerun trigger).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from guestio.analysis.claim_model import Claim
from guestio.analysis.claims import load_artifacts, load_claims
from guestio.analysis.placeholders import resolve_placeholders


def _esc(text: Any) -> str:
    """Plain text made safe inside reStructuredText (no markup, no substitutions)."""
    s = " ".join(str(text).split())
    for ch in "\\*`|_":
        s = s.replace(ch, "\\" + ch)
    return s


def _read_json(path: str | None) -> dict:
    if not path or not Path(path).is_file():
        return {}
    try:
        return json.loads(Path(path).read_text())
    except ValueError:
        return {}


def provenance_line(prov: Mapping) -> str:
    """"accelerator tcg; QEMU stock 7.2.22; kernels baseline (base+hz1000), pmtmr (...)"."""
    parts = []
    acc = prov.get("accelerator")
    if isinstance(acc, Mapping):
        parts.append(f"accelerator {acc.get('accelerator', '?')}" +
                     (f" ({acc['reason']})" if acc.get("reason") and acc.get("accelerator") != "kvm" else ""))
    elif acc:
        parts.append(f"accelerator {acc}")
    qemus = prov.get("qemus") if isinstance(prov.get("qemus"), Mapping) else None
    if qemus is None and isinstance(prov.get("qemu"), Mapping):
        qemus = {prov["qemu"].get("variant", "?"): prov["qemu"]}
    if qemus:
        parts.append("QEMU " + ", ".join(
            f"{name} {q.get('version', '')}".strip() + (f" (patches: {', '.join(Path(str(p.get('file', p))).name for p in q['patches'])})"
                                                       if q.get("patches") else "")
            for name, q in qemus.items() if isinstance(q, Mapping)))
    kernels = prov.get("kernels")
    if isinstance(kernels, Mapping) and kernels:
        parts.append("kernels " + ", ".join(
            f"{v} ({'+'.join(k.get('layers', []))}, Linux {k.get('source', {}).get('kernelversion', '?')})"
            for v, k in kernels.items() if isinstance(k, Mapping)))
    elif isinstance(prov.get("kernel"), Mapping):
        k = prov["kernel"]
        parts.append(f"kernel {k.get('variant', '?')} ({'+'.join(k.get('layers', []))})")
    commit = prov.get("guestio", {}) if isinstance(prov.get("guestio"), Mapping) else {}
    if commit.get("commit"):
        parts.append(f"guestio {commit['commit'][:12]}{' (dirty tree)' if commit.get('dirty') else ''}")
    return "; ".join(parts)


@dataclass
class ReportFacts:
    """What the report's captions say, read from the files when the caption is rendered.

    figures:    figure id -> {"png", "ratios", "provenance"} paths
    tables:     artifact id -> {"csv", "markdown", "provenance"} paths (exit tables)
    data:       measurement table name -> {"csv", "provenance"}
    expected:   artifact id -> files that should exist once it is built
    claims_csv: results/claims.csv
    """

    figures: dict[str, dict[str, str]] = field(default_factory=dict)
    tables: dict[str, dict[str, str]] = field(default_factory=dict)
    data: dict[str, dict[str, str]] = field(default_factory=dict)
    expected: dict[str, list[str]] = field(default_factory=dict)
    claims_csv: str = "results/claims.csv"
    claims_md: str = "results/claims.md"
    claims_file: str | None = None
    placeholders: dict[str, str] = field(default_factory=dict)   # claims.yaml "{name}" -> this run's value

    def __repr__(self) -> str:  # constant: params are a rerun trigger
        return "ReportFacts()"

    # --- pieces ---------------------------------------------------------------------------------
    def _claim_of(self, artifact: str) -> Claim | None:
        for c in load_claims(self.claims_file).values():
            if artifact in c.artifact_ids:
                return c
        return None

    def _verdict_of(self, claim_id: str) -> str | None:
        if not Path(self.claims_csv).is_file():
            return None
        df = pd.read_csv(self.claims_csv, dtype=str)
        row = df[df.claim == claim_id]
        if row.empty:
            return None
        r = row.iloc[0]
        verdict = r.verdict + (" (from emulation, TCG)" if str(r.from_emulation) == "True" else "")
        reason = str(r.get("reason", "") or "")
        return verdict + (f": {reason}" if reason and r.verdict != "reproduced" else "")

    def missing(self) -> list[tuple[str, list[str]]]:
        """(artifact, its missing files) for every artifact a rule builds but this run lacks."""
        return [(a, [f for f in files if not Path(f).exists()]) for a, files in self.expected.items()
                if any(not Path(f).exists() for f in files)]

    def not_built(self) -> list[str]:
        arts = load_artifacts(self.claims_file)
        return [f"{a.paper_id} ({aid})" for aid, a in arts.items() if aid not in self.expected]

    def missing_rst(self) -> str:
        lines = []
        missing = self.missing()
        if missing:
            lines.append("**Missing from this run** (the report shows what exists; "
                         "run ``snakemake --cores all`` to make the rest):")
            lines.append("")
            for a, files in missing:
                lines.append(f"- {_esc(a)}: " + ", ".join(f"``{f}``" for f in files))
            lines.append("")
        nb = self.not_built()
        if nb:
            lines.append("**Not built by any rule of this workflow** (or left out by report.artifacts; \"not measured here\"): "
                         + _esc(", ".join(nb)) + ".")
            lines.append("")
        if not lines:
            lines.append("Every artifact this workflow builds is present.")
        return "\n".join(lines)

    # --- captions -------------------------------------------------------------------------------
    def claims_rst(self) -> str:
        out = ["The paper's claims as measured here: one row per claim of the paper, with the verdict "
               "(rule: ``workflow/guestio/report/verdicts.yaml``) and the regenerating command and cost "
               "in ``results/claims.md``.", ""]
        if not Path(self.claims_csv).is_file():
            out += [f"**The claims table has not been made yet** (``{self.claims_csv}`` is missing): "
                    "run ``snakemake --cores all claims``. Shown instead: the claims file itself.", ""]
        else:
            df = pd.read_csv(self.claims_csv, dtype=str).fillna("")
            out += [".. list-table::", "   :header-rows: 1", "",
                    "   * - claim", "     - paper says", "     - verdict", "     - decided by (95% CI, n)",
                    "     - reason", "     - would test it", "     - accelerator"]
            for r in df.to_dict("records"):
                verdict = r["verdict"] + (" (from emulation, TCG)" if r.get("from_emulation") == "True" else "")
                decided = (f"{r['decided_by']}: {r.get('decided_value', '')}, {r.get('n', '')}"
                           if r.get("decided_by", "-") not in ("", "-") else r.get("measured", "-"))
                out += [f"   * - {_esc(r['paper_id'])}", f"     - {_esc(r['statement'])}", f"     - **{_esc(verdict)}**",
                        f"     - {_esc(decided)}", f"     - {_esc(r.get('reason', '') or '-')}",
                        f"     - {_esc(r.get('would_test', '') or '-')}", f"     - {_esc(r['accelerator'])}"]
            out.append("")
        out.append(self.missing_rst())
        return "\n".join(out)

    def _heading(self, artifact: str, title) -> list[str]:
        """The artifact's name and title (title(artifact) of its claims.yaml entry), the paper's
        claim and the verdict here, as the first lines of its caption."""
        art = load_artifacts(self.claims_file).get(artifact)
        heading = resolve_placeholders(title(art), self.placeholders) if art else ""
        out = [f"**{_esc(art.paper_id if art else artifact)}: {_esc(heading)}**", ""]
        claim = self._claim_of(artifact)
        if claim:
            out += [f"*Paper:* {_esc(claim.statement)}", ""]
            verdict = self._verdict_of(claim.id)
            if verdict:
                out += [f"*Verdict here:* **{_esc(verdict)}**", ""]
        return out

    def figure_rst(self, fig: str) -> str:
        files = self.figures.get(fig, {})
        out = self._heading(fig, lambda art: art.title or art.what)
        ratios = files.get("ratios")
        if ratios and Path(ratios).is_file():
            from guestio.analysis.figure_data import format_ratio
            # The network figures' summaries (guestio.net.figures.SUMMARY_COLUMNS) call it "label".
            df = pd.read_csv(ratios).rename(columns={"label": "ratio_label"})
            for r in df.itertuples(index=False):
                paper = r.paper if isinstance(r.paper, str) else "not stated"
                out.append(f"- {_esc(r.ratio_label)} ({_esc(r.numerator)} / {_esc(r.denominator)}): "
                           f"{_esc(format_ratio(r.ratio, r.ci_low, r.ci_high))}, paper: {_esc(paper)}; "
                           f"accelerator {_esc(r.accelerator)}, n = {r.n_numerator} / {r.n_denominator}")
            out.append("")
        prov = provenance_line(_read_json(files.get("provenance")))
        if prov:
            out += [f"*Run:* {_esc(prov)}", ""]
        return "\n".join(out)

    def table_rst(self, artifact: str) -> str:
        files = self.tables.get(artifact, {})
        out = self._heading(artifact, lambda art: art.what)
        csv = files.get("csv")
        if csv and Path(csv).is_file():
            df = pd.read_csv(csv, dtype=str)
            accs = sorted(set(df["accelerator"].dropna())) if "accelerator" in df.columns else []
            if accs:
                modelled = any(a.endswith("modelled") for a in accs)
                out += [f"*Accelerator:* {_esc(', '.join(accs))}" +
                        (" (modelled exits: TCG has no VM exits; a QEMU plugin counts the instructions that "
                         "would exit under VMX)" if modelled else ""), ""]
            if "variant" in df.columns:
                out += [f"*Kernel variants:* {_esc(', '.join(dict.fromkeys(df['variant'].dropna())))}", ""]
        prov = provenance_line(_read_json(files.get("provenance")))
        if prov:
            out += [f"*Run:* {_esc(prov)}", ""]
        md = files.get("markdown")
        if md:
            out += [f"The full table with every phase and variant: ``{md}``.", ""]
        return "\n".join(out)

    def data_rst(self, name: str) -> str:
        files = self.data.get(name, {})
        out = [f"**Long-form measurement table** ``{name}``: one row per measurement (experiment, condition, "
               "repetition, metric, value, unit); the figures and the claims table are computed from it.", ""]
        prov = provenance_line(_read_json(files.get("provenance")))
        if prov:
            out += [f"*Run:* {_esc(prov)}", ""]
        csv = files.get("csv")
        if csv and Path(csv).is_file():
            df = pd.read_csv(csv, dtype=str)
            out += [f"{len(df)} rows; metrics: {_esc(', '.join(sorted(set(df['metric']))))}.", ""]
        return "\n".join(out)

    def caption(self, entry: str) -> str:
        """The caption of a report entry (``claims``, ``figure-<id>``, ``table-<id>``, ``data-<name>``)."""
        kind, _, name = entry.partition("-")
        if kind == "claims":
            return self.claims_rst()
        if kind == "figure":
            return self.figure_rst(name)
        if kind == "table":
            return self.table_rst(name)
        if kind == "data":
            return self.data_rst(name)
        return ""
