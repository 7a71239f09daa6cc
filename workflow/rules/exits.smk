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
        qemu=run_qemu,
        job=JOBS_DIR / "bonnie.sh",
    output:
        exits=f"{RESULTS}/exits/bonnie/{{variant}}/exits.csv",
        summary=f"{RESULTS}/exits/bonnie/{{variant}}/summary.json",
        provenance=f"{RESULTS}/exits/bonnie/{{variant}}/provenance.json",
    params:
        vm=config["vm"],
        exits=config["exits"],
        recorded=lambda w: exits_recorded(w.variant),
    threads: workflow.cores
    log:
        f"{RESULTS}/exits/bonnie/{{variant}}/runner.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/exit_sites.py"


rule table3:
    input:
        exits=exit_runs("exits.csv"),
        summaries=exit_runs("summary.json"),
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
