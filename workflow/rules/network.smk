# Network experiment (Fig 3, Fig 4, Fig 7, Table 2): the testbed of guestio.net.testbed
# (HostA and HostB in network namespaces of the pipeline's own, a shaped veth pair between
# them, the guest's tap on a bridge in HostB; root only).  The benchmarks go the paper's way
# (guestio.workloads.netbench): netperf and iperf3 send from GuestB, natively from HostB, to
# servers on HostA; ping goes from the hosts; the guest NIC's GRO is off in every VM run.
# Each repetition is its own job and takes every core, so no other job disturbs it.

NET = config["network"]
NET_VM_DIR = guestio.paths.template("net_vm", RESULTS)
NET_NATIVE_DIR = guestio.paths.template("net_native", RESULTS)
# What the figures are drawn by: editing it redraws them and reruns nothing else.
NET_CODE = [str(REPO / "workflow" / "guestio" / p) for p in
            ("net/figures.py", "analysis/stats.py", "analysis/claims.py", "analysis/claim_model.py",
             "analysis/claims_check.py", "analysis/placeholders.py", "analysis/claims.yaml",
             "analysis/measurements.py", "workloads/netbench.py", "workloads/netbench_parsers.py",
             "workloads/netbench_counters.py", "workloads/netbench_session.py", "workloads/netbench_records.py")]
# The runs, the table and Table 2's exit run: guestio.plan.stages.Network (PLAN.network).


rule net_native:
    input:
        host=HOST_SNAPSHOT,
    output:
        csv=f"{NET_NATIVE_DIR}/measurements.csv",
        provenance=f"{NET_NATIVE_DIR}/provenance.json",
    params:
        network=NET,
    threads: workflow.cores
    log:
        f"{NET_NATIVE_DIR}/runner.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/net_native.py"


rule net_vm:
    input:
        unpack(lambda w: PLAN.kernel_outputs(w.variant)),
        initrd=IMAGE,
        image_manifest=IMAGE_MANIFEST,
        accelerator=ACCELERATOR,
        host=HOST_SNAPSHOT,
        qemu=lambda w: PLAN.qemu_outputs(w.qemu)["build"],
        job=JOBS_DIR / "net.sh",
        job_lib=JOB_LIB,
    output:
        csv=f"{NET_VM_DIR}/measurements.csv",
        provenance=f"{NET_VM_DIR}/provenance.json",
    wildcard_constraints:
        nic="rtl8139|e1000|virtio-net",
    params:
        vm=config["vm"],
        network=NET,
    threads: workflow.cores
    log:
        f"{NET_VM_DIR}/runner.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/net_vm.py"


rule net_exits:
    input:
        unpack(lambda w: PLAN.kernel_outputs(w.variant)),
        unpack(lambda w: PLAN.exit_plugin_input()),
        initrd=IMAGE,
        image_manifest=IMAGE_MANIFEST,
        accelerator=ACCELERATOR,
        host=HOST_SNAPSHOT,
        qemu=lambda w: PLAN.qemu_outputs(w.qemu)["build"],
        job=JOBS_DIR / "net.sh",
        job_lib=JOB_LIB,
    output:
        exits=f"{EXIT_DIR}/exits.csv",
        summary=f"{EXIT_DIR}/summary.json",
        provenance=f"{EXIT_DIR}/provenance.json",
    wildcard_constraints:
        workload="netperf",
    params:
        vm=config["vm"],
        network=NET,
        tracefs=config["exits"]["tracefs"],
    threads: workflow.cores
    log:
        f"{EXIT_DIR}/runner.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/net_exits.py"


# The figures: from the experiment's table; editing the plotting code or the claims
# redraws them and reruns nothing else.
rule net_fig3:
    input:
        **PLAN.table_files("net"),
        code=NET_CODE,
    output:
        **PLAN.network.figure_files["fig3"],
    params:
        figure="fig3",
        seed=config["figures"]["seed"],
        network=NET,
    log:
        f"{RESULTS}/figures/fig3.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/net_figure.py"


rule net_fig4:
    input:
        **PLAN.table_files("net"),
        code=NET_CODE,
    output:
        **PLAN.network.figure_files["fig4"],
    params:
        figure="fig4",
        seed=config["figures"]["seed"],
        network=NET,
    log:
        f"{RESULTS}/figures/fig4.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/net_figure.py"


rule net_fig7:
    input:
        **PLAN.table_files("net"),
        code=NET_CODE,
    output:
        **PLAN.network.figure_files["fig7"],
    params:
        figure="fig7",
        seed=config["figures"]["seed"],
        network=NET,
    log:
        f"{RESULTS}/figures/fig7.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/net_figure.py"


rule net_table2:
    input:
        exits=PLAN.network.exits,
        summary=str(Path(PLAN.network.exits).with_name("summary.json")),
        code=[str(REPO / "workflow" / "guestio" / "exits" / name) for name in ("schema.py", "exit_tables.py")],
    output:
        csv=f"{RESULTS}/tables/table2.csv",
        markdown=f"{RESULTS}/tables/table2.md",
        latex=f"{RESULTS}/tables/table2.tex",
    params:
        network=NET,
        variant=config["network"]["variant"],
    log:
        f"{RESULTS}/tables/table2.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/net_table2.py"


rule fig3:
    input:
        list(PLAN.network.figure_files["fig3"].values()),


rule fig4:
    input:
        list(PLAN.network.figure_files["fig4"].values()),


rule fig7:
    input:
        list(PLAN.network.figure_files["fig7"].values()),


rule table2:
    input:
        rules.net_table2.output,
