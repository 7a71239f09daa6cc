"""Draw one of the paper's figures (any bar figure of claims.yaml) and write its table of ratios."""

import json
from pathlib import Path

import pandas as pd

from guestio.analysis.figures import plot_comparison, summary_markdown, write_summary_csv
from guestio.util import write_text_atomic

out = snakemake.output
df = pd.read_csv(snakemake.input.csv)
provenance = json.loads(Path(snakemake.input.provenance).read_text())
result = plot_comparison(snakemake.params.figure, df, provenance, out.pdf, out.png, int(snakemake.params.seed),
                         defaults=dict(getattr(snakemake.params, "defaults", {})))
write_summary_csv(result.summary, out.summary)
table = summary_markdown(result.summary)
if getattr(out, "markdown", None):  # optional Markdown twin of the summary
    write_text_atomic(Path(out.markdown), table)
if snakemake.log:
    Path(snakemake.log[0]).write_text(table)
