# QEMU: Debian's qemu source package once, then one build per QEMU variant (or the host's binary).


rule qemu_source:
    input:
        lambda w: [str(p) for p in guestio.build.qemu.source_files(
            config["qemu"]["source_dir"], *guestio.build.qemu.source_pin()).values()],
    output:
        f"{RESULTS}/qemu/source.json",
    params:
        source_dir=config["qemu"]["source_dir"],
        package=lambda w: guestio.build.qemu.source_pin()[0],
        version=lambda w: guestio.build.qemu.source_pin()[1],
        pristine=f"{BUILD}/src/qemu",
    log:
        f"{RESULTS}/qemu/source.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/qemu_source.py"


rule qemu:
    input:
        source=lambda w: [] if config["qemu"]["binary"] == "host" else f"{RESULTS}/qemu/source.json",
        host_binary=lambda w: [guestio.build.qemu.HOST_BINARY] if config["qemu"]["binary"] == "host" else [],
        layers=lambda w: [str(p) for p in guestio.build.patches.variant_patches(
            REPO / "workflow" / "qemu" / "layers", config["qemu"]["variants"][w.qemu_variant])],
    output:
        **guestio.build.qemu.rule_outputs(RESULTS, "{qemu_variant}", config["qemu"]),
    wildcard_constraints:
        qemu_variant="|".join(QEMU_VARIANTS),
    params:
        binary=config["qemu"]["binary"],
        # Configure arguments and devices file: a change to either rebuilds (params trigger).
        configuration=lambda w: guestio.build.qemu.configuration(w.qemu_variant, config["qemu"]),
        layers=lambda w: config["qemu"]["variants"][w.qemu_variant],
        layers_root=REPO / "workflow" / "qemu" / "layers",
        pristine=f"{BUILD}/src/qemu",
        workdir=lambda w: f"{BUILD}/qemu/{w.qemu_variant}",
        ccache_dir=config["qemu"]["ccache_dir"],
        jobs=config["qemu"]["jobs"],
    threads: workflow.cores
    log:
        f"{RESULTS}/qemu/{{qemu_variant}}/build.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/build_qemu.py"
