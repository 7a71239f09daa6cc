"""One repetition of the network benchmarks natively: HostB sends to HostA over the veth pair (the
paper's netperf client in HostB), with HostA's reverse extra."""

from pathlib import Path

from guestio import lifetime

# An interrupted or orphaned job stops the benchmarks and deletes the testbed (guestio.lifetime).
lifetime.die_with_snakemake()

from guestio.analysis.measurements import write_csv  # noqa: E402
from guestio.net.testbed import Shape, Testbed  # noqa: E402
from guestio.provenance import _load, checkout, host_clocksource  # noqa: E402
from guestio.util import write_json_atomic  # noqa: E402
from guestio.vm.jobs import say_to  # noqa: E402
from guestio.workloads import netbench_records, netbench_session  # noqa: E402

net, rep = snakemake.params.network, int(snakemake.wildcards.rep)
outdir = Path(snakemake.output.csv).parent
with say_to(snakemake.log[0], f"net native rep{rep}") as say:
    with Testbed(subnet=net["subnet"], shape=Shape.from_config(net["link"]), log=say) as tb:
        testbed = tb.describe()
        results, summaries = netbench_session.run_native_net(testbed=tb, net=net, outdir=outdir, log=say)
df = netbench_records.measurement_frame(results, experiment="net", target="native", variant="host",
                                        accelerator="native", disk="-", clocksource=host_clocksource(),
                                        repetition=rep, nic="veth")
write_json_atomic(outdir / "steps.json", summaries)
write_csv(df, Path(snakemake.output.csv))
direction = netbench_records.direction([step for step, _ in results])
write_json_atomic(Path(snakemake.output.provenance), {
    "network": {"config": net, "testbed": testbed, **direction, "host_tools": netbench_records.tool_versions(),
                "steps": summaries},
    "guestio": checkout(Path(snakemake.scriptdir).parents[1]),
    **{k: v for k, v in _load(Path(snakemake.input.host)).items()},
})
