# Disk-side modifications:
#   table4  Table 4, modification 1: port-I/O exits at the two hottest call sites before and
#           after merging libata's taskfile writes into one doorbell write (kernel variant
#           coalesce on the coalesce QEMU), per GiB written, over diskmods.coalesce.exit_repetitions
#           exit runs per side, beside bonnie++ throughput and CPU.
#   sched   §3.2.2, modification 4: the guest's I/O scheduler of the data disk under a host
#           that schedules too (a loop device made for the run, guestio.workloads.hostdisk).
# Included before disk.smk and figures.smk: registers the tables "coalesce" and "sched" and
# the figure "sched".  Every repetition is a disk_vm job of disk.smk, every exit run an
# exit_sites job of exits.smk (runs of the same condition are shared with Fig 1 and Table 3).

DISKMODS = config["diskmods"]
DISKMODS_REPS = range(DISKMODS["repetitions"])
COALESCE = DISKMODS["coalesce"]
COALESCE_SIDES = {side: disk_condition(variant=COALESCE[side]["variant"], qemu=COALESCE[side]["qemu"])
                  for side in ("before", "after")}
register_table("coalesce", disk_vm_runs(COALESCE_SIDES.values(), reps=DISKMODS_REPS),
               variants=conditions_variants(COALESCE_SIDES.values()), qemus=conditions_qemus(COALESCE_SIDES.values()),
               experiment="disk", config_sections=["disk", "diskmods"])

SCHED = DISKMODS["sched"]
# The host schedulers as they run on this host: diskmods.sched.host with what the kernel does
# not offer replaced by diskmods.sched.host_fallback (resolved once, guestio.hostprobe); the run
# path names the one used (host-<scheduler>).
SCHED_HOSTS = HOST_PROBE.host_schedulers
SCHED_CONDITIONS = [disk_condition(variant=SCHED["variant"], gsched=g, hsched=h)
                    for h in SCHED_HOSTS for g in SCHED["guest"]]
register_table("sched", disk_vm_runs(SCHED_CONDITIONS, reps=DISKMODS_REPS),
               variants=conditions_variants(SCHED_CONDITIONS), qemus=conditions_qemus(SCHED_CONDITIONS),
               experiment="disk", config_sections=["disk", "diskmods"])
FIGURES["sched"] = "sched"


# Files of the before and the after exit runs (bonnie++ under the exit backend), by name: every
# repetition of before, then every repetition of after.  The before side's rep0 is Table 3's run.
COALESCE_EXIT_REPS = range(COALESCE["exit_repetitions"])
COALESCE_EXITS = {name: [path for side in ("before", "after")
                         for path in exit_runs("bonnie", [COALESCE[side]["variant"]], COALESCE[side]["qemu"], name,
                                               reps=COALESCE_EXIT_REPS)]
                  for name in ("exits.csv", "summary.json", "provenance.json")}


rule table4:
    input:
        exits=COALESCE_EXITS["exits.csv"],
        summaries=COALESCE_EXITS["summary.json"],
        exit_provenance=COALESCE_EXITS["provenance.json"],
        bonnie=table_files("coalesce")["csv"],
        bonnie_provenance=table_files("coalesce")["provenance"],
        code=[REPO / "workflow" / "guestio" / "analysis" / "stats.py", REPO / "workflow" / "guestio" / "exits" / "schema.py"],
    output:
        markdown=f"{RESULTS}/tables/table4.md",
        latex=f"{RESULTS}/tables/table4.tex",
        csv=f"{RESULTS}/tables/table4.csv",
        provenance=f"{RESULTS}/tables/table4.provenance.json",
    params:
        sides={side: {"variant": COALESCE[side]["variant"], "qemu": COALESCE[side]["qemu"]} for side in ("before", "after")},
        sites=COALESCE["sites"],
        exit_repetitions=COALESCE["exit_repetitions"],
        seed=config["figures"]["seed"],
    log:
        f"{RESULTS}/tables/table4.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/table4.py"


rule sched:
    input:
        figure_files("sched"),
