"""The runs of one artifact group in one long-form table, with the provenance they share."""

from pathlib import Path

from guestio.analysis.measurements import combine, write_csv
from guestio.provenance import experiment_provenance
from guestio.util import write_json_atomic

inp, table = snakemake.input, snakemake.params.table
runs = [Path(p) for p in inp.runs]
qemus = dict(zip(table["qemus"], map(Path, inp.qemus)))
df = combine(runs)
write_csv(df, Path(snakemake.output.csv))
write_json_atomic(Path(snakemake.output.provenance), experiment_provenance(
    experiment=table["experiment"], repo=Path(snakemake.scriptdir).parents[1], host=Path(inp.host),
    accelerator=Path(inp.accelerator), kernel_builds=dict(zip(table["variants"], map(Path, inp.builds))),
    image_manifest=Path(inp.image_manifest), runs=runs, config=table["config"],
    qemu_builds=qemus, default_qemu=snakemake.params.default_qemu,
))
Path(snakemake.log[0]).write_text(f"{len(df)} rows from {len(runs)} runs\n")
