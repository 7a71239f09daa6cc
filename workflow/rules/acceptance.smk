# The KVM acceptance run (config/kvm-acceptance.yaml, docs/kvm-acceptance.md): a verdict that the
# KVM branch ran end to end, read from the runs (guestio.report.kvm_acceptance), beside the bundle
# that guestio.report.compare reads against a TCG run.

ACCEPTANCE = {"json": f"{RESULTS}/acceptance/kvm.json", "markdown": f"{RESULTS}/acceptance/kvm.md"}
# Table 3's bonnie++ exit runs, and Table 1's (condition -> directory, PIT scale of its QEMU).
ACCEPTANCE_BONNIE_EXITS = PLAN.acceptance_bonnie_exits()
ACCEPTANCE_TICK_RUNS = PLAN.acceptance_tick_runs()


rule kvm_acceptance_check:
    input:
        accelerator=ACCELERATOR,
        bonnie=[f"{d}/summary.json" for d in ACCEPTANCE_BONNIE_EXITS],
        ticks=[f"{d}/summary.json" for d, _ in ACCEPTANCE_TICK_RUNS.values()],
        net=str(Path(PLAN.network.exits).with_name("summary.json")),
        disk_runs=PLAN.disk_native_runs() + PLAN.disk_vm_runs([PLAN.disk_condition()]),
        smoke=PLAN.smoke_runs(),
        code=str(REPO / "workflow" / "guestio" / "report" / "kvm_acceptance.py"),
    output:
        **ACCEPTANCE,
    params:
        # Table 1's conditions and their PIT scales, in the order of input.ticks.
        tick_conditions=list(ACCEPTANCE_TICK_RUNS),
        tick_scales=[scale for _, scale in ACCEPTANCE_TICK_RUNS.values()],
    localrule: True
    log:
        f"{RESULTS}/acceptance/kvm.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/kvm_acceptance.py"


# The target: the verdict and the bundle of what it judged (report.artifacts of the profile).
rule kvm_acceptance:
    input:
        **ACCEPTANCE,
        bundle=PLAN.bundle,
