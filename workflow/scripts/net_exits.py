"""Exit sites of the guest under netperf (Table 2), from the backend the accelerator decision picks.

The guest (GuestB, kernel variant and NIC of config network.exits) runs the tests of
network.exits.tests as the paper's netperf client, sending to HostA's netserver, each in its
own console window, so the exits of each benchmark are counted apart.  KVM: the kvm tracepoints (guestio.exits.kvm.hook.KvmExitTracer);
TCG: the exitcount plugin (guestio.exits.tcg.plugin.ExitCounter), checked against QEMU's trace.
"""

from pathlib import Path

from guestio import lifetime

lifetime.die_with_snakemake()

from guestio.exits import schema as exits  # noqa: E402
from guestio.exits.backends import backend_for, run_sites, tracer_for  # noqa: E402
from guestio.net.testbed import Shape, Testbed  # noqa: E402
from guestio.util import write_json_atomic  # noqa: E402
from guestio.vm.jobs import accelerator_of, guest_append, qemu_of, say_to, write_provenance  # noqa: E402
from guestio.workloads import netbench_records, netbench_session  # noqa: E402

inp, out, w = snakemake.input, snakemake.output, snakemake.wildcards
vm, net, cfg = dict(snakemake.params.vm), snakemake.params.network, snakemake.params.network["exits"]
outdir = Path(out.exits).parent
backend = backend_for(accelerator_of(inp.accelerator))
label = f"exits netperf {w.variant} {cfg['nic']} ({backend})"
with say_to(snakemake.log[0], label) as say:
    hook = tracer_for(backend, plugin=inp.get("plugin"), tracefs=snakemake.params.tracefs)
    with Testbed(subnet=net["subnet"], shape=Shape.from_config(net["link"]), log=say) as tb:
        testbed = tb.describe()
        result, session = netbench_session.run_vm_net(
            testbed=tb, kernel=inp.bzimage, initrd=inp.initrd, append=guest_append(vm), accel=backend,
            memory_mib=net["ram_mib"], cpus=vm["cpus"], nic=cfg["nic"], mitigation=net["e1000_mitigation"],
            net=net, tests=cfg["tests"], outdir=outdir, boot_timeout_s=vm["boot_timeout_s"],
            job_timeout_s=vm["job_timeout_s"], log=say, hooks=[hook], run_label=label, **qemu_of(inp))
    table, summary = run_sites(backend, hook, outdir, inp.system_map, workload="netperf", variant=w.variant,
                               say=say)
    # Exits per MiB the guest sent in each TCP_STREAM window (GuestB -> HostA, the paper's way).
    sent = {}
    for step, ms in session.measurements:
        for m in ms:
            if m.metric == f"{step.metric_prefix}_throughput" and step.kind == "netperf":
                seconds = next(float(s["ELAPSED_TIME"]) for s in session.summaries if s["step"] == step.name)
                sent[step.name] = m.value * 1e6 * seconds / 8 / 2**20
    summary["windows"] = {name: {"exits": int(table[table.phase == name]["count"].sum())}
                          for name in (s.name for s, _ in session.measurements)}
    for name, mib in sent.items():
        summary["windows"][name]["sent_mib"] = round(mib, 1)
        summary["windows"][name]["exits_per_mib_sent"] = round(summary["windows"][name]["exits"] / mib, 1)
    summary["nic"] = cfg["nic"]
    summary["e1000_mitigation"] = net["e1000_mitigation"] if cfg["nic"] == "e1000" else None
    summary["steps"] = session.summaries
    summary["direction"] = netbench_records.direction(session.steps)
    summary["guest_gro"] = netbench_records.read_guest_gro(outdir / "results")
    exits.write_csv(table, Path(out.exits))
    write_json_atomic(Path(out.summary), summary)
    for name, wnd in summary["windows"].items():
        say(f"{name}: {wnd['exits']} exits" + (f", {wnd['exits_per_mib_sent']} per MiB sent"
                                               if "exits_per_mib_sent" in wnd else ""))
write_provenance(Path(out.provenance), repo=Path(snakemake.scriptdir).parents[1], inputs=inp,
                 job=Path(inp.job), vm=vm, run_json=outdir / "run.json",
                 extra={"network": {"config": net, "testbed": testbed, **summary["direction"],
                                    "guest_gro": summary["guest_gro"], "host_tools": netbench_records.tool_versions()}})
