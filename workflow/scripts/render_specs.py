"""How each figure and table of the run was rendered, for the bundle's rerender.py.

Only the jobs whose files all exist (params are evaluated before the run made them): a bundle
of a partial run re-renders what it holds."""

from pathlib import Path

from guestio.report.bundle import existing_specs
from guestio.util import write_json_atomic, write_text_atomic

specs = existing_specs(snakemake.params.specs)
write_json_atomic(Path(snakemake.output[0]), specs)
write_text_atomic(Path(snakemake.log[0]), f"{len(specs)} of {len(snakemake.params.specs)} rendering jobs have all their files\n")
