"""Draw Fig 3, Fig 4 or Fig 7 from the network experiment's table, and write its ratios."""

import json
from pathlib import Path

from guestio.analysis.measurements import read_csv
from guestio.net.figures import plot
from guestio.util import write_text_atomic

out, params = snakemake.output, snakemake.params
df = read_csv(Path(snakemake.input.csv))
provenance = json.loads(Path(snakemake.input.provenance).read_text())
summary = plot(params.figure, df, provenance, dict(params.network), out.pdf, out.png, int(params.seed))
write_text_atomic(Path(out.csv), summary.to_csv(index=False, lineterminator="\n", float_format="%.6g"))
Path(snakemake.log[0]).write_text(summary.to_string(index=False) + "\n")
