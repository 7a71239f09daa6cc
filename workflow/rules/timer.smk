# Timer (Fig 5, Table 1): the guest's timer at 1000 Hz (vHZ1000) against 100 Hz, once by the
# guest's configuration (the hz100 kernel) and once by the VMM (the pit-scale QEMU slowing the
# PIT's channel 0 down while the guest still believes HZ=1000).  Every run measures its tick
# (guestio.workloads.tick) and fails when it is not HZ / the PIT scale.

import sys

import guestio.workloads.tick

TIMER = config["timer"]
TIMER_REPS = range(TIMER["repetitions"])
# name -> (kernel variant, QEMU variant): the three conditions of Fig 5 and Table 1.
TIMER_CONDITIONS = {
    "vHZ1000": ("baseline", config["vm"]["qemu"]),
    "vHZ100 (guest HZ=100)": ("hz100", config["vm"]["qemu"]),
    "vHZ100 (VMM PIT x10)": ("baseline", "pit-scale"),
}
if "pit-scale" not in QEMU_VARIANTS:
    # qemu.binary: host cannot be patched: Fig 5 and Table 1 then lack the VMM's route.
    print("timer: no QEMU variant pit-scale (qemu.variants): Fig 5 and Table 1 without the VMM's route to vHZ100",
          file=sys.stderr)
    del TIMER_CONDITIONS["vHZ100 (VMM PIT x10)"]
for _name, (_variant, _qemu) in TIMER_CONDITIONS.items():
    if _variant not in VARIANTS:
        raise WorkflowError(f"the timer stage ({_name}) needs the kernel variant {_variant!r} under variants")

# Fig 5: the disk experiment's runs of the three conditions; vHZ1000 is Fig 1's VM side, so its
# runs are Fig 1's own first repetitions (one run per condition, shared).
TIMER_DISK_CONDITIONS = [disk_condition(variant=v, qemu=q) for v, q in TIMER_CONDITIONS.values()]
register_table("timer", disk_vm_runs(TIMER_DISK_CONDITIONS, reps=TIMER_REPS),
               variants=conditions_variants(TIMER_DISK_CONDITIONS), qemus=conditions_qemus(TIMER_DISK_CONDITIONS),
               experiment="disk", config_sections=["disk", "timer"])
FIGURES["fig5"] = "timer"


# The exit runs of Table 1, one directory per condition.
TIMER_EXIT_DIRS = [exit_dir("cpu", v, q) for v, q in TIMER_CONDITIONS.values()]


# Table 1: exit sites of the CPU-bound job (sysbench cpu, SPECjbb2005's stand-in), one run per
# condition, from the backend of Table 3 (KVM tracepoints, or the TCG plugin's modelled exits).
rule timer_exits:
    input:
        unpack(lambda w: kernel_outputs(w.variant)),
        unpack(exit_plugin_input),
        initrd=IMAGE,
        image_manifest=IMAGE_MANIFEST,
        accelerator=ACCELERATOR,
        host=HOST_SNAPSHOT,
        qemu=qemu_build_of,
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
        cpu=TIMER["cpu"],
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
        exits=[f"{d}/exits.csv" for d in TIMER_EXIT_DIRS],
        summaries=[f"{d}/summary.json" for d in TIMER_EXIT_DIRS],
        measurements=[f"{d}/measurements.csv" for d in TIMER_EXIT_DIRS],
    output:
        csv=f"{RESULTS}/tables/table1.csv",
        markdown=f"{RESULTS}/tables/table1.md",
        latex=f"{RESULTS}/tables/table1.tex",
    params:
        conditions=list(TIMER_CONDITIONS),
        top=TIMER["top"],
    log:
        f"{RESULTS}/tables/table1.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/timer_table1.py"


rule fig5:
    input:
        figure_files("fig5"),
