"""Modelled VM exits of bonnie++ in the guest: the exitcount plugin, checked against QEMU's trace."""

from pathlib import Path

from guestio.workloads import bonnie
from guestio.exits import schema as exits
from guestio.exits import tcg as tcgexits
from guestio.vm.jobs import guest_append, say_to, write_provenance
from guestio.util import write_json_atomic

inp, out, w = snakemake.input, snakemake.output, snakemake.wildcards
vm, cfg = dict(snakemake.params.vm), snakemake.params.exits
outdir = Path(out.exits).parent
plugin_csv, qemu_log = outdir / "exitcount.csv", outdir / "qemu.log"
extra = tcgexits.plugin_argv(inp.plugin, plugin_csv, outdir / "serial.log", seq=True) + tcgexits.trace_argv(qemu_log)
with say_to(snakemake.log[0], f"exits {w.variant}") as say:
    bonnie.run_vm_bonnie(
        kernel=inp.bzimage, initrd=inp.initrd, append=guest_append(vm), accel="tcg", memory_mib=cfg["ram_mib"],
        data_disk=inp.data_disk, interface=cfg["interface"], cache=vm["disk_cache"], size_mib=cfg["size_mib"],
        ram_mib=cfg["ram_mib"], outdir=outdir, boot_timeout_s=vm["boot_timeout_s"],
        job_timeout_s=vm["job_timeout_s"], log=say, extra_args=extra,
    )
    rows = tcgexits.read_plugin_csv(plugin_csv)
    sequence = tcgexits.parse_sequence(qemu_log)
    check = tcgexits.cross_check(rows, sequence)
    (outdir / "crosscheck.txt").write_text(check.summary() + "\n")
    say(check.summary().splitlines()[0])
    if not check.ok:
        raise SystemExit(f"exits {w.variant}: the plugin disagrees with QEMU's trace events: {outdir / 'crosscheck.txt'}")
    qemu_log.unlink()  # hundreds of MB; what it proved is in crosscheck.txt
    table = tcgexits.to_exits_frame(rows, inp.system_map, workload="bonnie++", variant=w.variant,
                                    pio_ports=sequence.pio_by_site)
    exits.write_csv(table, Path(out.exits))
    summary = exits.run_summary(table, outdir / "results", instructions=tcgexits.phase_instructions(rows))
    summary["cross_check"] = {"ok": check.ok, "port_accesses": sum(check.pio_qemu.values()),
                              "ports": len(check.pio_qemu), "mmio_accesses": sum(check.mmio_qemu.values())}
    write_json_atomic(Path(out.summary), summary)
    say(f"{summary['exits_per_mib_written']:.1f} modelled exits per MiB written")
write_provenance(Path(out.provenance), repo=Path(snakemake.scriptdir).parents[1], inputs=inp,
                 job=Path(inp.job), vm=vm, run_json=outdir / "run.json")
