# What a run says about the paper, and how to hand it on:
#   claims   results/claims.{md,csv}: every claim of the paper with its verdict, on whatever exists
#   report   `snakemake --report report.html`: the claims table first, every figure and table
#            with a caption (claim, measured ratio, accelerator, QEMU and kernel variants)
#   bundle   results/bundle/guestio-bundle.tar.gz: workflow, config, envs, data, provenance,
#            logs, figures and tables, sha256 manifest, RO-Crate; `python3 rerender.py` inside it
#            re-renders every figure and table offline, byte-identically.
# The functions of report.smk (the rules are there): what is built, the claims evidence, the
# report entries and captions, the render specs of the bundle.  Read what the other stages
# registered (PLAN.figures, PLAN.tables, rules), so they run at DAG time or after every include.

import os
import sys

import guestio.analysis.claims
from guestio.report.captions import ReportFacts
from guestio.report.evidence import Evidence
from snakemake.sourcecache import infer_source_file

CLAIMS_MD = f"{RESULTS}/claims.md"
CLAIMS_CSV = f"{RESULTS}/claims.csv"
CLAIMS_QUANTITIES = f"{RESULTS}/claims-quantities.csv"
CLAIMS_COST = f"{RESULTS}/claims-cost.json"
# Beyond the paper (report.beyond): made by rule beyond, shown in the report beside the claims.
BEYOND = {"markdown": f"{RESULTS}/beyond.md", "csv": f"{RESULTS}/beyond.csv"}
BEYOND_ON = bool((config.get("report") or {}).get("beyond"))
BEYOND_TARGETS = list(BEYOND.values()) if BEYOND_ON else []
REPORT_DIR = f"{RESULTS}/report"
BUNDLE = f"{RESULTS}/bundle/guestio-bundle.tar.gz"
REPORT_CODE = [str(REPO / "workflow" / "guestio" / "analysis" / n)
               for n in ("claims.yaml", "claims.py", "claim_model.py", "claims_check.py", "placeholders.py")] + [
    str(REPO / "workflow" / "guestio" / "report" / n)
    for n in ("claims_table.py", "evidence.py", "quantities.py", "verdicts.py", "verdicts.yaml", "settings.yaml",
              "cost.py")]


def _plain_outputs(rule_name):
    """The wildcard-free outputs of a rule, by name where it names them."""
    r = workflow.get_rule(rule_name)
    names = {i: n for n, (start, end) in r.output._names.items() for i in range(start, end or start + 1)}
    return [(names.get(i), str(o)) for i, o in enumerate(r.output) if "{" not in str(o)]

REPORT_ARTIFACTS = (config.get("report") or {}).get("artifacts")   # None: all that are built

def _input_provenance(rule_name):
    """The provenance of what a table's job reads (a table's .provenance.json), or the
    provenance.json beside its first run file (an exit run's); "" if none."""
    try:
        inputs, *_ = workflow.get_rule(rule_name).expand_input({})
    except Exception:   # an input function that needs wildcards or a checkpoint: no provenance shown
        return ""
    for f in map(str, inputs):
        if Path(f).name.endswith("provenance.json"):
            return f
        if f.endswith(".csv"):
            return str(Path(f).with_name("provenance.json"))
    return ""


def _all_built():
    return [aid for aid, art in guestio.analysis.claims.load_artifacts().items()
            if art.built_by and workflow.is_rule(art.built_by) and (art.built_by != "figure" or aid in PLAN.figures)]


