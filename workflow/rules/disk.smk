# Disk experiment (Fig 1, Fig 2, Fig 6): bonnie++ natively and in the guest.
# Each repetition is its own job, so a failed one reruns alone.  Benchmark jobs
# take every core, so no other job runs beside them and disturbs the numbers.

rule disk_native:
    input:
        host=HOST_SNAPSHOT,
    output:
        csv=f"{RUN_DIR}/disk/native/host-fs/rep{{rep}}/measurements.csv",
    params:
        disk=DISK,
    threads: workflow.cores
    log:
        f"{RUN_DIR}/disk/native/host-fs/rep{{rep}}/runner.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/disk_native.py"


rule disk_vm:
    input:
        unpack(lambda w: kernel_outputs(w.variant)),
        initrd=IMAGE,
        image_manifest=IMAGE_MANIFEST,
        data_disk=DATA_DISK,
        accelerator=ACCELERATOR,
        host=HOST_SNAPSHOT,
        qemu=run_qemu,
        job=JOBS_DIR / "bonnie.sh",
    output:
        csv=f"{RUN_DIR}/disk/vm/{{variant}}/{{disk}}/rep{{rep}}/measurements.csv",
        provenance=f"{RUN_DIR}/disk/vm/{{variant}}/{{disk}}/rep{{rep}}/provenance.json",
    wildcard_constraints:
        disk="ide|virtio",
    params:
        vm=config["vm"],
        disk=DISK,
    threads: workflow.cores
    log:
        f"{RUN_DIR}/disk/vm/{{variant}}/{{disk}}/rep{{rep}}/runner.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/disk_vm.py"


rule disk_table:
    input:
        native=disk_native_runs(),
        vm=disk_vm_runs(),
        host=HOST_SNAPSHOT,
        accelerator=ACCELERATOR,
        builds=[kernel_outputs(v)["build"] for v in DISK["variants"]],
        qemu=run_qemu,
        image_manifest=IMAGE_MANIFEST,
    output:
        csv=f"{RESULTS}/tables/disk.csv",
        provenance=f"{RESULTS}/tables/disk.provenance.json",
    params:
        vm=config["vm"],
        disk=DISK,
        variants=DISK["variants"],
    log:
        f"{RESULTS}/tables/disk.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/disk_table.py"
