# Disk experiment (Fig 1, Fig 2): bonnie++ natively and in the guest.
# Each repetition is its own job, so a failed one reruns alone.  Benchmark jobs
# take every core, so no other job runs beside them and disturbs the numbers.

import guestio.workloads.tick

# The conditions, runs and table of every stage's disk runs: guestio.plan (PLAN.tables).


rule disk_native:
    input:
        host=HOST_SNAPSHOT,
    output:
        csv=f"{DISK_NATIVE_DIR}/measurements.csv",
    params:
        disk=config["disk"],
    threads: workflow.cores
    log:
        f"{DISK_NATIVE_DIR}/runner.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/disk_native.py"


rule disk_vm:
    input:
        unpack(lambda w: PLAN.kernel_outputs(w.variant)),
        initrd=IMAGE,
        image_manifest=IMAGE_MANIFEST,
        data_disk=DATA_DISK,
        accelerator=ACCELERATOR,
        host=HOST_SNAPSHOT,
        qemu=lambda w: PLAN.qemu_outputs(w.qemu)["build"],
        job=JOBS_DIR / "bonnie.sh",
        job_lib=JOB_LIB,
    output:
        csv=f"{DISK_VM_DIR}/measurements.csv",
        provenance=f"{DISK_VM_DIR}/provenance.json",
    wildcard_constraints:
        disk="ide|virtio",
        gsched="none|bfq|mq-deadline|kyber",
        hsched="file|none|mq-deadline|kyber|bfq",   # not file: a loop device (guestio.workloads.hostdisk)
    params:
        vm=config["vm"],
        disk=config["disk"],
        tick=lambda w: guestio.workloads.tick.trigger(config, w.qemu),  # timer.smk: the tick's settings
    threads: workflow.cores
    log:
        f"{DISK_VM_DIR}/runner.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/disk_vm.py"


rule measurement_table:
    input:
        runs=lambda w: PLAN.tables[w.table]["runs"],
        builds=lambda w: [PLAN.kernel_outputs(v)["build"] for v in PLAN.tables[w.table]["variants"]],
        qemus=lambda w: [PLAN.qemu_outputs(q)["build"] for q in PLAN.tables[w.table]["qemus"]],
        host=HOST_SNAPSHOT,
        capabilities=HOST_CAPABILITIES,
        accelerator=ACCELERATOR,
        image_manifest=IMAGE_MANIFEST,
    output:
        csv=f"{RESULTS}/tables/{{table}}.csv",
        provenance=f"{RESULTS}/tables/{{table}}.provenance.json",
    wildcard_constraints:
        table="|".join(PLAN.tables) or "(?!)",
    params:
        table=lambda w: {k: v for k, v in PLAN.tables[w.table].items() if k != "runs"},
        default_qemu=config["vm"]["qemu"],
    log:
        f"{RESULTS}/tables/{{table}}.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/measurement_table.py"
