"""Table 1: top exit sites of a CPU-bound guest with its timer running, vHZ1000 against both vHZ100 routes."""

import json
from pathlib import Path

import pandas as pd

from guestio.exits import exit_tables
from guestio.exits import schema as exits
from guestio.util import write_text_atomic
from guestio.workloads.tick import PAPER_TIMER_FUNCTIONS, paper_function_sites

params, inp, out = snakemake.params, snakemake.input, snakemake.output
conditions = list(params.conditions)
tables = [exits.read_csv(p) for p in inp.exits]
summaries = [json.loads(Path(p).read_text()) for p in inp.summaries]
accelerators = {a for t in tables for a in t.accelerator}
if len(accelerators) != 1:
    raise SystemExit(f"table1: exit tables of different backends cannot share a table: {sorted(accelerators)}")
modelled = accelerators == {"tcg-modelled"}
caller = modelled  # a KVM trace has the exiting pc only

md = ["# Table 1: top exit sites of a CPU-bound guest with its timer running", "",
      "Workload: `sysbench cpu` (one thread, a fixed number of prime searches), the stand-in for SPECjbb2005 "
      "(proprietary). Window: the benchmark (`GUESTIO: phase benchmark` at both ends). Conditions: the guest "
      "at HZ=1000 (vHZ1000), HZ=100 by its configuration (the hz100 kernel), and HZ=1000 in the guest with "
      "the VMM slowing the PIT's channel 0 down tenfold (pit-scale QEMU): the tick is the PIT's in all three "
      "(kernel parameters `nolapic_timer hpet=disable lapic=notscdeadline no_timer_check`)."]
md.append("Modelled exits (TCG): instructions that would exit under Intel VMX with KVM's defaults, counted per "
          "guest pc by a QEMU plugin; no handling time. Under TCG absolute numbers are not comparable with "
          "the paper's KVM numbers." if modelled else
          "VM exits measured under KVM (kvm tracepoints of the job's window), handling time from each exit to "
          "the next entry of its vCPU thread.")
md += ["", "## The runs", "",
       "| condition | kernel | QEMU | measured tick (Hz of wall time) | intended | guest clock / wall | "
       "tick time / wall | exits in window | exits per second | sysbench events/s |",
       "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
ranked_all, latex = [], []
for name, table, s in zip(conditions, tables, summaries):
    t = s["tick"]
    n = s["exits_by_phase"].get("benchmark", 0)
    md.append(f"| {name} | {table.variant.iloc[0]} | {s['qemu']} | {t['rate_hz']:.1f} | {t['intended_hz']:g} | "
              f"{t['guest_clock_per_wall']:.3f} | {t['guest_tick_per_wall']:.3f} | {n} | {n / t['wall_s']:.0f} | "
              f"{s['cpu']['cpu_events_per_second']:.0f} |")
md.append("")
for name, table, s in zip(conditions, tables, summaries):
    part = table[table.phase == "benchmark"]
    ranked = exits.rank(part, n=None, site=exits.SITE_WITH_CALLER if caller else exits.SITE)
    top = ranked[ranked["rank"] <= params.top].assign(condition=name, qemu=s["qemu"])
    ranked_all.append(top)
    title = f"Table 1, {name} ({part.variant.iloc[0]} on QEMU {s['qemu']}), benchmark"
    md += [exit_tables.render_markdown(top.drop(columns=["condition", "qemu"]), title, modelled=modelled,
                                       caller=caller), ""]
    latex += [exit_tables.render_latex(top.drop(columns=["condition", "qemu"]), title, modelled=modelled,
                                       caller=caller, label=f"tab:table1-{len(latex)}"), ""]
    found = paper_function_sites(ranked)
    md += [f"The paper's timer functions and the sites of {name} doing their work (rank among all "
           f"{len(ranked)} sites; top {params.top} in bold):", "",
           "| paper (2.6.27) | what it is on 6.1 | sites |", "|---|---|---|"]
    for fn, (what, _) in PAPER_TIMER_FUNCTIONS.items():
        ranks = found[fn]
        shown = ", ".join(f"**{r}**" if r <= params.top else str(r) for r in ranks[:8]) or "none"
        md.append(f"| {fn} | {what} | {shown} |")
    md.append("")

write_text_atomic(Path(out.csv), pd.concat(ranked_all, ignore_index=True).to_csv(index=False, lineterminator="\n"))
write_text_atomic(Path(out.markdown), "\n".join(md))
write_text_atomic(Path(out.latex), "\n".join(latex))
Path(snakemake.log[0]).write_text("\n".join(md))
