"""Extract Debian's QEMU source once, with Debian's patch series, and record what it is."""

from pathlib import Path

from guestio import lifetime
from guestio.build import qemu
from guestio.util import write_json_atomic

# An interrupted or orphaned job stops its children and tidies up (guestio.lifetime).
lifetime.die_with_snakemake()

params = snakemake.params
with open(snakemake.log[0], "w") as log:
    info = qemu.extract_source(Path(params.source_dir), Path(params.pristine),
                               package=params.package, version=params.version, log=log)
write_json_atomic(Path(snakemake.output[0]), info)
