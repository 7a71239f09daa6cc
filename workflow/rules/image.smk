# Guest image: an initramfs built from downloaded Debian packages, and data disks.


rule initramfs:
    input:
        init=REPO / "workflow" / "guestio" / "guest" / "init",
    output:
        cpio=IMAGE,
        manifest=IMAGE_MANIFEST,
    params:
        packages=config["image"]["packages"],
        programs=config["image"]["programs"],
        deb_dir=f"{BUILD}/debs",
        staging_dir=f"{BUILD}/image-staging",
    log:
        f"{RESULTS}/image/initramfs.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/build_initramfs.py"


rule data_disk:
    output:
        f"{RESULTS}/disks/data-{{size}}M.img",
    wildcard_constraints:
        size=r"\d+",
    log:
        f"{RESULTS}/disks/data-{{size}}M.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/make_data_disk.py"