def built_artifacts():
    """artifact id -> {"kind", "rule", "files", "csv"} for the artifacts a rule of this workflow builds
    (and report.artifacts selects)."""
    out = {}
    for aid, art in guestio.analysis.claims.load_artifacts().items():
        if not art.built_by or not workflow.is_rule(art.built_by):
            continue
        if REPORT_ARTIFACTS is not None and aid not in REPORT_ARTIFACTS:
            continue
        if art.built_by == "figure":
            if aid in PLAN.figures:
                out[aid] = {"kind": "figure", "rule": "figure", "wildcards": {"fig": aid},
                            "files": PLAN.figure_files(aid), "csv": f"{RESULTS}/figures/{aid}-ratios.csv",
                            "png": PLAN.figure_files(aid)[1], "table": PLAN.figures[aid]}
            continue
        outputs = _plain_outputs(art.built_by)
        if not outputs:
            continue
        # A stage's own rule: a figure (a PNG and its "-ratios.csv" summary) or a table (a CSV).
        pngs = [p for n, p in outputs if p.endswith(".png")]
        ratios = [p for n, p in outputs if p.endswith("-ratios.csv")]
        csvs = [p for n, p in outputs if p.endswith(".csv") and p not in ratios]
        named = [p for n, p in outputs if n == "csv" and p not in ratios]
        mds = [p for n, p in outputs if p.endswith(".md")]
        entry = {"kind": "figure" if pngs else "table", "rule": art.built_by, "wildcards": {},
                 "files": [p for _, p in outputs], "markdown": (mds or [None])[0], "png": (pngs or [None])[0]}
        entry["csv"] = (ratios or [None])[0] if pngs else (named or csvs or [None])[0]
        entry["provenance"] = _input_provenance(art.built_by)
        out[aid] = entry
    return out

def _command():
    """The invocation's options; "{targets}" marks where the targets go (before the options that
    take several values)."""
    cmd = [".venv/bin/snakemake", "--cores", "all", "{targets}"]
    for f in workflow.overwrite_configfiles or []:
        cmd += ["--configfile", os.path.relpath(f)]
    overrides = getattr(workflow.config_settings, "config", None) or {}
    if overrides:
        cmd += ["--config"] + [f"{k}={v}" for k, v in overrides.items()]
    return " ".join(cmd)

def claims_evidence(all_tables=False):
    built = built_artifacts()
    ev = Evidence(results=RESULTS, seed=int(config["figures"]["seed"]), command=_command(), config=dict(config))
    if REPORT_ARTIFACTS is not None:
        ev.left_out = sorted(set(_all_built()) - set(REPORT_ARTIFACTS))
    for aid, b in built.items():
        ev.built.add(aid)
        ev.targets[aid] = list(b["files"])
        if b["kind"] == "figure":
            if b["csv"]:
                ev.ratios[aid] = b["csv"]
        elif b["csv"]:
            ev.exit_tables[aid] = b["csv"]
    ev.tables = [PLAN.table_files(name)["csv"] for name in (PLAN.tables if all_tables else report_tables())]
    # Selectors match unnamed columns to their default, as the figures do: "-" where a column
    # does not apply, else the default condition's value (PLAN.condition_defaults).
    ev.defaults = {column: ["-", str(value)] for column, value in PLAN.condition_defaults.items()}
    return ev

def report_tables():
    """The measurement tables taken in: all, or those the selected artifacts (report.artifacts)
    are made from, i.e. a figure's own table or the tables that a table artifact's builder
    reads (coalesce, for Table 4)."""
    if REPORT_ARTIFACTS is None:
        return list(PLAN.tables)
    wanted = set()
    for built in built_artifacts().values():   # already narrowed to report.artifacts
        if built["kind"] == "figure":
            wanted.add(built.get("table"))
        else:
            inputs = {str(f) for f in workflow.get_rule(built["rule"]).input if isinstance(f, str)}
            wanted |= {name for name in PLAN.tables if PLAN.table_files(name)["csv"] in inputs}
    return [name for name in PLAN.tables if name in wanted]

def artifact_files(wildcards=None):
    """Every file of every built artifact, and the measurement tables with their provenance."""
    files = [f for b in built_artifacts().values() for f in b["files"] + ([b["csv"]] if b["csv"] else [])]
    for name in report_tables():
        files += list(PLAN.table_files(name).values())
    return list(dict.fromkeys(files))

