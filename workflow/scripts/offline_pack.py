"""The offline pack of the KVM acceptance run (thin wrapper over guestio.build.offline.make_pack)."""

from pathlib import Path

from guestio.build import offline
from guestio.build.qemu import FIRMWARE_PATH

inp, params = snakemake.input, snakemake.params
kernels = {v: {Path(f).name: Path(f) for f in inp.kernels if Path(f).parent.name == v} for v in params.variants}
with open(snakemake.log[0], "w") as log:
    def say(msg):
        print(msg, flush=True)
        print(msg, file=log, flush=True)

    record = offline.make_pack(
        out=Path(snakemake.output[0]), repo=Path(params.repo), kernels=kernels,
        qemus=dict(zip(params.qemus, (Path(q) for q in inp.qemus))), image=Path(inp.image),
        image_manifest=Path(inp.image_manifest), firmware_dirs=FIRMWARE_PATH,
        venv=Path(params.venv) if params.venv else None, work=Path(params.work), log=say)
    say(f"packed kernels {', '.join(record['kernels'])}, QEMU {', '.join(record['qemu'])}, tools "
        f"{', '.join(record['tools'])}: {snakemake.output[0]} "
        f"({Path(snakemake.output[0]).stat().st_size / 2**20:.0f} MiB)")
