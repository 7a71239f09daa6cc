"""Table 4: port-I/O exits at the hottest call sites before and after merging the taskfile writes.

Before: the unmerged guest (diskmods.coalesce.before, by default baseline on the stock QEMU:
Table 3's exit run is its repetition 0, Fig 1's bonnie++ runs its throughput); after: the
coalesce kernel on the coalesce QEMU (its doorbell replays a batch of port accesses per write).
Each side has diskmods.coalesce.exit_repetitions independent exit runs.

A call site is the function that issued the port I/O: under TCG (modelled exits) the caller of
an I/O accessor (iowrite8, ioread8, ...), else the function itself; the coalesce patch's
doorbell write (iowrite32 to port 0x530) is thus counted at the function that filled the batch.
KVM's tracepoints do not see the guest's stack: there a site is the exiting accessor with its
ports, and the merged site is matched by function and port (the taskfile writes and the
doorbell).  Counts are of the benchmark phase (bonnie++), per GiB the guest wrote to the data
disk, per run; each site's after/before is the ratio of the runs' means with a seeded bootstrap
CI over runs.  Beside them: bonnie++ block write/read throughput and CPU of both, means with
seeded bootstrap CIs, after/before with Welch's test.
"""

import json
import math
from dataclasses import dataclass
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
#: The call site whose run of taskfile writes the patch merges (PAPER.md): the site the claims
#: table judges (its rows have site_role "merged").
MERGED_SITE = "ata_sff_tf_load"
#: The IDE channels' taskfile registers (primary, secondary) and their control registers.
TASKFILE_PORTS = sorted({*range(0x1f0, 0x1f8), *range(0x170, 0x178)})
CONTROL_PORTS = [0x3f6, 0x376]
#: KVM names no caller, so the merged site is the accesses the patch turns into doorbell writes:
#: the accessor writing the taskfile registers, and the doorbell write that replaces them.
KVM_MERGED_ACCESSES = {("iowrite8", "pio_out"): TASKFILE_PORTS, ("iowrite32", "pio_out"): [DOORBELL_PORT]}
KVM_MERGED_SITE = "taskfile writes (iowrite8 out 0x1f0-0x1f7, 0x170-0x177; iowrite32 out 0x530)"
#: KVM: the disk driver's sites are the port I/O to the IDE channels' registers and the doorbell.
KVM_DRIVER_PORTS = sorted({*TASKFILE_PORTS, *CONTROL_PORTS, DOORBELL_PORT})
#: Table 4 of the paper: (before, after) at its two call sites.
PAPER = [(111050, 17226), (15864, 2343)]
METRICS = [("block_write_throughput", "block write throughput"), ("block_read_throughput", "block read throughput"),
           ("block_write_cpu", "block write CPU"), ("block_read_cpu", "block read CPU")]
SIDES = ("before", "after")
TCG_NOTE = ("Modelled exits (TCG): instructions that would exit under Intel VMX with KVM's defaults, counted per "
            "guest pc by a QEMU plugin; the coalesce device's replays run inside QEMU and are no exits. Throughput "
            "and CPU come from QEMU TCG emulation, not KVM: not comparable with the paper's numbers in absolute terms.")
KVM_NOTE = ("VM exits measured under KVM (kvm tracepoints of the job's window). KVM does not see the guest's stack, "
            "so a site is the exiting accessor with its ports, not its caller, and the disk driver's sites are the "
            "port I/O to the IDE channels' registers (0x1f0-0x1f7, 0x170-0x177, 0x3f6, 0x376) and the doorbell "
            "(0x530). The merged site is matched by function and port: iowrite8 writes to the taskfile ports and "
            "iowrite32 writes to the doorbell, whoever called them. It thus also counts the taskfile writes the patch "
            "leaves alone (the command register write of ata_sff_exec_command), so its after/before ratio lies nearer "
            "1 than that of ata_sff_tf_load itself (which TCG's modelled exits, knowing the caller, give).")


