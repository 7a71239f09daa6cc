"""Each stage's conditions and run files, from its config section.

* Timer (Fig 5, Table 1): vHZ1000 against 100 Hz, once by the guest's configuration (the hz100
  kernel) and once by the VMM (the pit-scale QEMU slowing the PIT's channel 0 down while the guest
  still believes HZ=1000).
* Coalesce (Table 4, modification 1) and Sched (§3.2.2, modification 4): disk runs of the disk
  experiment's grammar, and Table 4's exit runs.
* Network (Fig 3, 4, 7; Table 2): the testbed's native and VM runs, and Table 2's exit run.
* Pmtmr (Fig 6, modification 3): boot-only runs of the two 32-bit kernels.
"""

from __future__ import annotations

import sys

from guestio import paths
from guestio.config import PMTMR_VARIANTS

#: The QEMU variant that slows the PIT down: the VMM's route to vHZ100.
PIT_SCALE_QEMU = "pit-scale"


def timer_conditions(vm_qemu: str, qemu_variants) -> dict[str, tuple[str, str]]:
    """name -> (kernel variant, QEMU variant): the conditions of Fig 5 and Table 1 when the VM runs
    use QEMU *vm_qemu*.  Without a pit-scale QEMU (qemu.binary: host cannot be patched) the VMM's
    route is left out."""
    conditions = {
        "vHZ1000": ("baseline", vm_qemu),
        "vHZ100 (guest HZ=100)": ("hz100", vm_qemu),
        "vHZ100 (VMM PIT x10)": ("baseline", PIT_SCALE_QEMU),
    }
    if PIT_SCALE_QEMU not in qemu_variants:
        del conditions["vHZ100 (VMM PIT x10)"]
    return conditions


class Timer:
    def __init__(self, plan, section: dict) -> None:
        self.reps = range(section["repetitions"])
        self.conditions = timer_conditions(plan.vm_qemu, plan.qemu_variants)
        if len(self.conditions) < 3:
            print(f"timer: no QEMU variant {PIT_SCALE_QEMU} (qemu.variants): Fig 5 and Table 1 without the "
                  "VMM's route to vHZ100", file=sys.stderr)
        # Fig 5: the disk experiment's runs of the conditions; vHZ1000 is Fig 1's VM side, so its
        # runs are Fig 1's own first repetitions (one run per condition, shared).
        self.disk_conditions = [plan.disk_condition(variant=v, qemu=q) for v, q in self.conditions.values()]
        self.disk_runs = plan.disk_vm_runs(self.disk_conditions, reps=self.reps)
        # Table 1's exit runs (sysbench cpu), one directory per condition.
        self.exit_dirs = [plan.exit_dir("cpu", v, q) for v, q in self.conditions.values()]


class Coalesce:
    """Table 4: bonnie++ before and after merging libata's taskfile writes (kernel variant coalesce
    on the coalesce QEMU), and diskmods.coalesce.exit_repetitions exit runs per side."""

    def __init__(self, plan, diskmods: dict) -> None:
        section = diskmods["coalesce"]
        self.sides = {side: plan.disk_condition(variant=section[side]["variant"], qemu=section[side]["qemu"])
                      for side in ("before", "after")}
        self.disk_runs = plan.disk_vm_runs(self.sides.values(), reps=range(diskmods["repetitions"]))
        # Files of the before and the after exit runs, by name: every repetition of before, then
        # every repetition of after.  The before side's rep0 is Table 3's run.
        reps = range(section["exit_repetitions"])
        self.exits = {name: [path for side in ("before", "after")
                             for path in plan.exit_runs("bonnie", [section[side]["variant"]], section[side]["qemu"],
                                                        name, reps=reps)]
                      for name in ("exits.csv", "summary.json", "provenance.json")}


class Sched:
    """§3.2.2: the guest's I/O scheduler of the data disk under each host scheduler, as it runs on
    this host (diskmods.sched.host with what the kernel does not offer replaced by
    diskmods.sched.host_fallback, resolved once by guestio.hostprobe; the run path names the one used)."""

    def __init__(self, plan, diskmods: dict, host_schedulers) -> None:
        section = diskmods["sched"]
        self.conditions = [plan.disk_condition(variant=section["variant"], gsched=g, hsched=h)
                           for h in host_schedulers for g in section["guest"]]
        self.disk_runs = plan.disk_vm_runs(self.conditions, reps=range(diskmods["repetitions"]))


class Network:
    """One table for the experiment: Fig 3 (the ping NIC's runs), Fig 4 (native and every NIC),
    Fig 7 (e1000 with and without NAPI); Table 2 from one netperf exit run."""

    FIGURES = ("fig3", "fig4", "fig7")

    def __init__(self, plan, section: dict) -> None:
        reps = range(section["repetitions"])
        vm_conditions = ([(section["variant"], nic) for nic in section["nics"]]
                         + [(section["variant"], section["ping_nic"]), (section["variant"], "e1000"),
                            (section["nonapi_variant"], "e1000")])
        self.runs = ([f"{paths.run_dir('net_native', plan.results, rep=r)}/measurements.csv" for r in reps]
                     + [f"{paths.run_dir('net_vm', plan.results, variant=v, qemu=plan.vm_qemu, nic=n, rep=r)}"
                        "/measurements.csv" for v, n in vm_conditions for r in reps])
        # the NAPI kernel (Fig 3, 4, Table 2 and Fig 7's NAPI side), then Fig 7's side without NAPI
        self.variants = [section["variant"], section["nonapi_variant"]]
        self.exits = plan.exit_runs("netperf", [section["variant"]], plan.vm_qemu, "exits.csv")[0]
        self.figure_files = {fig: {**dict(zip(("pdf", "png"), plan.figure_files(fig))), "csv": plan.figure_ratios(fig)}
                             for fig in self.FIGURES}


class Pmtmr:
    """Fig 6: verify_pmtmr_rate exists only in a 32-bit kernel; each boot is counted to its panic at
    the missing root."""

    def __init__(self, plan, section: dict) -> None:
        self.variants = list(PMTMR_VARIANTS)
        self.runs = [f"{plan.exit_dir('boot', v, plan.vm_qemu, rep)}/measurements.csv"
                     for v in self.variants for rep in range(section["repetitions"])]
