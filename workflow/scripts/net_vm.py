"""One repetition of the network benchmarks against GuestB (one NIC model) on the testbed."""

from pathlib import Path

from guestio import lifetime

# An interrupted or orphaned job stops QEMU and the host's benchmarks and deletes the
# testbed's namespaces (guestio.lifetime turns SIGTERM into an exception).
lifetime.die_with_snakemake()

from guestio.analysis.measurements import write_csv  # noqa: E402
from guestio.net.testbed import Shape, Testbed  # noqa: E402
from guestio.util import write_json_atomic  # noqa: E402
from guestio.vm.jobs import accelerator_of, guest_append, qemu_of, say_to, write_provenance  # noqa: E402
from guestio.workloads import netbench, netbench_records, netbench_session  # noqa: E402

inp, w, vm, net = snakemake.input, snakemake.wildcards, dict(snakemake.params.vm), snakemake.params.network
outdir = Path(snakemake.output.csv).parent
accel = accelerator_of(inp.accelerator)
label = f"net {w.variant} on {w.qemu} {w.nic} rep{w.rep}"
with say_to(snakemake.log[0], label) as say:
    with Testbed(subnet=net["subnet"], shape=Shape.from_config(net["link"]), log=say) as tb:
        testbed = tb.describe()
        result, session = netbench_session.run_vm_net(
            testbed=tb, kernel=inp.bzimage, initrd=inp.initrd, append=guest_append(vm), accel=accel,
            memory_mib=net["ram_mib"], cpus=vm["cpus"], nic=w.nic, mitigation=net["e1000_mitigation"], net=net,
            outdir=outdir, boot_timeout_s=vm["boot_timeout_s"], job_timeout_s=vm["job_timeout_s"], log=say,
            run_label=label, **qemu_of(inp))
    guest_nic = netbench_records.read_guest_nic(outdir / "results")
    guest_gro = netbench_records.read_guest_gro(outdir / "results")
    clocksource = (outdir / "results" / "clocksource.txt").read_text().strip()
    say(f"guest NIC {guest_nic.get('interface')} driver {guest_nic.get('driver')}, GRO {guest_gro['readback']}")
direction = netbench_records.direction(session.steps)
if w.variant == net["nonapi_variant"]:
    # The flag is set and read back all the same; the nonapi drivers hand packets to netif_rx.
    guest_gro["receive_path"] = "netif_rx (the nonapi drivers never call GRO, whatever the flag)"
df = netbench_records.measurement_frame(session.measurements, [netbench_records.gro_measurement(guest_gro)],
                                        experiment="net", target="vm", variant=w.variant, accelerator=accel,
                                        disk="-", clocksource=clocksource, repetition=int(w.rep), qemu=w.qemu,
                                        nic=w.nic)
write_json_atomic(outdir / "steps.json", session.summaries)
write_csv(df, Path(snakemake.output.csv))
write_provenance(Path(snakemake.output.provenance), repo=Path(snakemake.scriptdir).parents[1], inputs=inp,
                 job=Path(inp.job), vm=vm, run_json=outdir / "run.json",
                 extra={"network": {"config": net, "testbed": testbed, "guest_nic": guest_nic, **direction,
                                    "guest_gro": guest_gro,
                                    "qemu_nic_model": netbench.nic_model(w.nic),
                                    "e1000_mitigation": net["e1000_mitigation"] if w.nic == "e1000" else None,
                                    "host_tools": netbench_records.tool_versions(), "steps": session.summaries}})
