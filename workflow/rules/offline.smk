# The offline pack (guestio.build.offline, docs/kvm-acceptance.md#offline):
#   offline_pack  on a host that builds: the kernels, QEMU variants and image the KVM acceptance
#                 profile runs, the QEMU binaries and host tools with their shared libraries and
#                 firmware, the repository and its .venv, in {results_dir}/offline/guestio-offline.tar.gz
#   prebuilt      on the offline host (offline.prebuilt: the pack's prebuilt/ directory): the
#                 kernel, qemu and initramfs outputs come from the pack instead of being built
#                 (ruleorder), checked against the pack's sha256 record.

import guestio.build.offline

OFFLINE = config.get("offline") or {}
PREBUILT = OFFLINE.get("prebuilt")
OFFLINE_PACK = f"{RESULTS}/offline/guestio-offline.tar.gz"
# What the acceptance DAG boots (guestio.plan.Plan.pack_builds).
PACK_VARIANTS, PACK_QEMUS = PLAN.pack_builds()


rule offline_pack:
    input:
        kernels=[f for v in PACK_VARIANTS for f in PLAN.kernel_outputs(v).values()],
        qemus=[PLAN.qemu_outputs(q)["build"] for q in PACK_QEMUS],
        image=IMAGE,
        image_manifest=IMAGE_MANIFEST,
    output:
        OFFLINE_PACK,
    params:
        variants=PACK_VARIANTS,
        qemus=PACK_QEMUS,
        repo=str(REPO),
        venv=lambda w: str(REPO / ".venv") if OFFLINE.get("venv", True) else None,
        work=f"{BUILD}/offline-pack",
    localrule: True
    log:
        f"{RESULTS}/offline/pack.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/offline_pack.py"


if PREBUILT:
    try:
        guestio.build.offline.read_pack(PREBUILT)
    except guestio.build.offline.OfflinePackError as error:
        raise WorkflowError(f"invalid configuration: offline.prebuilt: {error}")

    ruleorder: kernel_from_pack > kernel
    ruleorder: qemu_from_pack > qemu
    ruleorder: initramfs_from_pack > initramfs

    rule kernel_from_pack:
        input:
            pack=f"{PREBUILT}/{guestio.build.offline.PACK_FILE}",
        output:
            **PLAN.kernel_outputs("{variant}"),
        localrule: True
        log:
            f"{KERNEL_DIR}/{{variant}}/from-pack.log",
        conda:
            CONDA_ENV
        script:
            "../scripts/install_prebuilt.py"

    rule qemu_from_pack:
        input:
            pack=f"{PREBUILT}/{guestio.build.offline.PACK_FILE}",
        output:
            **guestio.build.qemu.rule_outputs(RESULTS, "{qemu_variant}", config["qemu"]),
        wildcard_constraints:
            qemu_variant="|".join(QEMU_VARIANTS),
        localrule: True
        log:
            f"{RESULTS}/qemu/{{qemu_variant}}/from-pack.log",
        conda:
            CONDA_ENV
        script:
            "../scripts/install_prebuilt.py"

    rule initramfs_from_pack:
        input:
            pack=f"{PREBUILT}/{guestio.build.offline.PACK_FILE}",
        output:
            cpio=IMAGE,
            manifest=IMAGE_MANIFEST,
        localrule: True
        log:
            f"{RESULTS}/image/from-pack.log",
        conda:
            CONDA_ENV
        script:
            "../scripts/install_prebuilt.py"
