"""Decide the accelerator by a probe boot, never by the device node alone."""

from pathlib import Path

from guestio import lifetime
from guestio.vm.accel import probe_accelerator
from guestio.util import write_json_atomic
from guestio.vm.jobs import qemu_of

# An interrupted or orphaned job stops its children and tidies up (guestio.lifetime).
lifetime.die_with_snakemake()

params = snakemake.params
qemu = qemu_of(snakemake.input)
with open(snakemake.log[0], "w") as log:
    accel, reason = probe_accelerator(
        Path(snakemake.input.kernel), Path(snakemake.input.initrd), params.requested,
        timeout_s=params.timeout_s, append=params.kernel_append, memory_mib=params.memory_mib,
        workdir=Path(snakemake.log[0]).parent / "probe", log=lambda msg: print(msg, file=log, flush=True),
        **qemu,
    )
print(f"accelerator: {accel} ({reason})")
write_json_atomic(Path(snakemake.output[0]), {"accelerator": accel, "requested": params.requested, "reason": reason,
                                              "probe_kernel": snakemake.input.kernel, "probe_qemu": qemu["qemu"]})
