"""Judge a KVM acceptance run (thin wrapper over guestio.report.kvm_acceptance): write the checks,
then fail, naming the checks that do not hold, unless every one does."""

from pathlib import Path

from guestio.report.kvm_acceptance import AcceptanceFailed, ExitRun, evaluate, markdown, write

inp, params = snakemake.input, snakemake.params
checks = evaluate(
    accelerator_json=Path(inp.accelerator),
    exit_runs=[ExitRun(f"bonnie++ exit run ({Path(d).parts[-3]})", Path(d)) for d in params.bonnie_exits]
    + [ExitRun(f"cpu exit run, {name}", Path(d), scale) for name, (d, scale) in params.tick_runs.items()]
    + [ExitRun("netperf exit run", Path(params.net_exits))],
    tick_runs=[ExitRun(f"cpu exit run, {name}", Path(d), scale) for name, (d, scale) in params.tick_runs.items()],
    disk_runs=[Path(p) for p in inp.disk_runs],
    net_run=Path(params.net_exits),
)
text = markdown(checks)
Path(snakemake.log[0]).write_text(text)
print(text)
failed = [c for c in checks if not c.ok]
if failed:
    raise AcceptanceFailed("the KVM acceptance run did not show the KVM branch: "
                           + "; ".join(f"{c.name}: {c.detail}" for c in failed) + f" (see {snakemake.log[0]})")
write(checks, Path(snakemake.output.json), Path(snakemake.output.markdown))
