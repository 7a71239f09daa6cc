"""Table 3: hot modelled exit sites of bonnie++ with their calling functions, per variant and phase."""

import json
from pathlib import Path

import pandas as pd

from guestio.exits import exit_tables
from guestio.exits import schema as exits
from guestio.util import write_text_atomic

params, out = snakemake.params, snakemake.output
table = pd.concat([exits.read_csv(p) for p in snakemake.input.exits], ignore_index=True)
summaries = {v: json.loads(Path(p).read_text()) for v, p in zip(params.variants, snakemake.input.summaries)}
PHASES = {"boot": "boot (kernel start to init)", "benchmark": "benchmark (bonnie++ job)"}

accelerators = set(table.accelerator)
if len(accelerators) != 1:
    raise SystemExit(f"table3: exit tables of different backends cannot share a table: {sorted(accelerators)}")
modelled = accelerators == {"tcg-modelled"}
# The callers come from the plugin's shadow stack; a KVM trace has the exiting pc only.
caller = modelled
ranked, markdown, latex = [], ["# Table 3: hot exit sites of bonnie++ and their calling functions", ""], []
if modelled:
    markdown.append(
        "Modelled exits (TCG): instructions that would exit under Intel VMX with KVM's defaults, counted per guest pc "
        "by a QEMU plugin; no handling time.")
else:
    markdown.append(
        "VM exits measured under KVM (kvm:kvm_exit/kvm_entry/kvm_pio/kvm_mmio of the job's window), with handling "
        "time from each exit to the next entry of its vCPU thread. Events lost: "
        + ", ".join(f"{v}: at least {summaries[v].get('events_lost_lower_bound', 0)}" for v in params.variants) + ".")
markdown.append(
    "The paper's Table 3 lists acpi_pm_read (called from verify_pmtmr_rate) "
    "beside the libata sites, which only a count that includes boot can show: the paper's numbers most resemble "
    "the boot and benchmark phases taken together.\n")
for variant in params.variants:
    for phase, label in PHASES.items():
        part = table[(table.variant == variant) & (table.phase == phase)]
        if part.empty:
            why = "not traced: under KVM only the job's window is recorded" if not modelled else "no exits"
            markdown += [f"**Table 3, {variant}, {label}**: {why}.", ""]
            continue
        top = exits.rank(part, n=params.top, site=exits.SITE_WITH_CALLER if caller else exits.SITE)
        ranked.append(top.assign(ranking="site"))
        title = f"Table 3, {variant}, {label}"
        markdown += [exit_tables.render_markdown(top, title, modelled=modelled, caller=caller), ""]
        latex += [exit_tables.render_latex(top, title, modelled=modelled, caller=caller,
                                           label=f"tab:table3-{variant}-{phase}"), ""]

# The paper's own ranking: "the top 4 hot functions; the caller column lists the function that
# calls the hot function most often" (section 2, Table 3), over bonnie++'s run.
markdown += ["## The paper's ranking: hot functions of the benchmark phase and their most frequent callers", "",
             "Each exiting function's exits summed over its sites and callers, and the function that calls it most "
             "often, as the paper's Table 3 lists them.", ""]
for variant in params.variants:
    part = table[(table.variant == variant) & (table.phase == "benchmark")]
    functions = exits.rank_functions(part, n=params.top)
    ranked.append(functions.assign(ranking="function"))
    markdown += [f"**Table 3, {variant}, hot functions (benchmark)**", "",
                 "| rank | function | exits | share | most frequent caller | its exits |", "|---|---|---|---|---|---|"]
    markdown += [f"| {int(r.rank)} | {r.function or '(no symbol)'} | {int(r.count)} | {r.count_share:.1%} "
                 f"| {r.caller or '-'} | {int(r.caller_count)} |" for r in functions.itertuples(index=False)]
    markdown.append("")

markdown += ["## Summary by variant", "",
             "| variant | exits at boot | exits in benchmark | acpi_pm_read at boot | MiB written | exits per MiB written |",
             "|---|---|---|---|---|---|"]
