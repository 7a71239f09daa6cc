"""A freshly formatted, reproducible data disk image."""

from pathlib import Path

from guestio.build.disk import make_data_disk
from guestio.util import sha256_file

out = Path(snakemake.output[0])
make_data_disk(out, int(snakemake.wildcards.size))
Path(snakemake.log[0]).write_text(f"{out}: {snakemake.wildcards.size} MiB ext4, sha256 {sha256_file(out)}\n")
