"""What the claims, report and bundle rules take in: which artifacts this workflow builds (and
report.artifacts selects), their files, the evidence the claims table reads, the report entries
and their captions' facts, and the render specs of the bundle.

It reads the plan (guestio.plan) and the rules through a :class:`~guestio.report.workflow_view.WorkflowView`,
at DAG time, when every rule file has been included.
"""

from __future__ import annotations

import os

from guestio.analysis import claims as claims_model
from guestio.report.bundle import render_spec
from guestio.report.captions import ReportFacts
from guestio.report.evidence import Evidence

#: The files whose content decides a verdict: editing one redoes the claims table.
REPORT_CODE = ([f"workflow/guestio/analysis/{n}" for n in
                ("claims.yaml", "claims.py", "claim_model.py", "claims_check.py", "placeholders.py")]
               + [f"workflow/guestio/report/{n}" for n in
                  ("claims_table.py", "evidence.py", "quantities.py", "verdicts.py", "verdicts.yaml", "settings.yaml",
                   "cost.py")])

#: Rules that take seconds and need no node, besides every artifact's own builder: under a cluster
#: executor (profiles/slurm) they run on the submitting host.
LOCAL_RULES = {"figure", "measurement_table", "claims_cost", "claims_table", "claims", "report_entry",
               "render_specs", "bundle", "all", "fig1", "fig2", "fig6"}


