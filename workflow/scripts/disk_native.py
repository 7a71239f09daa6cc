"""One repetition of bonnie++ natively on the host's file system."""

from pathlib import Path

from guestio import lifetime

# Before anything else: an interrupted or orphaned job stops bonnie++ and removes
# its run directory and memory cgroup (guestio.lifetime).
lifetime.die_with_snakemake()

from guestio.workloads import bonnie_native  # noqa: E402
from guestio.vm.jobs import say_to  # noqa: E402
from guestio.analysis.measurements import frame, write_csv  # noqa: E402
from guestio.provenance import host_clocksource  # noqa: E402

disk, rep = snakemake.params.disk, int(snakemake.wildcards.rep)
outdir = Path(snakemake.output.csv).parent
with say_to(snakemake.log[0], f"disk native rep{rep}") as say:
    measurements = bonnie_native.run_native(
        Path(disk["native_dir"]), disk["size_mib"], disk["ram_mib"], outdir, log=say,
        memory_limit_mib=disk["ram_mib"] if disk["native_memory_limit"] else None,
        max_size_mib=disk["native_max_size_mib"],
    )
write_csv(frame(experiment="disk", target="native", variant="host", accelerator="native", disk="host-fs",
                clocksource=host_clocksource(), repetition=rep, measurements=measurements),
          Path(snakemake.output.csv))
