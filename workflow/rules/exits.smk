# Exit tracing, Table 3: the backend follows the accelerator decision (KVM tracepoints, or
# modelled exits from a QEMU plugin under TCG).  Fig 6: boot-only runs of the 32-bit kernels.

# The boot-only runs and their table: guestio.plan.stages.Pmtmr (PLAN.pmtmr).


rule exit_plugin:
    input:
        code=REPO / "workflow" / "plugin" / "exitcount.c",
        makefile=REPO / "workflow" / "plugin" / "Makefile",
        # qemu-plugin.h comes from the same source tree the QEMU build uses.
        source=f"{RESULTS}/qemu/source.json",
    output:
        plugin=PLUGIN,
        record=str(Path(PLUGIN).with_suffix(".json")),
    params:
        pristine=f"{BUILD}/src/qemu",
    log:
        f"{RESULTS}/exits/plugin-build.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/build_plugin.py"


rule exit_sites:
    input:
        unpack(lambda w: PLAN.kernel_outputs(w.variant)),
        unpack(lambda w: PLAN.exit_run_inputs(w.variant, w.rep)),
        image_manifest=IMAGE_MANIFEST,
        accelerator=lambda w: PLAN.exits_accelerator(w.variant, w.rep),
        host=HOST_SNAPSHOT,
        qemu=lambda w: PLAN.qemu_outputs(w.qemu)["build"],
        job=JOBS_DIR / "bonnie.sh",
        job_lib=JOB_LIB,
    output:
        exits=f"{EXIT_DIR}/exits.csv",
        summary=f"{EXIT_DIR}/summary.json",
        provenance=f"{EXIT_DIR}/provenance.json",
    wildcard_constraints:
        workload="bonnie",
    params:
        vm=config["vm"],
        exits=config["exits"],
        guest_scheduler=config["disk"]["guest_scheduler"],
        recorded=lambda w: PLAN.exits_recorded(w.variant, w.rep),
        tick=lambda w: guestio.workloads.tick.trigger(config, w.qemu),  # timer.smk: the tick's settings
    threads: workflow.cores
    log:
        f"{EXIT_DIR}/runner.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/exit_sites.py"


rule table3:
    input:
        exits=PLAN.exit_runs("bonnie", config["exits"]["variants"], config["vm"]["qemu"], "exits.csv"),
        summaries=PLAN.exit_runs("bonnie", config["exits"]["variants"], config["vm"]["qemu"], "summary.json"),
        # the 32-bit guest's boot, where verify_pmtmr_rate exists (Fig 6's first boot run of each side)
        boot=lambda w: PLAN.table3_boot_runs(),
    output:
        csv=f"{RESULTS}/tables/table3.csv",
        markdown=f"{RESULTS}/tables/table3.md",
        latex=f"{RESULTS}/tables/table3.tex",
    params:
        variants=config["exits"]["variants"],
        boot_variants=PLAN.pmtmr.variants,
        top=config["exits"]["top"],
    log:
        f"{RESULTS}/tables/table3.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/table3.py"


# Fig 6, modification 3: verify_pmtmr_rate exists only in a 32-bit kernel, whose boot is counted
# to its panic at the missing root (no user space of the image runs; guestio.exits.bootonly).
# Always TCG with the plugin, on a KVM host too: the counts are modelled exits.
rule boot_exits:
    input:
        unpack(lambda w: PLAN.kernel_outputs(w.variant)),
        plugin=PLUGIN,
        host=HOST_SNAPSHOT,
        qemu=lambda w: PLAN.qemu_outputs(w.qemu)["build"],
    output:
        exits=f"{EXIT_DIR}/exits.csv",
        csv=f"{EXIT_DIR}/measurements.csv",
        provenance=f"{EXIT_DIR}/provenance.json",
    wildcard_constraints:
        workload="boot",
    params:
        vm=config["vm"],
        memory_mib=config["pmtmr"]["memory_mib"],
        qemu=lambda w: w.qemu,
    # the PIT polling that verify_pmtmr_rate does lasts 30 ms of the guest's time: no other job
    # beside it, so that the count depends on the kernel, not the load
    threads: workflow.cores
    log:
        f"{EXIT_DIR}/runner.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/boot_exits.py"
