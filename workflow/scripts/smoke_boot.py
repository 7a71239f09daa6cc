"""Boot one kernel variant with the image and run the trivial smoke job."""

from pathlib import Path

from guestio import lifetime
from guestio.vm.jobs import run_job, say_to, spec_from_config, write_provenance

# An interrupted or orphaned job stops its children and tidies up (guestio.lifetime).
lifetime.die_with_snakemake()

inp, vm = snakemake.input, dict(snakemake.params.vm)
outdir = Path(snakemake.output.provenance).parent
label = f"smoke boot of {snakemake.wildcards.variant}"
spec = spec_from_config(inputs=inp, vm=vm, job=inp.job)
with say_to(snakemake.log[0], label) as say:
    run_job(spec, outdir, vm, label, say)
    say("job output: " + (outdir / "results" / "job.log").read_text().strip().splitlines()[-1])
write_provenance(Path(snakemake.output.provenance), repo=Path(snakemake.scriptdir).parents[1], inputs=inp,
                 job=Path(inp.job), vm=vm, run_json=outdir / "run.json")
