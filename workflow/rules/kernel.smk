# Guest kernels: pristine source once, then one patched, layered build per variant.


rule kernel_source:
    input:
        tarball=config["kernel"]["tarball"],
    output:
        f"{KERNEL_DIR}/source.json",
    params:
        pristine=f"{BUILD}/src/linux",
        debian_package=config["kernel"]["debian_package"],
    log:
        f"{KERNEL_DIR}/source.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/kernel_source.py"


rule kernel:
    input:
        source=f"{KERNEL_DIR}/source.json",
        layers=lambda w: PLAN.layer_files(w.variant),
    output:
        **PLAN.kernel_outputs("{variant}"),
    params:
        layers=lambda w: config["variants"][w.variant],
        layers_root=PLAN.layers_root,
        pristine=f"{BUILD}/src/linux",
        workdir=lambda w: f"{BUILD}/kernel/{w.variant}",
        ccache_dir=config["kernel"]["ccache_dir"],
        ccache_max_size=config["kernel"]["ccache_max_size"],
        jobs=config["kernel"]["jobs"],
    threads: workflow.cores
    log:
        f"{KERNEL_DIR}/{{variant}}/build.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/build_kernel.py"
