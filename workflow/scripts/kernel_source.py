"""Extract the kernel source tarball once and record what it is."""

from pathlib import Path

from guestio import lifetime
from guestio.build import kernel
from guestio.util import write_json_atomic

# An interrupted or orphaned job stops its children and tidies up (guestio.lifetime).
lifetime.die_with_snakemake()

info = kernel.extract_source(Path(snakemake.input.tarball), Path(snakemake.params.pristine))
package = snakemake.params.debian_package
info["debian_package"] = package or None
info["debian_version"] = kernel.debian_package_version(package) if package else None
Path(snakemake.log[0]).write_text(f"extracted {info['tarball']} ({info['kernelversion']}) to {snakemake.params.pristine}\n")
write_json_atomic(Path(snakemake.output[0]), info)