class ReportPlan:
    def __init__(self, plan, view, config: dict) -> None:
        self.plan = plan
        self.view = view
        self.config = config
        results = plan.results
        self.claims_md = f"{results}/claims.md"
        self.claims_csv = f"{results}/claims.csv"
        self.claims_quantities = f"{results}/claims-quantities.csv"
        self.claims_cost = f"{results}/claims-cost.json"
        # Beyond the paper (report.beyond): made by rule beyond, shown in the report beside the claims.
        self.beyond = {"markdown": f"{results}/beyond.md", "csv": f"{results}/beyond.csv"}
        self.beyond_on = bool((config.get("report") or {}).get("beyond"))
        self.beyond_targets = list(self.beyond.values()) if self.beyond_on else []
        self.report_dir = f"{results}/report"
        self.bundle = plan.bundle
        self.artifacts = (config.get("report") or {}).get("artifacts")   # None: all that are built
        self.code = [str(view.repo / f) for f in REPORT_CODE]

    # ------------------------------------------------------------------ what is built

    def _all_built(self) -> list[str]:
        return [aid for aid, art in claims_model.load_artifacts().items()
                if self.view.is_rule(art.built_by) and (art.built_by != "figure" or aid in self.plan.figures)]

    def built_artifacts(self) -> dict[str, dict]:
        """artifact id -> {"kind", "rule", "files", "csv", ...} for the artifacts a rule of this
        workflow builds (and report.artifacts selects)."""
        out = {}
        for aid, art in claims_model.load_artifacts().items():
            if not self.view.is_rule(art.built_by):
                continue
            if self.artifacts is not None and aid not in self.artifacts:
                continue
            if art.built_by == "figure":
                if aid in self.plan.figures:
                    files = self.plan.figure_files(aid)
                    out[aid] = {"kind": "figure", "rule": "figure", "wildcards": {"fig": aid}, "files": files,
                                "csv": self.plan.figure_ratios(aid), "png": files[1],
                                "table": self.plan.figures[aid]}
                continue
            outputs = self.view.plain_outputs(art.built_by)
            if outputs:
                out[aid] = self._stage_artifact(art.built_by, outputs)
        return out

    def _stage_artifact(self, rule: str, outputs: list[tuple[str | None, str]]) -> dict:
        """A stage's own rule: a figure (a PNG and its "-ratios.csv" summary) or a table (a CSV)."""
        pngs = [p for _, p in outputs if p.endswith(".png")]
        ratios = [p for _, p in outputs if p.endswith("-ratios.csv")]
        csvs = [p for _, p in outputs if p.endswith(".csv") and p not in ratios]
        named = [p for n, p in outputs if n == "csv" and p not in ratios]
        mds = [p for _, p in outputs if p.endswith(".md")]
        entry = {"kind": "figure" if pngs else "table", "rule": rule, "wildcards": {},
                 "files": [p for _, p in outputs], "markdown": (mds or [None])[0], "png": (pngs or [None])[0]}
        entry["csv"] = (ratios or [None])[0] if pngs else (named or csvs or [None])[0]
        entry["provenance"] = self.view.input_provenance(rule)
        return entry

    def report_tables(self) -> list[str]:
        """The measurement tables taken in: all, or those the selected artifacts (report.artifacts)
        are made from, i.e. a figure's own table or the tables that a table artifact's builder
        reads (coalesce, for Table 4)."""
        tables = self.plan.tables
        if self.artifacts is None:
            return list(tables)
        wanted = set()
        for built in self.built_artifacts().values():   # already narrowed to report.artifacts
            if built["kind"] == "figure":
                wanted.add(built.get("table"))
            else:
                inputs = self.view.plain_inputs(built["rule"])
                wanted |= {name for name in tables if self.plan.table_files(name)["csv"] in inputs}
        return [name for name in tables if name in wanted]

    def artifact_files(self) -> list[str]:
        """Every file of every built artifact, and the measurement tables with their provenance."""
        files = [f for b in self.built_artifacts().values() for f in b["files"] + ([b["csv"]] if b["csv"] else [])]
        for name in self.report_tables():
            files += list(self.plan.table_files(name).values())
        return list(dict.fromkeys(files))

    # ------------------------------------------------------------------ claims

    def claims_evidence(self) -> Evidence:
        ev = Evidence(results=self.plan.results, seed=int(self.config["figures"]["seed"]),
                      command=self.view.command(), config=dict(self.config))
        if self.artifacts is not None:
            ev.left_out = sorted(set(self._all_built()) - set(self.artifacts))
        for aid, b in self.built_artifacts().items():
            ev.built.add(aid)
            ev.targets[aid] = list(b["files"])
            if b["kind"] == "figure":
                if b["csv"]:
                    ev.ratios[aid] = b["csv"]
            elif b["csv"]:
                ev.exit_tables[aid] = b["csv"]
        ev.tables = [self.plan.table_files(name)["csv"] for name in self.report_tables()]
        # Selectors match unnamed columns to their default, as the figures do: "-" where a column
        # does not apply, else the default condition's value.
        ev.defaults = {column: ["-", str(value)] for column, value in self.plan.condition_defaults.items()}
        return ev

    # ------------------------------------------------------------------ the report

    def report_facts(self) -> ReportFacts:
        facts = ReportFacts(claims_csv=self.claims_csv, claims_md=self.claims_md,
                            placeholders={"sched_host": self.plan.condition_defaults["sched_host"]})
        for aid, b in self.built_artifacts().items():
            facts.expected[aid] = list(b["files"])
            if b["kind"] == "figure":
                facts.figures[aid] = {"png": b["png"], "ratios": b["csv"] or "",
                                      "provenance": self.plan.table_files(b["table"])["provenance"]
                                      if b.get("table") else ""}
            else:
                facts.tables[aid] = {"csv": b["csv"], "markdown": b.get("markdown") or "",
                                     "provenance": b.get("provenance") or ""}
        for name in self.report_tables():
            facts.data[name] = self.plan.table_files(name)
        return facts

    def report_entries(self) -> dict[str, tuple[str, str, str, str]]:
        """entry -> (file shown, caption template, category, subcategory)."""
        arts = claims_model.load_artifacts()
        entries = {"claims": (self.claims_csv, "claims.rst", "1. Claims", "verdicts")}
        if self.beyond_on:
            entries["beyond"] = (self.beyond["csv"], "beyond.rst", "1. Claims", "beyond the paper")
        for aid, b in self.built_artifacts().items():
            if b["kind"] == "figure":
                entries[f"figure-{aid}"] = (b["png"], "figure.rst", "2. Figures", arts[aid].paper_id)
            elif b["csv"]:
                entries[f"table-{aid}"] = (b["csv"], "table.rst", "3. Tables", arts[aid].paper_id)
        for name in self.report_tables():
            entries[f"data-{name}"] = (self.plan.table_files(name)["csv"], "data.rst", "4. Measurements", name)
        return entries

    def report_targets(self) -> list[str]:
        return [f"{self.report_dir}/entries/{e}.txt" for e in self.report_entries()]

    def report_entry_input(self, entry: str) -> dict:
        """The file an entry shows, flagged for the report once it exists; before the claims table
        is made, claims.yaml stands in and the caption says what is missing."""
        path, caption, category, subcategory = self.report_entries()[entry]
        if os.path.exists(path):
            return {"shown": self.view.flag_for_report(path, caption, category, subcategory,
                                                       {"artifact": subcategory, "file": os.path.basename(path)})}
        shown = {"shown": path}
        if entry == "claims":
            claims_yaml = str(self.view.repo / "workflow" / "guestio" / "analysis" / "claims.yaml")
            shown["placeholder"] = self.view.flag_for_report(claims_yaml, "claims.rst", category, subcategory,
                                                             {"artifact": "claims", "file": "claims.yaml"})
        return shown

    # ------------------------------------------------------------------ the bundle

    def render_specs(self) -> list[dict]:
        """How each figure and table was rendered: rule, script, inputs, outputs, params (JSON
        values), for guestio.report.rerender.  Every built artifact and measurement table, and the
        claims table."""
        jobs = [(b["rule"], b["wildcards"]) for b in self.built_artifacts().values()]
        jobs = list({(r, tuple(sorted(w.items()))): (r, w) for r, w in jobs}.values())
        jobs = [("measurement_table", {"table": name}) for name in self.report_tables()] + jobs + [("claims_table", {})]
        if self.beyond_on:
            jobs.append(("beyond", {}))
        # only script rules can be re-rendered from their record
        return [render_spec(self.view.job(name, wc), self.view.repo)
                for name, wc in jobs if self.view.has_script(name)]

    def local_rules(self) -> list[str]:
        names = set(LOCAL_RULES)
        for art in claims_model.load_artifacts().values():
            if art.built_by and art.kind != "text":
                names.add(art.built_by)
        return sorted(n for n in names if self.view.is_rule(n))
