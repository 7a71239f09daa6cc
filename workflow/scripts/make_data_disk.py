"""A freshly formatted, reproducible data disk image."""

from pathlib import Path

from guestio.disk import make_data_disk

make_data_disk(Path(snakemake.output[0]), int(snakemake.wildcards.size))
