"""One entry of the Snakemake report: the files it shows (its caption is read at report time)."""

from pathlib import Path

from guestio.util import write_text_atomic

write_text_atomic(Path(snakemake.output[0]), "".join(f"{f}\n" for f in snakemake.input))
write_text_atomic(Path(snakemake.log[0]), f"{snakemake.wildcards.entry}: {len(snakemake.input)} file(s)\n")
