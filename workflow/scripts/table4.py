"""Table 4: port-I/O exits at the hottest call sites before and after merging the taskfile writes.

Before: the unmerged guest (diskmods.coalesce.before, by default baseline on the stock QEMU:
Table 3's exit run and Fig 1's bonnie++ runs); after: the coalesce kernel on the coalesce QEMU
(its doorbell replays a batch of port accesses per write).  A call site is the function that
issued the port I/O: the caller of an I/O accessor (iowrite8, ioread8, ...), else the
function itself; the coalesce patch's doorbell write (iowrite32 to port 0x530) is thus counted
at the function that filled the batch.  Counts are of the benchmark phase (bonnie++), per GiB
the guest wrote to the data disk.  Beside them: bonnie++ block write/read throughput and CPU
of both, means with seeded bootstrap CIs, after/before with Welch's test.
"""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from guestio.analysis import measurements
from guestio.analysis.stats import bootstrap_mean_ci, bootstrap_ratio_ci, welch_significance
from guestio.exits import schema as exits
from guestio.util import sha256_file, write_json_atomic, write_text_atomic

#: Functions that only carry out a port access for their caller (lib/iomap.c and friends).
ACCESSORS = {"ioread8", "ioread16", "ioread32", "iowrite8", "iowrite16", "iowrite32",
             "ioread8_rep", "ioread16_rep", "ioread32_rep", "iowrite8_rep", "iowrite16_rep", "iowrite32_rep",
             "io_serial_in", "io_serial_out"}
DOORBELL_PORT = 0x530
#: The disk driver's functions (libata, ata_piix): Table 4 ranks their call sites.  The hottest
#: port I/O overall is the guest's clocksource (acpi_pm_read), which merging does not touch; it
#: is listed apart.
DRIVER_PREFIXES = ("ata_", "__ata_", "piix_")
#: Table 4 of the paper: (before, after) at its two call sites.
PAPER = [(111050, 17226), (15864, 2343)]
METRICS = [("block_write_throughput", "block write throughput"), ("block_read_throughput", "block read throughput"),
           ("block_write_cpu", "block write CPU"), ("block_read_cpu", "block read CPU")]
TCG_NOTE = ("Modelled exits (TCG): instructions that would exit under Intel VMX with KVM's defaults, counted per "
            "guest pc by a QEMU plugin; the coalesce device's replays run inside QEMU and are no exits. Throughput "
            "and CPU come from QEMU TCG emulation, not KVM: not comparable with the paper's numbers in absolute terms.")


def port_io(table: pd.DataFrame) -> pd.DataFrame:
    """The benchmark phase's port-I/O rows, with their call site."""
    rows = table[(table.phase == "benchmark") & table.exit_kind.isin(["pio_in", "pio_out"])].copy()
    callers = rows.caller.fillna("")
    rows["site"] = np.where(rows.function.isin(ACCESSORS) & (callers != ""), callers,
                            rows.function.replace("", "(unknown)"))
    return rows


def via(rows: pd.DataFrame) -> str:
    """How a site's port I/O was done: accessor, direction and ports, most exits first."""
    parts = []
    grouped = rows.groupby(["function", "exit_kind"], sort=False)["count"].sum().sort_values(ascending=False)
    for (fn, kind), n in grouped.items():
        ports = sorted({int(p) for p in rows[(rows.function == fn) & (rows.exit_kind == kind)].port_or_address
                        if not pd.isna(p)})
        shown = ", ".join(f"0x{p:x}" for p in ports[:3]) + (f", +{len(ports) - 3}" if len(ports) > 3 else "")
        doorbell = " (doorbell)" if ports == [DOORBELL_PORT] and kind == "pio_out" else ""
        parts.append(f"{fn} {'in' if kind == 'pio_in' else 'out'} {shown}{doorbell}: {int(n)}".replace("  ", " "))
    return "; ".join(parts)


