"""results/beyond.{md,csv}: the five modifications on the paper's devices and on virtio."""

from pathlib import Path

from guestio.report import beyond
from guestio.report.evidence import Evidence
from guestio.util import write_text_atomic

ev = snakemake.params.evidence
if isinstance(ev, dict):
    ev = Evidence(**{k: (set(v) if k == "built" else v) for k, v in ev.items()})
table = beyond.build(ev)
beyond.write(table, snakemake.output.markdown, snakemake.output.csv)
write_text_atomic(Path(snakemake.log[0]), beyond.markdown(table))
