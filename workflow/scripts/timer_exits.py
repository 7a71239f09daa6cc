"""Exit sites of the CPU-bound job (Table 1) on one kernel and QEMU variant, with its tick measured.

The backend follows the accelerator decision, as for Table 3: KVM tracepoints of the job's
window, or the exitcount plugin's modelled exits under TCG (checked against QEMU's trace).
"""

from pathlib import Path

from guestio import lifetime
from guestio.analysis.measurements import frame, write_csv
from guestio.exits import schema as exits
from guestio.exits.backends import backend_for, run_sites, tracer_for
from guestio.util import write_json_atomic
from guestio.vm.jobs import accelerator_of, run_job, say_to, spec_from_config, write_provenance
from guestio.workloads import cpuload, tick

# An interrupted or orphaned job stops its children and tidies up (guestio.lifetime).
lifetime.die_with_snakemake()

inp, out, w, params = snakemake.input, snakemake.output, snakemake.wildcards, snakemake.params
vm, cpu, tick_settings = dict(params.vm), dict(params.cpu), tick.settings(snakemake.config, w.qemu)
outdir = Path(out.exits).parent
backend = backend_for(accelerator_of(inp.accelerator))
label = f"exits {w.workload} {w.variant} on {w.qemu} ({backend})"
with say_to(snakemake.log[0], label) as say:
    files = {"params": cpuload.write_params(outdir / "params", cpu["events"], cpu["max_prime"])}
    spec = spec_from_config(inputs=inp, vm=vm, job=Path(inp.job), memory_mib=cpu["ram_mib"], files=files)
    tick_hooks = tick.hooks_for(tick_settings, spec.accel)
    tracer = tracer_for(backend, plugin=inp.get("plugin"), tracefs=params.tracefs)
    run_job(spec, outdir, vm, label, say, hooks=[tick_hooks, tracer])
    ticked = tick.measure_run(outdir / "results", tick_hooks, tick_settings, inp.kconfig, where=label)
    say(ticked.describe())
    measurements = cpuload.read_result(outdir / "results", cpu["events"])
    table, summary = run_sites(backend, tracer, outdir, inp.system_map, workload="cpu", variant=w.variant,
                               say=say)
    summary["qemu"] = w.qemu
    summary["tick"] = ticked.to_json()
    summary["cpu"] = {m.metric: m.value for m in measurements}
    exits.write_csv(table, Path(out.exits))
    write_json_atomic(Path(out.summary), summary)
write_csv(frame(experiment="cpu", target="vm", variant=w.variant, accelerator=backend, disk="-",
                clocksource=(outdir / "results" / "clocksource.txt").read_text().strip(), repetition=0,
                measurements=measurements + ticked.measurements(), qemu=w.qemu),
          Path(out.measurements))
write_provenance(Path(out.provenance), repo=Path(snakemake.scriptdir).parents[1], inputs=inp,
                 job=Path(inp.job), vm=vm, run_json=outdir / "run.json", extra={"tick": ticked.to_json()})
