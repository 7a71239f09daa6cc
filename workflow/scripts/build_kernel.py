"""Build one guest kernel variant (thin wrapper over guestio.build.kernel)."""

import json
from pathlib import Path

from guestio import lifetime
from guestio.build import ccache, kernel

# An interrupted or orphaned job stops its children and tidies up (guestio.lifetime).
lifetime.die_with_snakemake()

params = snakemake.params
ccache_dir = ccache.prepare(params.ccache_dir, params.ccache_max_size)
record = kernel.build_variant(
    variant=snakemake.wildcards.variant,
    layers=list(params.layers),
    layers_root=Path(params.layers_root),
    pristine=Path(params.pristine),
    source=json.loads(Path(snakemake.input.source).read_text()),
    workdir=Path(params.workdir),
    outdir=Path(snakemake.output.build).parent,
    jobs=params.jobs or snakemake.threads,
    ccache_dir=ccache_dir,
    log_path=Path(snakemake.log[0]),
)
print(f"kernel {record['variant']}: built in {record['build_seconds']} s")
