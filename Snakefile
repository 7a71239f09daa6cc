# guestio: every table and figure of Zhang et al. (2010) from one DAG.
# Stages live in workflow/rules/*.smk; reusable logic in workflow/guestio/.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


# common.smk first: the checked config and its plan (guestio.plan), which every stage reads.
include: "workflow/rules/common.smk"
include: "workflow/rules/kernel.smk"
include: "workflow/rules/qemu.smk"
include: "workflow/rules/image.smk"
include: "workflow/rules/run.smk"
include: "workflow/rules/disk.smk"
include: "workflow/rules/timer.smk"
include: "workflow/rules/diskmods.smk"
include: "workflow/rules/exits.smk"
include: "workflow/rules/network.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/acceptance.smk"
include: "workflow/rules/offline.smk"


rule all:
    default_target: True
    input:
        [PLAN.kernel_outputs(v)["build"] for v in VARIANTS],
        [PLAN.qemu_outputs(v)["build"] for v in QEMU_VARIANTS],
        IMAGE,
        DATA_DISK,
        PLAN.smoke_runs(),
        [PLAN.figure_files(fig) for fig in PLAN.figures],
        f"{RESULTS}/tables/table3.md",
        f"{RESULTS}/tables/table4.md",
        [list(files.values()) for files in PLAN.network.figure_files.values()],
        f"{RESULTS}/tables/table2.md",
        f"{RESULTS}/tables/table1.md",
        CLAIMS_MD,
        REPORTING.report_targets(),
        REPORTING.beyond_targets,


# Rules that take seconds and need no node run on the submitting host under a cluster executor
# (profiles/slurm): named once every rule exists.
workflow.localrules(*REPORTING.local_rules())
