"""Every disk run in one long-form table, with the provenance they share."""

from pathlib import Path

from guestio.analysis.measurements import combine, write_csv
from guestio.provenance import experiment_provenance
from guestio.util import write_json_atomic

inp, params = snakemake.input, snakemake.params
runs = [Path(p) for p in [*inp.native, *inp.vm]]
table = combine(runs)
write_csv(table, Path(snakemake.output.csv))
write_json_atomic(Path(snakemake.output.provenance), experiment_provenance(
    experiment="disk", repo=Path(snakemake.scriptdir).parents[1], host=Path(inp.host),
    accelerator=Path(inp.accelerator), kernel_builds=dict(zip(params.variants, map(Path, inp.builds))),
    image_manifest=Path(inp.image_manifest), runs=runs, config={"vm": dict(params.vm), "disk": dict(params.disk)},
    qemu_build=Path(inp.qemu),
))
Path(snakemake.log[0]).write_text(f"{len(table)} rows from {len(runs)} runs\n")
