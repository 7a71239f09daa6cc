"""A kernel, QEMU variant or the image from the offline pack (thin wrapper over guestio.build.offline)."""

from pathlib import Path

from guestio.build import offline

prebuilt = Path(snakemake.input.pack).parent
out, w = snakemake.output, snakemake.wildcards
if snakemake.rule == "kernel_from_pack":
    offline.install_kernel(prebuilt, w.variant, dict(out.items()))
    what = f"kernel {w.variant}"
elif snakemake.rule == "qemu_from_pack":
    offline.install_qemu(prebuilt, w.qemu_variant, out.get("binary"), Path(out.build))
    what = f"QEMU {w.qemu_variant}"
else:
    offline.install_image(prebuilt, Path(out.cpio), Path(out.manifest))
    what = "the initramfs"
Path(snakemake.log[0]).write_text(f"{what} from the offline pack in {prebuilt}\n")
print(f"{what}: from the offline pack")
