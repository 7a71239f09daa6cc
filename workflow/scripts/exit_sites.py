"""Exit sites of bonnie++ in the guest, from the backend the accelerator decision picks.

KVM: the kvm tracepoints of the job's window (or a KVM run recorded elsewhere, config
exits.kvm_recorded); TCG: the exitcount plugin, checked against QEMU's own trace.
"""

from pathlib import Path

from guestio import lifetime
from guestio.exits import schema as exits
from guestio.exits.backends import backend_for, run_sites, tracer_for
from guestio.util import write_json_atomic
from guestio.vm.jobs import accelerator_of, guest_append, qemu_of, say_to, write_provenance
from guestio.workloads import bonnie_vm, tick

# An interrupted or orphaned job stops its children and tidies up (guestio.lifetime).
lifetime.die_with_snakemake()

inp, out, w = snakemake.input, snakemake.output, snakemake.wildcards
vm, cfg, recorded = dict(snakemake.params.vm), snakemake.params.exits, snakemake.params.recorded
outdir = Path(out.exits).parent
backend = backend_for(accelerator_of(inp.accelerator))
label = f"exits {w.workload} {w.variant} on {w.qemu} ({backend})"
with say_to(snakemake.log[0], label) as say:
    if recorded:
        say(f"reading the KVM run recorded in {recorded} (no boot here)")
        run_dir = Path(recorded)
    else:
        hook = tracer_for(backend, plugin=inp.get("plugin"), tracefs=cfg["tracefs"])
        # The guest's tick, measured and checked (guestio.workloads.tick).
        tick_settings = tick.settings(snakemake.config, w.qemu)
        tick_hooks = tick.hooks_for(tick_settings, backend)
        bonnie_vm.run_vm_bonnie(
            kernel=inp.bzimage, initrd=inp.initrd, append=guest_append(vm), accel=backend,
            memory_mib=cfg["ram_mib"], data_disk=inp.data_disk, interface=cfg["interface"], cache=vm["disk_cache"],
            io_scheduler=snakemake.params.guest_scheduler,
            size_mib=cfg["size_mib"], ram_mib=cfg["ram_mib"], outdir=outdir, boot_timeout_s=vm["boot_timeout_s"],
            job_timeout_s=vm["job_timeout_s"], log=say, hooks=[tick_hooks, hook], run_label=label, **qemu_of(inp),
        )
        ticked = tick.measure_run(outdir / "results", tick_hooks, tick_settings, inp.kconfig, where=label)
        say(ticked.describe())
        run_dir = outdir
    table, summary = run_sites(backend, None if recorded else hook, run_dir, inp.system_map,
                               workload="bonnie++", variant=w.variant, say=say)
    if not recorded:
        summary["tick"] = ticked.to_json()
    exits.write_csv(table, Path(out.exits))
    write_json_atomic(Path(out.summary), summary)
    if summary["exits_per_mib_written"] is not None:
        say(f"{summary['exits_per_mib_written']:.1f} exits per MiB written")
write_provenance(Path(out.provenance), repo=Path(snakemake.scriptdir).parents[1], inputs=inp,
                 job=Path(inp.job), vm=vm, run_json=run_dir / "run.json")