def report_facts():
    built = built_artifacts()
    facts = ReportFacts(claims_csv=CLAIMS_CSV, claims_md=CLAIMS_MD,
                        placeholders={"sched_host": PLAN.condition_defaults["sched_host"]})
    for aid, b in built.items():
        facts.expected[aid] = list(b["files"])
        if b["kind"] == "figure":
            facts.figures[aid] = {"png": b["png"], "ratios": b["csv"] or "",
                                  "provenance": PLAN.table_files(b["table"])["provenance"] if b.get("table") else ""}
        else:
            facts.tables[aid] = {"csv": b["csv"], "markdown": b.get("markdown") or "",
                                 "provenance": b.get("provenance") or ""}
    for name in report_tables():
        facts.data[name] = PLAN.table_files(name)
    return facts

def report_entries():
    """entry -> (file shown, caption template, category, subcategory)."""
    arts = guestio.analysis.claims.load_artifacts()
    entries = {"claims": (CLAIMS_CSV, "claims.rst", "1. Claims", "verdicts")}
    if BEYOND_ON:
        entries["beyond"] = (BEYOND["csv"], "beyond.rst", "1. Claims", "beyond the paper")
    for aid, b in built_artifacts().items():
        if b["kind"] == "figure":
            entries[f"figure-{aid}"] = (b["png"], "figure.rst", "2. Figures", arts[aid].paper_id)
        elif b["csv"]:
            entries[f"table-{aid}"] = (b["csv"], "table.rst", "3. Tables", arts[aid].paper_id)
    for name in report_tables():
        entries[f"data-{name}"] = (PLAN.table_files(name)["csv"], "data.rst", "4. Measurements", name)
    return entries

def _caption(name):
    # report() in an input function: Snakemake resolves no caption path there, so give it the file.
    return infer_source_file(str(REPO / "workflow" / "report" / name))

def report_entry_input(wildcards):
    path, caption, category, subcategory = report_entries()[wildcards.entry]
    shown = {"shown": path}
    if os.path.exists(path):
        shown["shown"] = report(path, caption=_caption(caption), category=category, subcategory=subcategory,
                                labels={"artifact": subcategory, "file": os.path.basename(path)})
    elif wildcards.entry == "claims":
        # Not made yet: the claims file stands in, and the caption says what is missing.
        shown["placeholder"] = report(str(REPO / "workflow" / "guestio" / "analysis" / "claims.yaml"),
                                      caption=_caption("claims.rst"), category=category, subcategory=subcategory,
                                      labels={"artifact": "claims", "file": "claims.yaml"})
    return shown

def report_targets():
    return [f"{REPORT_DIR}/entries/{e}.txt" for e in report_entries()]

def render_specs():
    """How each figure and table was rendered: rule, script, inputs, outputs, params (JSON values),
    for guestio.report.rerender.  Every built artifact and measurement table, and the claims table."""
    from guestio.report.bundle import render_spec
    jobs = [(b["rule"], b["wildcards"]) for b in built_artifacts().values()]
    jobs = list({(r, tuple(sorted(w.items()))): (r, w) for r, w in jobs}.values())
    jobs = [("measurement_table", {"table": name}) for name in report_tables()] + jobs + [("claims_table", {})]
    if BEYOND_ON:
        jobs.append(("beyond", {}))
    specs = []
    for name, wc in jobs:
        if not workflow.is_rule(name) or workflow.get_rule(name).script is None:
            continue   # only script rules can be re-rendered from their record
        specs.append(render_spec(workflow, REPO, name, wc))
    return specs


# Rules that take seconds and need no node run on the submitting host under a cluster executor
# (profiles/slurm): plotting, tables, the claims table, the report entries, the bundle, targets.
def _local_rules():
    names = {"figure", "measurement_table", "claims_cost", "claims_table", "claims", "report_entry",
             "render_specs", "bundle", "all", "fig1", "fig2", "fig6"}
    for art in guestio.analysis.claims.load_artifacts().values():
        if art.built_by and art.kind != "text":
            names.add(art.built_by)
    return sorted(n for n in names if workflow.is_rule(n))