@dataclass
class ExitRun:
    """One exit run of one side: its port-I/O rows (with their site) and its totals."""
    side: str
    rep: int
    pio: pd.DataFrame
    written_mib: float | None
    all_exits: int
    replayed: int | None

    def site_counts(self) -> pd.Series:
        return self.pio.groupby("site")["count"].sum()

    def per_gib(self, count: float) -> float:
        return per_gib(count, self.written_mib)


def port_io(table: pd.DataFrame) -> pd.DataFrame:
    """The benchmark phase's port-I/O rows, with their call site and whether the disk driver did it."""
    rows = table[(table.phase == "benchmark") & table.exit_kind.isin(["pio_in", "pio_out"])].copy()
    callers = rows.caller.fillna("")
    rows["site"] = np.where(rows.function.isin(ACCESSORS) & (callers != ""), callers,
                            rows.function.replace("", "(unknown)"))
    rows["driver"] = rows.site.astype(str).str.startswith(DRIVER_PREFIXES)
    return rows


def kvm_port_io(table: pd.DataFrame) -> pd.DataFrame:
    """port_io() for a KVM exit table (no callers): a site is the accessor and its port, the
    taskfile writes and doorbell writes together are the merged site."""
    rows = port_io(table)
    ports = rows.port_or_address
    merged = pd.Series(False, index=rows.index)
    for (function, kind), allowed in KVM_MERGED_ACCESSES.items():
        merged |= ((rows.function == function) & (rows.exit_kind == kind) & ports.isin(allowed)).fillna(False)
    named = [f"{fn} ({'in' if k == 'pio_in' else 'out'} 0x{int(p):x})" if not pd.isna(p) else fn
             for fn, k, p in zip(rows.function, rows.exit_kind, ports)]
    rows["site"] = np.where(merged, KVM_MERGED_SITE, named)
    rows["driver"] = merged | ports.isin(KVM_DRIVER_PORTS).fillna(False)
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


def ratio_over_runs(after: np.ndarray, before: np.ndarray, seed: int) -> tuple[float, float, float]:
    """after/before of the runs' means with its bootstrap CI over runs (no interval from one run);
    NaN where a side has no value or the before side's mean is zero."""
    after, before = after[~np.isnan(after)], before[~np.isnan(before)]
    if after.size == 0 or before.size == 0 or float(before.mean()) == 0.0:
        return math.nan, math.nan, math.nan
    return bootstrap_ratio_ci(after, before, seed)


def split_sides(paths: list, reps: int, what: str) -> dict[str, list]:
    """The rule's flat list (every repetition of before, then of after) by side."""
    paths = [str(p) for p in paths]
    if len(paths) != 2 * reps:
        raise SystemExit(f"table4: {what}: {len(paths)} files for 2 sides of diskmods.coalesce.exit_repetitions "
                         f"= {reps} runs each (workflow/rules/diskmods.smk gives them)")
    return {"before": paths[:reps], "after": paths[reps:]}


def load_runs(inp, reps: int) -> tuple[dict[str, list[ExitRun]], str]:
    """Every exit run of both sides, and the exit backend they share."""
    tables = {s: [exits.read_csv(p) for p in ps] for s, ps in split_sides(inp.exits, reps, "exits").items()}
    summaries = {s: [json.loads(Path(p).read_text()) for p in ps]
                 for s, ps in split_sides(inp.summaries, reps, "summaries").items()}
    accelerators = {a for ts in tables.values() for t in ts for a in t.accelerator}
    if len(accelerators) != 1:
        raise SystemExit(f"table4: the exit runs come from different backends: {sorted(accelerators)}; "
                         "rerun them on one (Table 4 compares counts of one backend)")
    accelerator = accelerators.pop()
    pio_of = port_io if accelerator == "tcg-modelled" else kvm_port_io
    runs = {s: [ExitRun(side=s, rep=rep, pio=pio_of(table), written_mib=summary.get("written_mib"),
                        all_exits=int(table[table.phase == "benchmark"]["count"].sum()),
                        replayed=summary.get("cross_check", {}).get("replayed_port_accesses"))
                for rep, (table, summary) in enumerate(zip(tables[s], summaries[s]))]
            for s in SIDES}
    return runs, accelerator


