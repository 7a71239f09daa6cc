# What a run says about the paper, and how to hand it on:
#   claims   results/claims.{md,csv}: every claim of the paper with its verdict, on whatever exists
#   beyond   results/beyond.{md,csv} (report.beyond): which modifications still matter today
#   report   `snakemake --report report.html`: the claims table first, every figure and table
#            with a caption (claim, measured ratio, accelerator, QEMU and kernel variants); one
#            small job per report entry, so that each caption knows its entry (wildcard) and the
#            facts it shows are read when the report is made; a file is flagged for the report
#            only if it exists then, so a report after a partial run says what is missing
#   bundle   results/bundle/guestio-bundle.tar.gz: workflow, config, envs, data, provenance,
#            logs, figures and tables, sha256 manifest, RO-Crate; `python3 rerender.py` inside it
#            re-renders every figure and table offline, byte-identically
# What they take in (which artifacts are built, their files, the claims' evidence, the report
# entries, the render specs): guestio.report.report_plan, read at DAG time.

import guestio.report.report_plan
import guestio.report.workflow_view

REPORTING = guestio.report.report_plan.ReportPlan(
    PLAN, guestio.report.workflow_view.WorkflowView(workflow, REPO), config)
CLAIMS_MD = REPORTING.claims_md
CLAIMS_CSV = REPORTING.claims_csv
CLAIMS_QUANTITIES = REPORTING.claims_quantities
CLAIMS_COST = REPORTING.claims_cost
BUNDLE = REPORTING.bundle


report: "../report/workflow.rst"


rule claims_cost:
    input:
        lambda w: REPORTING.artifact_files(),
    output:
        CLAIMS_COST,
    params:
        evidence=lambda w: REPORTING.claims_evidence(),
    localrule: True
    log:
        f"{RESULTS}/claims-cost.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/claims_cost.py"


rule claims_table:
    input:
        artifacts=lambda w: REPORTING.artifact_files(),
        cost=CLAIMS_COST,
        code=REPORTING.code,
    output:
        markdown=CLAIMS_MD,
        csv=CLAIMS_CSV,
        quantities=CLAIMS_QUANTITIES,
    params:
        evidence=lambda w: REPORTING.claims_evidence(),
    localrule: True
    log:
        f"{RESULTS}/claims.log",
    benchmark:
        f"{RESULTS}/benchmarks/claims_table.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/claims_table.py"


rule claims:
    input:
        CLAIMS_MD,
        CLAIMS_CSV,


# Beyond the paper (report.beyond, on by default): which of the five modifications still matter,
# at their mechanism (exits, interrupts, ticks removed) beside their effect, on the paper's devices
# and on virtio.  It reads what the claims table reads (report.artifacts narrows both alike), so a
# profile that leaves artifacts out plans no runs for it; they read "not measured here".
rule beyond:
    input:
        artifacts=lambda w: REPORTING.artifact_files(),
        code=REPORTING.code + [str(REPO / "workflow" / "guestio" / "report" / n) for n in ("beyond.py", "beyond.yaml")],
    output:
        **REPORTING.beyond,
    params:
        evidence=lambda w: REPORTING.claims_evidence(),
    localrule: True
    log:
        f"{RESULTS}/beyond.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/beyond.py"


rule report_entry:
    input:
        unpack(lambda w: REPORTING.report_entry_input(w.entry)),
    output:
        f"{REPORTING.report_dir}/entries/{{entry}}.txt",
    wildcard_constraints:
        entry="[a-z0-9_]+(-[a-z0-9_-]+)?",
    params:
        facts=lambda w: REPORTING.report_facts(),
    localrule: True
    log:
        f"{REPORTING.report_dir}/entries/{{entry}}.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/report_entry.py"


rule render_specs:
    input:
        artifacts=lambda w: REPORTING.artifact_files(),
        claims=[CLAIMS_MD, CLAIMS_CSV, CLAIMS_QUANTITIES],
        # its rendering job is recorded only once its files exist
        beyond=REPORTING.beyond_targets,
    output:
        f"{RESULTS}/bundle/render.json",
    params:
        specs=lambda w: REPORTING.render_specs(),
    localrule: True
    log:
        f"{RESULTS}/bundle/render.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/render_specs.py"


rule bundle:
    input:
        artifacts=lambda w: REPORTING.artifact_files(),
        claims=[CLAIMS_MD, CLAIMS_CSV, CLAIMS_QUANTITIES, CLAIMS_COST],
        beyond=REPORTING.beyond_targets,
        render=f"{RESULTS}/bundle/render.json",
        capabilities=HOST_CAPABILITIES,
    output:
        BUNDLE,
    params:
        results=lambda w: RESULTS,
        repo=str(REPO),
        configfiles=lambda w: [str(f) for f in workflow.configfiles],
        config=lambda w: dict(config),
    log:
        f"{RESULTS}/bundle/bundle.log",
    benchmark:
        f"{RESULTS}/benchmarks/bundle.tsv"
    localrule: True
    conda:
        CONDA_ENV
    script:
        "../scripts/bundle.py"

