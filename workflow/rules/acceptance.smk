# The KVM acceptance run (config/kvm-acceptance.yaml, docs/kvm-acceptance.md): a verdict that the
# KVM branch ran end to end, read from the runs (guestio.report.kvm_acceptance), beside the bundle
# that guestio.report.compare reads against a TCG run.  Included after report.smk: it names the
# exit runs the timer and network stages registered and the bundle.

ACCEPTANCE = {"json": f"{RESULTS}/acceptance/kvm.json", "markdown": f"{RESULTS}/acceptance/kvm.md"}
# Table 3's bonnie++ exit run of each exits.variants kernel, on vm.qemu.
ACCEPTANCE_BONNIE_EXITS = [str(Path(p).parent) for p in
                           PLAN.exit_runs("bonnie", config["exits"]["variants"], config["vm"]["qemu"], "summary.json")]
# Table 1's exit runs (condition -> directory) and the PIT scale of each one's QEMU.
ACCEPTANCE_TICK_RUNS = {name: (d, guestio.workloads.tick.settings(config, qemu)["pit_scale"])
                        for (name, (_v, qemu)), d in zip(PLAN.timer.conditions.items(), PLAN.timer.exit_dirs)}


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
        bundle=BUNDLE,
