"""The measurement tables and the figures drawn from them, declared as data.

A measurement table (rule measurement_table) combines the runs of one artifact group into
{results}/tables/<name>.csv with provenance naming its kernel and QEMU builds and config sections.
The order is the one the tables, report entries and bundle have always listed them in.
"""

from __future__ import annotations

#: figure id -> the measurement table it is drawn from (rule figure); the network figures have
#: rules of their own (guestio.plan.stages.Network.FIGURES).
FIGURES = {"fig5": "timer", "sched": "sched", "fig6": "boot", "fig1": "disk", "fig2": "disk"}


def _table(plan, runs, variants=(), qemus=(), experiment=None, config_sections=()) -> dict:
    """A measurement table: its runs, and the kernel and QEMU builds its provenance names."""
    return {
        "runs": list(dict.fromkeys(runs)),
        "variants": sorted(set(variants)),
        "qemus": sorted(set(qemus) | {plan.vm_qemu}),
        "experiment": experiment,
        "config": {"vm": plan.config["vm"], **{k: plan.config[k] for k in config_sections}},
    }


def _of_conditions(plan, runs, conditions, **kw) -> dict:
    return _table(plan, runs, variants=[c["variant"] for c in conditions], qemus=[c["qemu"] for c in conditions],
                  **kw)


def measurement_tables(plan) -> dict[str, dict]:
    """name -> {"runs", "variants", "qemus", "experiment", "config"}."""
    return {
        # Fig 5
        "timer": _of_conditions(plan, plan.timer.disk_runs, plan.timer.disk_conditions, experiment="disk",
                                config_sections=["disk", "timer"]),
        # Fig 3, 4, 7
        "net": _table(plan, plan.network.runs, variants=plan.network.variants, experiment="net",
                      config_sections=("network",)),
        # Table 4's throughput and CPU
        "coalesce": _of_conditions(plan, plan.coalesce.disk_runs, plan.coalesce.sides.values(), experiment="disk",
                                   config_sections=["disk", "diskmods"]),
        # §3.2.2
        "sched": _of_conditions(plan, plan.sched.disk_runs, plan.sched.conditions, experiment="disk",
                                config_sections=["disk", "diskmods"]),
        # Fig 6
        "boot": _table(plan, plan.pmtmr.runs, variants=plan.pmtmr.variants, experiment="boot",
                       config_sections=["pmtmr"]),
        # Fig 1, 2
        "disk": _of_conditions(plan, plan.disk_native_runs() + plan.disk_vm_runs(plan.disk_conditions),
                               plan.disk_conditions, experiment="disk", config_sections=["disk"]),
    }
