# Exit tracing, Table 3: the backend follows the accelerator decision (KVM tracepoints, or
# modelled exits from a QEMU plugin under TCG).


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
        unpack(lambda w: kernel_outputs(w.variant)),
        unpack(exit_run_inputs),
        image_manifest=IMAGE_MANIFEST,
        accelerator=exits_accelerator,
        host=HOST_SNAPSHOT,
        qemu=qemu_build_of,
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
        guest_scheduler=DISK["guest_scheduler"],
        recorded=lambda w: exits_recorded(w.variant, w.rep),
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
        exits=exit_runs("bonnie", config["exits"]["variants"], config["vm"]["qemu"], "exits.csv"),
        summaries=exit_runs("bonnie", config["exits"]["variants"], config["vm"]["qemu"], "summary.json"),
    output:
        csv=f"{RESULTS}/tables/table3.csv",
        markdown=f"{RESULTS}/tables/table3.md",
        latex=f"{RESULTS}/tables/table3.tex",
    params:
        variants=config["exits"]["variants"],
        top=config["exits"]["top"],
    log:
        f"{RESULTS}/tables/table3.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/table3.py"
