"""Build one QEMU variant, or describe the host's binary (thin wrapper over guestio.build.qemu)."""

import json
from pathlib import Path

from guestio import lifetime
from guestio.build import ccache, qemu_variant

# An interrupted or orphaned job stops its children and tidies up (guestio.lifetime).
lifetime.die_with_snakemake()

params = snakemake.params
outdir = Path(snakemake.output.build).parent
if params.binary == "host":
    record = qemu_variant.describe_host(snakemake.wildcards.qemu_variant, outdir)
    Path(snakemake.log[0]).write_text(f"qemu.binary: host: {record['binary']} ({record['version_output'].splitlines()[0]})\n")
    print(f"QEMU {record['variant']}: the host's {record['binary']}")
else:
    ccache_dir = ccache.prepare(params.ccache_dir)  # its size limit is the kernel's (kernel.ccache_max_size) when they share it
    record = qemu_variant.build_variant(
        variant=snakemake.wildcards.qemu_variant,
        layers=list(params.layers),
        layers_root=Path(params.layers_root),
        pristine=Path(params.pristine),
        source=json.loads(Path(snakemake.input.source).read_text()),
        workdir=Path(params.workdir),
        outdir=outdir,
        jobs=params.jobs or snakemake.threads,
        ccache_dir=ccache_dir,
        log_path=Path(snakemake.log[0]),
    )
    print(f"QEMU {record['variant']}: {record['version']} built in {record['build_seconds']} s")
