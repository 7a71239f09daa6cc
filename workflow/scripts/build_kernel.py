"""Build one guest kernel variant (thin wrapper over guestio.build.kernel)."""

import json
import subprocess
from pathlib import Path

from guestio import lifetime
from guestio.build import kernel

# An interrupted or orphaned job stops its children and tidies up (guestio.lifetime).
lifetime.die_with_snakemake()

params = snakemake.params
ccache_dir = Path(params.ccache_dir).expanduser() if params.ccache_dir else None
if ccache_dir is not None:
    ccache_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ccache", "--max-size", params.ccache_max_size], env=kernel.build_env(ccache_dir),
                   check=False, capture_output=True)
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