def site_frame(runs: list[ExitRun]) -> pd.DataFrame:
    """Exits of every site (rows) in every run (columns) of one side; a site a run lacks has 0."""
    return pd.concat({run.rep: run.site_counts() for run in runs}, axis=1).fillna(0).sort_index()


def per_gib_of(runs: list[ExitRun], counts: pd.DataFrame, site: str) -> np.ndarray:
    return np.array([run.per_gib(counts.at[site, run.rep] if site in counts.index else 0.0) for run in runs])


def ranked_sites(runs: dict[str, list[ExitRun]], merged_site: str, top: int) -> list[tuple[int, str]]:
    """(rank, site) of the disk driver's hottest sites before merging (mean exits over the runs),
    the merged site always among them (with its own rank where it is not among the hottest)."""
    before = site_frame(runs["before"])
    driver_sites = set().union(*(set(run.pio[run.pio.driver].site) for run in runs["before"]))
    driver_sites.add(merged_site)
    means = pd.Series({site: before.loc[site].mean() if site in before.index else 0.0
                       for site in sorted(driver_sites)})
    order = list(means.sort_values(ascending=False, kind="stable").index)
    shown = [(rank, site) for rank, site in enumerate(order, start=1) if rank <= top]
    if merged_site not in order[:top]:
        shown.append((order.index(merged_site) + 1, merged_site))
    return shown


