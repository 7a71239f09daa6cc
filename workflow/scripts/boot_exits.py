"""One boot-only exit run (guestio.exits.bootonly): the kernel booted to its panic at the missing
root under the exit plugin, its exit table and its metrics as a long-form measurement table."""

from pathlib import Path

from guestio import lifetime
from guestio.analysis.measurements import frame, write_csv
from guestio.exits import schema as exits
from guestio.exits import bootonly
from guestio.exits.tcg.exit_rows import to_exits
from guestio.exits.tcg.plugin_csv import read_plugin_csv
from guestio.provenance import boot_run_provenance
from guestio.util import write_json_atomic
from guestio.vm.jobs import guest_append, qemu_of, say_to

# An interrupted or orphaned job stops its children and tidies up (guestio.lifetime).
lifetime.die_with_snakemake()

inp, out, w, params = snakemake.input, snakemake.output, snakemake.wildcards, snakemake.params
vm = dict(params.vm)
outdir = Path(out.exits).parent
label = f"boot exits {w.variant} rep{w.rep}"
with say_to(snakemake.log[0], label) as say:
    booted = bootonly.run(**qemu_of(inp), kernel=Path(inp.bzimage), append=guest_append(vm),
                          memory_mib=params.memory_mib, plugin=Path(inp.plugin), outdir=outdir,
                          timeout_s=vm["boot_timeout_s"], log=say)
    rows = to_exits(read_plugin_csv(booted.csv), inp.system_map, workload="boot", variant=w.variant)
    exits.write_csv(exits.frame(rows), Path(out.exits))
    measured = bootonly.measurements(rows)
    say(", ".join(f"{m.metric} {m.value:.0f}" for m in measured))
    write_csv(frame(experiment="boot", target="vm", variant=w.variant, accelerator="tcg-modelled", disk="-",
                    clocksource=vm["clocksource"], repetition=int(w.rep), measurements=measured,
                    qemu=params.qemu), Path(out.csv))
write_json_atomic(Path(out.provenance), boot_run_provenance(
    repo=Path(snakemake.scriptdir).parents[1], host=Path(inp.host), kernel_build=Path(inp.build),
    qemu_build=Path(inp.qemu), plugin=Path(inp.plugin), vm=vm, append=guest_append(vm),
    seconds=booted.seconds, panic=booted.panic))
