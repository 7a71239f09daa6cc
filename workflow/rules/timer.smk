# Timer (Fig 5, Table 1): the guest's timer at 1000 Hz (vHZ1000) against 100 Hz, once by the
# guest's configuration (the hz100 kernel) and once by the VMM (the pit-scale QEMU slowing the
# PIT's channel 0 down while the guest still believes HZ=1000).  Every run measures its tick
# (guestio.workloads.tick) and fails when it is not HZ / the PIT scale.

import guestio.workloads.tick

# The conditions and their runs: guestio.plan.stages.Timer (PLAN.timer).


# Table 1: exit sites of the CPU-bound job (sysbench cpu, SPECjbb2005's stand-in), one run per
# condition, from the backend of Table 3 (KVM tracepoints, or the TCG plugin's modelled exits).
rule timer_exits:
    input:
        unpack(lambda w: PLAN.kernel_outputs(w.variant)),
        unpack(lambda w: PLAN.exit_plugin_input()),
        initrd=IMAGE,
        image_manifest=IMAGE_MANIFEST,
        accelerator=ACCELERATOR,
        host=HOST_SNAPSHOT,
        qemu=lambda w: PLAN.qemu_outputs(w.qemu)["build"],
        job=JOBS_DIR / "cpu.sh",
        job_lib=JOB_LIB,
    output:
        exits=f"{EXIT_DIR}/exits.csv",
        summary=f"{EXIT_DIR}/summary.json",
        measurements=f"{EXIT_DIR}/measurements.csv",
        provenance=f"{EXIT_DIR}/provenance.json",
    wildcard_constraints:
        workload="cpu",
    params:
        vm=config["vm"],
        cpu=config["timer"]["cpu"],
        tracefs=config["exits"]["tracefs"],
        tick=lambda w: guestio.workloads.tick.trigger(config, w.qemu),  # the tolerance is read by the script
    threads: workflow.cores
    log:
        f"{EXIT_DIR}/runner.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/timer_exits.py"


rule table1:
    input:
        exits=[f"{d}/exits.csv" for d in PLAN.timer.exit_dirs],
        summaries=[f"{d}/summary.json" for d in PLAN.timer.exit_dirs],
        measurements=[f"{d}/measurements.csv" for d in PLAN.timer.exit_dirs],
    output:
        csv=f"{RESULTS}/tables/table1.csv",
        markdown=f"{RESULTS}/tables/table1.md",
        latex=f"{RESULTS}/tables/table1.tex",
    params:
        conditions=list(PLAN.timer.conditions),
        top=config["timer"]["top"],
    log:
        f"{RESULTS}/tables/table1.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/timer_table1.py"


rule fig5:
    input:
        PLAN.figure_files("fig5"),