def main(snakemake) -> None:
    inp, out, params = snakemake.input, snakemake.output, snakemake.params
    sides = dict(params.sides)
    reps = int(params.exit_repetitions)
    runs, exit_accelerator = load_runs(inp, reps)
    modelled = exit_accelerator == "tcg-modelled"
    merged_site = MERGED_SITE if modelled else KVM_MERGED_SITE
    counts = {s: site_frame(runs[s]) for s in SIDES}
    pio = {s: pd.concat([run.pio for run in runs[s]], ignore_index=True) for s in SIDES}
    shown = ranked_sites(runs, merged_site, params.sites)
    label = {s: f"{sides[s]['variant']} on QEMU {sides[s]['qemu']}" for s in SIDES}

    def mean_count(side: str, site: str) -> float:
        return float(counts[side].loc[site].mean()) if site in counts[side].index else 0.0

    def mean_per_gib(side: str, site: str) -> float:
        v = per_gib_of(runs[side], counts[side], site)
        return float(np.nanmean(v)) if not np.isnan(v).all() else math.nan

    def row(side: str, run: ExitRun | None, **kw) -> dict:
        base = {"experiment": "table4", "side": side, "variant": sides[side]["variant"] if run else "",
                "qemu": sides[side]["qemu"] if run else "", "accelerator": exit_accelerator,
                "repetition": run.rep if run else ""}
        return {**base, **kw}

    written = {s: ", ".join("?" if r.written_mib is None else f"{r.written_mib:g}" for r in runs[s]) for s in SIDES}
    long_rows, md = [], [
        "# Table 4: port-I/O exits at the hottest call sites before and after merging the taskfile writes",
        "", TCG_NOTE if modelled else KVM_NOTE, "",
        f"Before: {label['before']}; after: {label['after']} (the doorbell at port 0x{DOORBELL_PORT:x} replays a "
        f"batch of taskfile accesses per write). bonnie++ benchmark phase, {reps} exit runs per side (the first "
        f"before run is Table 3's); the guest wrote {written['before']} MiB before and {written['after']} MiB "
        "after to the data disk (its block-device counters); counts per GiB written so that runs of different "
        "sizes compare. Call sites of the disk driver (libata)" + (
            ", the function that issued the port I/O (an I/O accessor's caller)" if modelled else
            ", by accessor and port (see above)") + ". Exits are means over the runs; after/before is the ratio "
        "of the mean exits per GiB with its 95% bootstrap CI over the runs (n: runs per side); (merged): the "
        "site the patch merges, which the claims table judges.", "",
        "| # | call site | before: exits | per GiB | after: exits | per GiB | after/before (n) | change "
        "| paper: before -> after (change) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    detail, latex_rows = [], []
    for rank, site in shown:
        role = "merged" if site == merged_site else ""
        per_run = {s: per_gib_of(runs[s], counts[s], site) for s in SIDES}
        ratio = ratio_over_runs(per_run["after"], per_run["before"], params.seed)
        n = {s: int((~np.isnan(per_run[s])).sum()) for s in SIDES}
        pb, pa = mean_per_gib("before", site), mean_per_gib("after", site)
        paper = PAPER[rank - 1] if rank <= len(PAPER) else None
        paper_text = (f"{paper[0]} -> {paper[1]} ({(paper[1] / paper[0] - 1) * 100:+.1f}%)" if paper else "")
        shown_site = f"{site} (merged)" if role else site
        md.append(f"| {rank} | {shown_site} | {mean_count('before', site):.0f} | {pb:.0f} | "
                  f"{mean_count('after', site):.0f} | {pa:.0f} | {fmt_ci(*ratio, digits=3)} "
                  f"(n={n['before']}, {n['after']}) | {(ratio[0] - 1) * 100:+.1f}% | {paper_text} |")
        detail.append(f"- **{site}**: before: {via(pio['before'][pio['before'].site == site]) or 'no port I/O'}; "
                      f"after: {via(pio['after'][pio['after'].site == site]) or 'no port I/O'}; per GiB, run by "
                      "run: " + "; ".join(f"{s} " + ", ".join(f"{v:.0f}" for v in per_run[s]) for s in SIDES))
        latex_rows.append((rank, site, pb, pa, ratio, paper))
        for s in SIDES:
            for run, g in zip(runs[s], per_run[s]):
                count = counts[s].at[site, run.rep] if site in counts[s].index else 0
                for metric, value, unit in (("port_io_exits", int(count), "exits"),
                                            ("port_io_exits_per_gib", g, "exits/GiB")):
                    long_rows.append(row(s, run, site_rank=rank, site=site, site_role=role, metric=metric,
                                         value=value, unit=unit, paper=paper[SIDES.index(s)] if paper else ""))
        long_rows.append(row("after/before", None, site_rank=rank, site=site, site_role=role,
                             metric="port_io_exits_per_gib_ratio", value=ratio[0], unit="", paper="",
                             ci_low=ratio[1], ci_high=ratio[2], n_numerator=n["after"], n_denominator=n["before"]))

    after_doorbell = pio["after"][(pio["after"].exit_kind == "pio_out") &
                                  (pio["after"].port_or_address == DOORBELL_PORT).fillna(False)]
    ringing = sorted(set(after_doorbell.site))
    driver_before = set(pio["before"][pio["before"].driver].site)
    others = pd.Series({site: mean_count("before", site) for site in counts["before"].index
                        if site not in driver_before and site != merged_site}, dtype=float)
    others = others.sort_values(ascending=False, kind="stable")
    md += ["", "Where the exits of each site come from (accessor, direction, ports: exits summed over the runs):",
           "", *detail, "",
           "Every call site that rings the doorbell after merging: " + "; ".join(
               f"{site} {mean_count('before', site):.0f} -> {mean_count('after', site):.0f} "
               f"({mean_per_gib('before', site):.0f} -> {mean_per_gib('after', site):.0f} per GiB)"
               for site in ringing) + ".",
           "", "Port I/O outside the disk driver, not merged (the hottest): " + "; ".join(
               f"{site} {n:.0f} -> {mean_count('after', site):.0f}" for site, n in others.head(2).items()) + ".",
           "",
           "| all sites | before | after | after/before (n) |", "|---|---:|---:|---:|"]
    totals = {"port-I/O exits per GiB written": lambda run: run.per_gib(run.pio["count"].sum()),
              "all exits per GiB written": lambda run: run.per_gib(run.all_exits)}
    for what, of_run in totals.items():
        metric = what.replace(" ", "_").replace("-", "_")
        per_run = {s: np.array([of_run(run) for run in runs[s]], dtype=float) for s in SIDES}
        ratio = ratio_over_runs(per_run["after"], per_run["before"], params.seed)
        means = {s: float(np.nanmean(v)) if not np.isnan(v).all() else math.nan for s, v in per_run.items()}
        md.append(f"| {what} | {means['before']:.0f} | {means['after']:.0f} | {fmt_ci(*ratio, digits=3)} "
                  f"(n={len(runs['before'])}, {len(runs['after'])}) |")
        for s in SIDES:
            for run, v in zip(runs[s], per_run[s]):
                long_rows.append(row(s, run, site_rank=0, site="(all)", site_role="", metric=metric, value=v,
                                     unit="exits/GiB", paper=""))
        long_rows.append(row("after/before", None, site_rank=0, site="(all)", site_role="", metric=f"{metric}_ratio",
                             value=ratio[0], unit="", paper="", ci_low=ratio[1], ci_high=ratio[2],
                             n_numerator=len(runs["after"]), n_denominator=len(runs["before"])))
    doorbells = int(after_doorbell["count"].sum())
    replayed = [run.replayed for run in runs["after"]]
    replayed_all = sum(replayed) if all(r is not None for r in replayed) else None
    md += ["", f"Doorbell writes after merging, all {len(runs['after'])} runs: {doorbells}" + (
        f"; port accesses the device replayed for them: {replayed_all} ({replayed_all / doorbells:.1f} per doorbell)"
        if replayed_all and doorbells else "") + ".", ""]

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
                          "ci_low": ratio[1], "ci_high": ratio[2], "welch_p": p,
                          "n_numerator": av.size, "n_denominator": bv.size})
    md += ["", "The paper: 111050 -> 17226 and 15864 -> 2343 exits (about -85%) at its two call sites (counts of its "
           "disk I/O run, not per GiB); I/O throughput almost unchanged; CPU utilisation somewhat lower.", ""]

    latex = [r"\begin{table}[htbp]", r"\centering",
             r"\caption{Table 4: port-I/O exits per GiB written before/after merging the taskfile writes, "
             f"means of {reps} runs per side" + (" (modelled exits, TCG)" if modelled else "") + "}",
             r"\label{tab:table4}",
             r"\begin{tabular}{rlrrrl}", r"\toprule",
             r"\# & call site & before & after & after/before & paper \\", r"\midrule"]
    for rank, site, pb, pa, ratio, paper in latex_rows:
        latex.append(f"{rank} & \\texttt{{{site.replace('_', chr(92) + '_')}}} & {pb:.0f} & {pa:.0f} & "
                     f"{fmt_ci(*ratio, digits=3)} & " + (f"{paper[0]} $\\to$ {paper[1]}" if paper else "") + r" \\")
    latex += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]

    frame = pd.DataFrame(long_rows)
    write_text_atomic(Path(out.csv), frame.to_csv(index=False, lineterminator="\n"))
    write_text_atomic(Path(out.markdown), "\n".join(md) + "\n")
    write_text_atomic(Path(out.latex), "\n".join(latex))
    provenance = {
        "artifact": "table4", "sides": sides, "sites": params.sites, "seed": params.seed,
        "exit_repetitions": reps, "accelerator": exit_accelerator, "merged_site": merged_site,
        "exit_runs": {s: [json.loads(Path(p).read_text()) for p in ps]
                      for s, ps in split_sides(inp.exit_provenance, reps, "exit_provenance").items()},
        "bonnie_table": {"path": str(inp.bonnie), "sha256": sha256_file(Path(inp.bonnie)),
                         "provenance": json.loads(Path(inp.bonnie_provenance).read_text())},
        "inputs": {str(p): sha256_file(Path(p)) for p in [*inp.exits, *inp.summaries]},
    }
    write_json_atomic(Path(out.provenance), provenance)
    Path(snakemake.log[0]).write_text("\n".join(md) + "\n")


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
