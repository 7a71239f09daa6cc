# Host snapshot, accelerator decision and VM runs.

rule host_snapshot:
    output:
        HOST_SNAPSHOT,
    log:
        f"{RESULTS}/host/host.log",
    params:
        # A different host (or a host whose KVM changed) takes a new snapshot.
        host=lambda w: guestio.provenance.host_identity(),
    conda:
        CONDA_ENV
    script:
        "../scripts/host_snapshot.py"


rule accelerator:
    input:
        kernel=PLAN.kernel_outputs(VARIANTS[0])["bzimage"],
        initrd=IMAGE,
        qemu=PLAN.qemu_outputs(PLAN.vm_qemu)["build"],
    output:
        ACCELERATOR,
    params:
        requested=config["vm"]["accel"],
        timeout_s=config["vm"]["probe_timeout_s"],
        kernel_append=config["vm"]["append"],
        memory_mib=config["vm"]["memory_mib"],
        host=lambda w: guestio.provenance.host_identity(),
    log:
        f"{RESULTS}/host/accelerator.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/probe_accelerator.py"


rule smoke_boot:
    input:
        unpack(lambda w: PLAN.kernel_outputs(w.variant)),
        initrd=IMAGE,
        image_manifest=IMAGE_MANIFEST,
        accelerator=ACCELERATOR,
        host=HOST_SNAPSHOT,
        qemu=PLAN.qemu_outputs(PLAN.vm_qemu)["build"],
        job=JOBS_DIR / "smoke.sh",
        job_lib=JOB_LIB,
    output:
        provenance=f"{SMOKE_DIR}/provenance.json",
    params:
        vm=config["vm"],
    log:
        f"{SMOKE_DIR}/runner.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/smoke_boot.py"
