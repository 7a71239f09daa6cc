# guestio: every table and figure of Zhang et al. (2010) from one DAG.
# Stages live in workflow/rules/*.smk; reusable logic in workflow/guestio/.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/kernel.smk"
include: "workflow/rules/qemu.smk"
include: "workflow/rules/image.smk"
include: "workflow/rules/run.smk"
include: "workflow/rules/timer.smk"  # before disk.smk and figures.smk: registers table timer, fig5
include: "workflow/rules/network.smk"  # before disk.smk: registers table net (Fig 3, 4, 7; Table 2)
include: "workflow/rules/diskmods.smk"  # before disk.smk: registers tables coalesce, sched and figure sched
include: "workflow/rules/exits.smk"  # before disk.smk: registers table boot and figure fig6
include: "workflow/rules/disk.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/report.smk"  # last: reads what the stages registered
include: "workflow/rules/acceptance.smk"  # after report.smk: the KVM acceptance verdict beside the bundle
include: "workflow/rules/offline.smk"  # the offline pack of the acceptance run, and running from one


rule all:
    default_target: True
    input:
        [kernel_outputs(v)["build"] for v in VARIANTS],
        [qemu_outputs(v)["build"] for v in QEMU_VARIANTS],
        IMAGE,
        DATA_DISK,
        smoke_runs(),
        [figure_files(fig) for fig in FIGURES],
        f"{RESULTS}/tables/table3.md",
        f"{RESULTS}/tables/table4.md",
        [list(NET_FIGURE_FILES[fig].values()) for fig in NET_FIGURES],
        f"{RESULTS}/tables/table2.md",
        f"{RESULTS}/tables/table1.md",
        CLAIMS_MD,
        report_targets(),
        BEYOND_TARGETS,
