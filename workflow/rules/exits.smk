# Exit tracing: modelled VM exits under TCG (a QEMU plugin), Table 3.


rule exit_plugin:
    input:
        source=REPO / "workflow" / "plugin" / "exitcount.c",
        makefile=REPO / "workflow" / "plugin" / "Makefile",
        fetch=REPO / "workflow" / "plugin" / "fetch_header.sh",
    output:
        PLUGIN,
    params:
        build_dir=lambda w, output: str(Path(output[0]).parent.resolve()),
    log:
        f"{RESULTS}/exits/plugin-build.log",
    conda:
        CONDA_ENV
    shell:
        "(sh {input.fetch} {params.build_dir} && make -C workflow/plugin BUILD={params.build_dir}) > {log} 2>&1"


rule exits_tcg:
    input:
        unpack(lambda w: kernel_outputs(w.variant)),
        initrd=IMAGE,
        image_manifest=IMAGE_MANIFEST,
        data_disk=DATA_DISK,
        accelerator=ACCELERATOR,
        host=HOST_SNAPSHOT,
        plugin=PLUGIN,
        job=JOBS_DIR / "bonnie.sh",
    output:
        exits=f"{RESULTS}/exits/tcg/bonnie/{{variant}}/exits.csv",
        summary=f"{RESULTS}/exits/tcg/bonnie/{{variant}}/summary.json",
        provenance=f"{RESULTS}/exits/tcg/bonnie/{{variant}}/provenance.json",
    params:
        vm=config["vm"],
        exits=config["exits"],
    threads: workflow.cores
    log:
        f"{RESULTS}/exits/tcg/bonnie/{{variant}}/runner.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/exits_tcg.py"


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
