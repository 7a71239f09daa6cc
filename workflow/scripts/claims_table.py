"""results/claims.{md,csv}: every claim of the paper with its verdict (guestio.report.claims_table)."""

import dataclasses
import json
from pathlib import Path

from guestio.report import claims_table
from guestio.report.evidence import Evidence
from guestio.util import write_text_atomic

ev = snakemake.params.evidence
if isinstance(ev, dict):  # re-rendered from a bundle's render.json
    ev = Evidence(**{k: (set(v) if k == "built" else v) for k, v in ev.items()})
costs = json.loads(Path(snakemake.input.cost).read_text())
rows = claims_table.build(ev, costs)
out = snakemake.output
claims_table.write(rows, out.markdown, out.csv, out.quantities)
write_text_atomic(Path(snakemake.log[0]), "".join(f"{r.paper_id}: {r.verdict_text}\n" for r in rows))
