"""One repetition of bonnie++ in the guest on the data disk."""

from pathlib import Path

from guestio import lifetime
from guestio.analysis.measurements import frame, write_csv
from guestio.vm.jobs import accelerator_of, guest_append, qemu_of, say_to, write_provenance
from guestio.workloads import bonnie_vm, hostdisk, tick

# An interrupted or orphaned job stops its children and tidies up (guestio.lifetime).
lifetime.die_with_snakemake()

inp, w, vm, disk = snakemake.input, snakemake.wildcards, dict(snakemake.params.vm), snakemake.params.disk
outdir = Path(snakemake.output.csv).parent
accel = accelerator_of(inp.accelerator)
label = f"disk {w.variant} on {w.qemu} {w.disk} guest-{w.gsched} host-{w.hsched} rep{w.rep}"
# The guest's tick (vm.tick, the PIT scale of this QEMU variant): measured, and checked.
tick_settings = tick.settings(snakemake.config, w.qemu)
tick_hooks = tick.hooks_for(tick_settings, accel)
# Host scheduler other than "file": the data disk on a loop device with that scheduler, made
# for this run and detached after it however it ends (guestio.workloads.hostdisk).
with say_to(snakemake.log[0], label) as say, hostdisk.host_disk(w.hsched, inp.data_disk, outdir, say=say) as host:
    result, measurements = bonnie_vm.run_vm_bonnie(
        kernel=inp.bzimage, initrd=inp.initrd, append=guest_append(vm), accel=accel,
        memory_mib=disk["ram_mib"], cpus=vm["cpus"], data_disk=inp.data_disk, interface=w.disk,
        cache=vm["disk_cache"], io_scheduler=w.gsched, size_mib=disk["size_mib"], ram_mib=disk["ram_mib"], outdir=outdir,
        boot_timeout_s=vm["boot_timeout_s"], job_timeout_s=vm["job_timeout_s"], log=say, run_label=label,
        hooks=[tick_hooks], host_disk=host.device if host else None, **qemu_of(inp),
    )
    ticked = tick.measure_run(outdir / "results", tick_hooks, tick_settings, inp.kconfig, where=label)
    say(ticked.describe())
    guest = bonnie_vm.read_guest_info(outdir / "results")
    say(f"block write {next(m.value for m in measurements if m.metric == 'block_write_throughput'):.0f} KiB/s "
        f"(clocksource {guest.clocksource}, scheduler {guest.scheduler})")
write_csv(frame(experiment="disk", target="vm", variant=w.variant, accelerator=accel, disk=w.disk,
                clocksource=guest.clocksource, repetition=int(w.rep), measurements=measurements + ticked.measurements(),
                qemu=w.qemu, guest_scheduler=guest.scheduler, host_scheduler=w.hsched),
          Path(snakemake.output.csv))
write_provenance(Path(snakemake.output.provenance), repo=Path(snakemake.scriptdir).parents[1], inputs=inp,
                 job=Path(inp.job), vm=vm, run_json=outdir / "run.json", extra={"tick": ticked.to_json(),
                        "host_disk": host.to_json() if host else {"scheduler": "file"}})
