# Disk-side modifications:
#   table4  Table 4, modification 1: port-I/O exits at the two hottest call sites before and
#           after merging libata's taskfile writes into one doorbell write (kernel variant
#           coalesce on the coalesce QEMU), per GiB written, over diskmods.coalesce.exit_repetitions
#           exit runs per side, beside bonnie++ throughput and CPU.
#   sched   §3.2.2, modification 4: the guest's I/O scheduler of the data disk under a host
#           that schedules too (a loop device made for the run, guestio.workloads.hostdisk).
# Every repetition is a disk_vm job of disk.smk, every exit run an
# exit_sites job of exits.smk (runs of the same condition are shared with Fig 1 and Table 3).

# The conditions, the runs and Table 4's exit runs: guestio.plan.stages.Coalesce and Sched
# (PLAN.coalesce, PLAN.sched).


rule table4:
    input:
        exits=PLAN.coalesce.exits["exits.csv"],
        summaries=PLAN.coalesce.exits["summary.json"],
        exit_provenance=PLAN.coalesce.exits["provenance.json"],
        bonnie=PLAN.table_files("coalesce")["csv"],
        bonnie_provenance=PLAN.table_files("coalesce")["provenance"],
        code=[REPO / "workflow" / "guestio" / "analysis" / "stats.py", REPO / "workflow" / "guestio" / "exits" / "schema.py"],
    output:
        markdown=f"{RESULTS}/tables/table4.md",
        latex=f"{RESULTS}/tables/table4.tex",
        csv=f"{RESULTS}/tables/table4.csv",
        provenance=f"{RESULTS}/tables/table4.provenance.json",
    params:
        sides={side: {"variant": c["variant"], "qemu": c["qemu"]} for side, c in PLAN.coalesce.sides.items()},
        sites=config["diskmods"]["coalesce"]["sites"],
        exit_repetitions=config["diskmods"]["coalesce"]["exit_repetitions"],
        seed=config["figures"]["seed"],
    log:
        f"{RESULTS}/tables/table4.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/table4.py"


rule sched:
    input:
        PLAN.figure_files("sched"),
