"""Judge a KVM acceptance run (thin wrapper over guestio.report.kvm_acceptance): write the checks,
then fail, naming the checks that do not hold, unless every one does."""

from pathlib import Path

from guestio.report.kvm_acceptance import AcceptanceFailed, ExitRun, evaluate, markdown, write

inp, params = snakemake.input, snakemake.params
# Each run's directory is that of its summary.json (exits.csv, qemu-cmdline.json beside it).
ticks = [ExitRun(f"cpu exit run, {name}", Path(summary).parent, scale)
         for name, scale, summary in zip(params.tick_conditions, params.tick_scales, inp.ticks)]
net = Path(inp.net).parent
checks = evaluate(
    accelerator_json=Path(inp.accelerator),
    exit_runs=[ExitRun(f"bonnie++ exit run ({Path(s).parts[-4]})", Path(s).parent) for s in inp.bonnie]
    + ticks + [ExitRun("netperf exit run", net)],
    tick_runs=ticks,
    disk_runs=[Path(p) for p in inp.disk_runs],
    net_run=net,
)
text = markdown(checks)
Path(snakemake.log[0]).write_text(text)
print(text)
failed = [c for c in checks if not c.ok]
if failed:
    raise AcceptanceFailed("the KVM acceptance run did not show the KVM branch: "
                           + "; ".join(f"{c.name}: {c.detail}" for c in failed) + f" (see {snakemake.log[0]})")
write(checks, Path(snakemake.output.json), Path(snakemake.output.markdown))