for variant, s in summaries.items():
    per_mib = s["exits_per_mib_written"]
    markdown.append(f"| {variant} | {s['exits_by_phase'].get('boot', 0)} | {s['exits_by_phase'].get('benchmark', 0)} "
                    f"| {s['acpi_pm_read_by_phase'].get('boot', 0)} | {s['written_mib'] if s['written_mib'] is not None else 'n/a'} "
                    f"| {f'{per_mib:.1f}' if per_mib is not None else 'n/a'} |")
markdown.append("")

# Which functions read the ACPI PM timer at boot: the verification's reads are those from
# init_acpi_pm_clocksource (verify_pmtmr_rate is compiled out on x86_64; see the pmtmr patch).
boot_reads = table[(table.phase == "boot") & (table.function == "acpi_pm_read")]
callers = boot_reads.pivot_table(index="caller", columns="variant", values="count", aggfunc="sum", fill_value=0)
callers = callers.reindex(columns=params.variants, fill_value=0).sort_values(params.variants[0], ascending=False)
markdown += ["## acpi_pm_read at boot, by calling function", "",
             "| calling function | " + " | ".join(params.variants) + " |",
             "|---|" + "---|" * len(params.variants)]
markdown += [f"| {caller} | " + " | ".join(str(int(row[v])) for v in params.variants) + " |"
             for caller, row in callers.iterrows()]
markdown.append("")

# verify_pmtmr_rate exists only in a 32-bit kernel, at boot: Fig 6's boot-only runs show its site.
def boot_section(boot: pd.DataFrame, variants) -> tuple[list[str], list[str], list[pd.DataFrame]]:
    md = ["## The 32-bit guest's boot (Fig 6's boot-only runs)", "",
          "Linux 6.1 has verify_pmtmr_rate only on 32-bit x86, where it runs once, at boot. These are the first "
          "boot-only runs of the 32-bit kernels (booted without an initramfs to the panic at the missing root). "
          "GCC inlines verify_pmtmr_rate, and mach_countup's polling of PIT channel 2, into "
          "init_acpi_pm_clocksource: its sites carry that function's name.", ""]
    tex, tops = [], []
    for variant in variants:
        top = exits.rank(boot[boot.variant == variant], n=params.top, site=exits.SITE_WITH_CALLER)
        tops.append(top.assign(ranking="site"))
        title = f"Table 3, {variant}, boot (32-bit, boot-only)"
        md += [exit_tables.render_markdown(top, title, modelled=True, caller=True), ""]
        tex += [exit_tables.render_latex(top, title, modelled=True, caller=True,
                                         label=f"tab:table3-{variant}-boot"), ""]
    setup = boot[(boot.function == "init_acpi_pm_clocksource") | (boot.caller == "init_acpi_pm_clocksource")]
    by_site = setup.pivot_table(index=["function", "caller"], columns="variant", values="count", aggfunc="sum",
                                fill_value=0).reindex(columns=variants, fill_value=0)
    md += ["### The PM timer's set-up at boot (init_acpi_pm_clocksource and what it calls)", "",
           "| function | calling function | " + " | ".join(variants) + " |", "|---|---|" + "---|" * len(variants)]
    md += [f"| {fn} | {caller} | " + " | ".join(str(int(row[v])) for v in variants) + " |"
           for (fn, caller), row in by_site.iterrows()]
    return md + [""], tex, tops


if snakemake.input.boot:
    boot_md, boot_tex, boot_tops = boot_section(
        pd.concat([exits.read_csv(p) for p in snakemake.input.boot], ignore_index=True), params.boot_variants)
    markdown += boot_md
    latex += boot_tex
    ranked += boot_tops
else:
    markdown += ["## The 32-bit guest's boot", "",
                 "Not made in this run (Fig 6 is not among report.artifacts): verify_pmtmr_rate exists only in a "
                 "32-bit kernel, whose boot-only runs Fig 6 makes.", ""]

ranked_table = pd.concat(ranked, ignore_index=True)
write_text_atomic(Path(out.csv), ranked_table.to_csv(index=False, lineterminator="\n"))
write_text_atomic(Path(out.markdown), "\n".join(markdown))
write_text_atomic(Path(out.latex), "\n".join(latex))
Path(snakemake.log[0]).write_text("\n".join(markdown))