def per_gib(count: float, written_mib: float | None) -> float:
    return count / written_mib * 1024 if written_mib else math.nan


def values(df: pd.DataFrame, side: dict, metric: str) -> np.ndarray:
    sel = df[(df.target == "vm") & (df.variant == side["variant"]) & (df.qemu == side["qemu"]) & (df.metric == metric)]
    sel = sel.sort_values("repetition", kind="stable")
    v = pd.to_numeric(sel.value, errors="coerce").to_numpy(dtype=float)
    unit = sel.unit.iloc[0] if len(sel) else ""
    v = v[~np.isnan(v)]
    return (v / 1024.0, "MiB/s") if unit == "KiB/s" else (v, unit)


def fmt_ci(mean: float, low: float, high: float, digits: int = 1) -> str:
    if math.isnan(low):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def main(snakemake) -> None:
    inp, out, params = snakemake.input, snakemake.output, snakemake.params
    sides = dict(params.sides)
    names = ["before", "after"]
    tables = {s: exits.read_csv(p) for s, p in zip(names, inp.exits)}
    summaries = {s: json.loads(Path(p).read_text()) for s, p in zip(names, inp.summaries)}
    accelerators = {a for t in tables.values() for a in t.accelerator}
    if len(accelerators) != 1:
        raise SystemExit(f"table4: the two exit runs come from different backends: {sorted(accelerators)}")
    modelled = accelerators == {"tcg-modelled"}
    exit_accelerator = sorted(accelerators)[0]
    pio = {s: port_io(tables[s]) for s in names}
    if not modelled:
        # KVM tracepoints do not see the guest's stack: a site is the exiting function and its ports.
        for s in names:
            pio[s]["site"] = [f"{fn} ({'in' if k == 'pio_in' else 'out'} 0x{int(p):x})" if not pd.isna(p) else fn
                              for fn, k, p in zip(pio[s].function, pio[s].exit_kind, pio[s].port_or_address)]
    written = {s: summaries[s].get("written_mib") for s in names}
    counts = {s: pio[s].groupby("site")["count"].sum() for s in names}
    driver = counts["before"][[str(site).startswith(DRIVER_PREFIXES) for site in counts["before"].index]]
    top = driver.sort_values(ascending=False, kind="stable").head(params.sites)
    others = counts["before"][~counts["before"].index.isin(driver.index)].sort_values(ascending=False, kind="stable")
    label = {s: f"{sides[s]['variant']} on QEMU {sides[s]['qemu']}" for s in names}

    long_rows, md = [], [
        "# Table 4: port-I/O exits at the hottest call sites before and after merging the taskfile writes",
        "", TCG_NOTE if modelled else
        "VM exits measured under KVM (kvm tracepoints of the job's window); KVM does not see the guest's stack, so a "
        "site is the exiting function with its ports.", "",
        f"Before: {label['before']}; after: {label['after']} (the doorbell at port 0x{DOORBELL_PORT:x} replays a "
        f"batch of taskfile accesses per write). bonnie++ benchmark phase; the guest wrote "
        f"{written['before']} MiB before and {written['after']} MiB after to the data disk (its block-device "
        "counters); counts per GiB written so that runs of different sizes compare. Call sites of the disk "
        "driver (libata), the function that issued the port I/O (an I/O accessor's caller).", "",
        "| # | call site | before: exits | per GiB | after: exits | per GiB | change | paper: before -> after (change) |",
        "|---:|---|---:|---:|---:|---:|---:|---|"]
    detail = []
    for rank, (site, before) in enumerate(top.items(), start=1):
        after = int(counts["after"].get(site, 0))
        pb, pa = per_gib(before, written["before"]), per_gib(after, written["after"])
        change = (pa / pb - 1) * 100 if pb else math.nan
        paper = PAPER[rank - 1] if rank <= len(PAPER) else None
        paper_text = (f"{paper[0]} -> {paper[1]} ({(paper[1] / paper[0] - 1) * 100:+.1f}%)" if paper else "")
        md.append(f"| {rank} | {site} | {int(before)} | {pb:.0f} | {after} | {pa:.0f} | {change:+.1f}% | {paper_text} |")
        detail.append(f"- **{site}**: before: {via(pio['before'][pio['before'].site == site])}; after: "
                      f"{via(pio['after'][pio['after'].site == site]) or 'no port I/O'}")
        for s, n, g in (("before", before, pb), ("after", after, pa)):
            for metric, value, unit in (("port_io_exits", n, "exits"), ("port_io_exits_per_gib", g, "exits/GiB")):
                long_rows.append({"experiment": "table4", "side": s, "variant": sides[s]["variant"],
                                  "qemu": sides[s]["qemu"], "accelerator": exit_accelerator, "site_rank": rank, "site": site, "metric": metric,
                                  "value": value, "unit": unit,
                                  "paper": paper[0 if s == "before" else 1] if paper else ""})
    totals = {s: int(pio[s]["count"].sum()) for s in names}
    all_exits = {s: int(tables[s][tables[s].phase == "benchmark"]["count"].sum()) for s in names}
    doorbells = int(pio["after"][(pio["after"].exit_kind == "pio_out") &
                                 (pio["after"].port_or_address == DOORBELL_PORT)]["count"].sum())
    replayed = summaries["after"].get("cross_check", {}).get("replayed_port_accesses")
    merged = sorted(set(pio["after"][(pio["after"].exit_kind == "pio_out") &
                                     (pio["after"].port_or_address == DOORBELL_PORT)].site))
    md += ["", "Where the exits of each site come from (accessor, direction, ports: exits):", "", *detail, "",
           "Every call site that rings the doorbell after merging: " + "; ".join(
               f"{site} {int(counts['before'].get(site, 0))} -> {int(counts['after'].get(site, 0))} "
               f"({per_gib(counts['before'].get(site, 0), written['before']):.0f} -> "
               f"{per_gib(counts['after'].get(site, 0), written['after']):.0f} per GiB)" for site in merged) + ".",
           "", "Port I/O outside the disk driver, not merged (the hottest): " + "; ".join(
               f"{site} {int(n)} -> {int(counts['after'].get(site, 0))}" for site, n in others.head(2).items()) + ".",
           "",
           "| all sites | before | after | change |", "|---|---:|---:|---:|"]
    for what, d in (("port-I/O exits per GiB written", totals), ("all exits per GiB written", all_exits)):
        b, a = per_gib(d["before"], written["before"]), per_gib(d["after"], written["after"])
        md.append(f"| {what} | {b:.0f} | {a:.0f} | {(a / b - 1) * 100:+.1f}% |")
        for s, v in (("before", b), ("after", a)):
            long_rows.append({"experiment": "table4", "side": s, "variant": sides[s]["variant"], "qemu": sides[s]["qemu"],
                              "accelerator": exit_accelerator, "site_rank": 0, "site": "(all)", "metric": what.replace(" ", "_").replace("-", "_"),
                              "value": v, "unit": "exits/GiB", "paper": ""})
    md += ["", f"Doorbell writes after merging: {doorbells}" + (
        f"; port accesses the device replayed for them: {replayed} ({replayed / doorbells:.1f} per doorbell)"
        if replayed and doorbells else "") + ".", ""]

    # bonnie++ of both sides
    bonnie = measurements.read_csv(Path(inp.bonnie))
    bonnie_accelerator = ",".join(sorted(set(bonnie[bonnie.target == "vm"].accelerator)))
    md += ["## bonnie++ (mean [95% bootstrap CI] of each side's repetitions)", "",
           f"| metric | before: {label['before']} | after: {label['after']} | after/before | Welch p |",
           "|---|---:|---:|---:|---:|"]
    for metric, name in METRICS:
        (bv, unit), (av, _) = values(bonnie, sides["before"], metric), values(bonnie, sides["after"], metric)
        if bv.size == 0 or av.size == 0:
            md.append(f"| {name} | n/a | n/a | | |")
            continue
        bm, am = bootstrap_mean_ci(bv, params.seed), bootstrap_mean_ci(av, params.seed)
        ratio = bootstrap_ratio_ci(av, bv, params.seed)
        p = welch_significance(av, bv) if bv.size > 1 and av.size > 1 else math.nan
        md.append(f"| {name} ({unit}) | {fmt_ci(*bm)} (n={bv.size}) | {fmt_ci(*am)} (n={av.size}) "
                  f"| {fmt_ci(*ratio, digits=3)} | {p:.3g} |")
        for s, (m, lo, hi), n in (("before", bm, bv.size), ("after", am, av.size)):
            long_rows.append({"experiment": "table4", "side": s, "variant": sides[s]["variant"], "qemu": sides[s]["qemu"],
                              "accelerator": bonnie_accelerator, "site_rank": 0, "site": "", "metric": metric, "value": m, "unit": unit, "paper": "",
                              "ci_low": lo, "ci_high": hi, "n": n})
        long_rows.append({"experiment": "table4", "side": "after/before", "variant": "", "qemu": "",
                          "accelerator": bonnie_accelerator, "site_rank": 0,
                          "site": "", "metric": f"{metric}_ratio", "value": ratio[0], "unit": "", "paper": "",
                          "ci_low": ratio[1], "ci_high": ratio[2], "welch_p": p})
    md += ["", "The paper: 111050 -> 17226 and 15864 -> 2343 exits (about -85%) at its two call sites (counts of its "
           "disk I/O run, not per GiB); I/O throughput almost unchanged; CPU utilisation somewhat lower.", ""]

    latex = [r"\begin{table}[htbp]", r"\centering",
             r"\caption{Table 4: port-I/O exits per GiB written before/after merging the taskfile writes"
             + (" (modelled exits, TCG)" if modelled else "") + "}", r"\label{tab:table4}",
             r"\begin{tabular}{rlrrrl}", r"\toprule",
             r"\# & call site & before & after & change & paper \\", r"\midrule"]
    for rank, (site, before) in enumerate(top.items(), start=1):
        after = int(counts["after"].get(site, 0))
        pb, pa = per_gib(before, written["before"]), per_gib(after, written["after"])
        paper = PAPER[rank - 1] if rank <= len(PAPER) else None
        latex.append(f"{rank} & \\texttt{{{site.replace('_', chr(92) + '_')}}} & {pb:.0f} & {pa:.0f} & "
                     f"{(pa / pb - 1) * 100:+.1f}\\% & " + (f"{paper[0]} $\\to$ {paper[1]}" if paper else "") + r" \\")
    latex += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]

    frame = pd.DataFrame(long_rows)
    write_text_atomic(Path(out.csv), frame.to_csv(index=False, lineterminator="\n"))
    write_text_atomic(Path(out.markdown), "\n".join(md) + "\n")
    write_text_atomic(Path(out.latex), "\n".join(latex))
    provenance = {
        "artifact": "table4", "sides": sides, "sites": params.sites, "seed": params.seed,
        "accelerator": sorted(accelerators)[0],
        "exit_runs": {s: json.loads(Path(p).read_text()) for s, p in zip(names, inp.exit_provenance)},
        "bonnie_table": {"path": str(inp.bonnie), "sha256": sha256_file(Path(inp.bonnie)),
                         "provenance": json.loads(Path(inp.bonnie_provenance).read_text())},
        "inputs": {str(p): sha256_file(Path(p)) for p in [*inp.exits, *inp.summaries]},
    }
    write_json_atomic(Path(out.provenance), provenance)
    Path(snakemake.log[0]).write_text("\n".join(md) + "\n")


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
