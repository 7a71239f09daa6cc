"""What each claim's artifacts cost, from Snakemake's job records (guestio.report.cost)."""

from pathlib import Path

from guestio.report import claims_table
from guestio.report.evidence import Evidence
from guestio.util import write_json_atomic, write_text_atomic

ev = Evidence(**snakemake.params.evidence) if isinstance(snakemake.params.evidence, dict) \
    else snakemake.params.evidence
costs = claims_table.compute_costs(ev)
write_json_atomic(Path(snakemake.output[0]), costs)
write_text_atomic(Path(snakemake.log[0]), "".join(f"{k}: {v}\n" for k, v in costs.items()))
