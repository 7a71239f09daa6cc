"""The Plan: every file the workflow builds or runs, named from the checked config.

The rules take its templates (``{variant}`` is a wildcard there) and its lists of run files;
the run directories themselves follow the result-path grammar of :mod:`guestio.paths`.
"""

from __future__ import annotations

from pathlib import Path

from guestio import paths
from guestio.build import kconfig
from guestio.build import qemu as qemu_build
from guestio.config import ConfigError
from guestio.plan import stages
from guestio.plan import tables
from guestio.workloads import tick

#: The keys of a disk condition, the matrix point a disk run measures; its run path encodes all of
#: them, so an artifact that needs a condition another one already ran shares that run (Fig 1's VM
#: runs are Fig 5's vHZ1000 runs).
DISK_CONDITION_KEYS = ("variant", "qemu", "disk", "gsched", "hsched")


class Plan:
    """What this config makes, under its results directory.

    *host_probe* is the host's capabilities (:mod:`guestio.hostprobe`): the host schedulers the
    §3.2.2 runs use and the scheduler in CFQ's place.
    """

    def __init__(self, config: dict, repo: Path, host_probe) -> None:
        self.config = config
        self.repo = Path(repo)
        self.layers_root = self.repo / "workflow" / "kernel" / "layers"
        self.results = results = config["results_dir"]
        self.variants = list(config["variants"])
        self.qemu_variants = list(config["qemu"]["variants"])
        self.vm_qemu = config["vm"]["qemu"]
        self.disk = config["disk"]

        self.kernel_dir = f"{results}/kernels"
        self.image = f"{results}/image/initramfs.cpio"
        self.image_manifest = f"{results}/image/initramfs.json"
        self.data_disk = f"{results}/disks/data-{config['image']['data_disk_mib']}M.img"
        self.host_snapshot = f"{results}/host/host.json"
        self.accelerator = f"{results}/host/accelerator.json"
        # The archival bundle of the run (rule bundle), which the KVM acceptance run hands on.
        self.bundle = f"{results}/bundle/guestio-bundle.tar.gz"
        # Per results dir: the plugin is built against that dir's QEMU source record, so two
        # results dirs do not rebuild one shared file and force each other's exit runs to redo.
        self.plugin = f"{results}/exits/plugin/libexitcount.so"

        # The exit backend the config already decides: vm.accel kvm means KVM or a stop at the
        # probe, tcg means the plugin; auto leaves it to the probe's run-time decision (None).
        self.planned_exit_backend = {"kvm": "kvm", "tcg": "tcg"}.get(config["vm"]["accel"])

        # The default condition's value of each extra measurement column: a claim's selector
        # that leaves one unnamed means this value (guestio.analysis.figure_data._side).
        self.condition_defaults = {
            "qemu": self.vm_qemu, "guest_scheduler": self.disk["guest_scheduler"], "host_scheduler": "file",
            # not a column: what "{sched_host}" in claims.yaml stands for, the host scheduler in
            # the paper's CFQ's place on this host (guestio.analysis.claims)
            "sched_host": host_probe.cfq_standin}

        self.timer = stages.Timer(self, config["timer"])
        self.coalesce = stages.Coalesce(self, config["diskmods"])
        self.sched = stages.Sched(self, config["diskmods"], host_probe.host_schedulers)
        self.network = stages.Network(self, config["network"])
        self.pmtmr = stages.Pmtmr(self, config["pmtmr"])
        self.disk_conditions = [self.disk_condition(variant=v) for v in self.disk["variants"]]
        self.tables = tables.measurement_tables(self)
        self.figures = dict(tables.FIGURES)

    # ------------------------------------------------------------------ builds

    def layer_files(self, variant: str) -> list[str]:
        """The fragments and patches a kernel variant is built from, so editing one rebuilds it."""
        files = []
        for layer in self.config["variants"][variant]:
            fragment = kconfig.layer_fragment(self.layers_root, layer)
            if fragment is not None:
                files.append(str(fragment))
            files.extend(str(p) for p in kconfig.layer_patches(self.layers_root, layer))
        return files

    def kernel_outputs(self, variant: str) -> dict[str, str]:
        d = f"{self.kernel_dir}/{variant}"
        return {"bzimage": f"{d}/bzImage", "system_map": f"{d}/System.map", "vmlinux": f"{d}/vmlinux",
                "kconfig": f"{d}/config", "build": f"{d}/build.json"}

    def qemu_outputs(self, variant: str) -> dict[str, str]:
        """{"binary": the QEMU binary, "build": its build.json} (guestio.build.qemu.load_build reads it)."""
        return qemu_build.outputs(self.results, variant, self.config["qemu"])

    # ------------------------------------------------------------------ runs

    def smoke_runs(self) -> list[str]:
        return [f"{paths.run_dir('smoke', self.results, variant=v)}/provenance.json"
                for v in self.config["smoke"]["variants"]]

    def disk_condition(self, **kw) -> dict:
        """A disk condition: the default one (Fig 1's VM side) with the given keys changed."""
        unknown = set(kw) - set(DISK_CONDITION_KEYS)
        if unknown:
            raise ValueError(f"disk_condition: unknown keys {sorted(unknown)} (known: {DISK_CONDITION_KEYS})")
        condition = {"variant": "baseline", "qemu": self.vm_qemu, "disk": self.disk["interfaces"][0],
                     "gsched": self.disk["guest_scheduler"], "hsched": "file"}
        condition.update(kw)
        return condition

    def disk_vm_runs(self, conditions, name: str = "measurements.csv", reps=None) -> list[str]:
        """Every repetition's file of each condition (a condition appearing twice is run once)."""
        files = []
        for c in conditions:
            for rep in reps if reps is not None else range(self.disk["repetitions"]):
                path = f"{paths.run_dir('disk_vm', self.results, rep=rep, **c)}/{name}"
                if path not in files:
                    files.append(path)
        return files

    def disk_native_runs(self) -> list[str]:
        return [f"{paths.run_dir('disk_native', self.results, rep=rep)}/measurements.csv"
                for rep in range(self.disk["repetitions"])]

    # ------------------------------------------------------------------ exit runs

    def exit_dir(self, workload: str, variant: str, qemu: str, rep=0) -> str:
        """The directory of one exit run: workload, kernel variant, QEMU variant and repetition."""
        return paths.run_dir("exits", self.results, workload=workload, variant=variant, qemu=qemu, rep=rep)

    def exit_runs(self, workload: str, variants, qemu: str, name: str, reps=(0,)) -> list[str]:
        """One file of the exit runs of a workload, per kernel variant and repetition (in that
        order), on one QEMU variant."""
        return [f"{self.exit_dir(workload, v, qemu, rep)}/{name}" for v in variants for rep in reps]

    def exits_recorded(self, variant: str, rep=0) -> str | None:
        """A KVM run of this variant recorded elsewhere (config exits.kvm_recorded), or None.
        Repetition 0 is the variant's directory there, repetition k its subdirectory rep<k>."""
        recorded = self.config["exits"]["kvm_recorded"]
        if not recorded:
            return None
        run = Path(recorded) / variant
        if int(rep) == 0:
            return str(run)
        # One recording read twice would be two identical "independent" runs: an interval of nothing.
        run = run / f"rep{rep}"
        if not run.is_dir():
            raise ConfigError(
                f"exits.kvm_recorded: {run} does not exist, and repetition {rep} of the exit runs of {variant} "
                f"(diskmods.coalesce.exit_repetitions) needs a recording of its own; record one there (laid out "
                f"as {Path(recorded) / variant}), or leave exits.kvm_recorded unset to run them here")
        return str(run)

    def exit_plugin_input(self) -> dict[str, str]:
        """The TCG exit plugin, for exit runs that may run under TCG.  Under vm.accel: kvm no run can,
        so the plugin (and the QEMU source its header comes from) is not built: an offline host
        running prebuilt artifacts (docs/kvm-acceptance.md) has neither the source nor a compiler."""
        return {} if self.planned_exit_backend == "kvm" else {"plugin": self.plugin}

    def exit_run_inputs(self, variant: str, rep) -> dict[str, str]:
        """What booting an exit run needs; a recorded KVM run needs none of it."""
        if self.exits_recorded(variant, rep):
            return {}
        return {"initrd": self.image, "data_disk": self.data_disk, **self.exit_plugin_input()}

    def exits_accelerator(self, variant: str, rep) -> str:
        """The accelerator decision an exit table follows: this host's, or the recording's."""
        recorded = self.exits_recorded(variant, rep)
        return f"{recorded}/accelerator.json" if recorded else self.accelerator

    def fig6_selected(self) -> bool:
        """Whether this run makes Fig 6 (report.artifacts: null is every artifact)."""
        artifacts = (self.config.get("report") or {}).get("artifacts")
        return artifacts is None or "fig6" in artifacts

    def table3_boot_runs(self) -> list[str]:
        """The 32-bit boot runs Table 3 shows: only where Fig 6 is made (a profile without it, such as
        the KVM acceptance profile, builds no 32-bit kernel) and only where exits are traced here (a
        re-analysis of recorded KVM runs, exits.kvm_recorded, boots nothing)."""
        if not self.fig6_selected() or self.config["exits"].get("kvm_recorded"):
            return []
        return self.exit_runs("boot", self.pmtmr.variants, self.vm_qemu, "exits.csv")

    # ------------------------------------------------------------------ the KVM acceptance run

    def pack_builds(self) -> tuple[list[str], list[str]]:
        """(kernel variants, QEMU variants) that the acceptance DAG boots, which the offline pack
        carries: the probe's kernel, the smoke, disk, exit and network variants, the timer
        conditions' kernels and QEMUs."""
        timer = list(self.timer.conditions.values())
        variants = [self.variants[0], *self.config["smoke"]["variants"], *self.disk["variants"],
                    *self.config["exits"]["variants"], self.network.variants[0], *(v for v, _q in timer)]
        return list(dict.fromkeys(variants)), list(dict.fromkeys([self.vm_qemu, *(q for _v, q in timer)]))

    def acceptance_bonnie_exits(self) -> list[str]:
        """Table 3's bonnie++ exit run of each exits.variants kernel, on vm.qemu."""
        return [str(Path(p).parent)
                for p in self.exit_runs("bonnie", self.config["exits"]["variants"], self.vm_qemu, "summary.json")]

    def acceptance_tick_runs(self) -> dict[str, tuple[str, float]]:
        """Table 1's exit runs (condition -> (directory, the PIT scale of its QEMU))."""
        return {name: (d, tick.settings(self.config, qemu)["pit_scale"])
                for (name, (_v, qemu)), d in zip(self.timer.conditions.items(), self.timer.exit_dirs)}

    # ------------------------------------------------------------------ tables and figures

    def table_files(self, name: str) -> dict[str, str]:
        return {"csv": f"{self.results}/tables/{name}.csv",
                "provenance": f"{self.results}/tables/{name}.provenance.json"}

    def figure_files(self, fig: str) -> list[str]:
        return [f"{self.results}/figures/{fig}.{ext}" for ext in ("pdf", "png")]

    def figure_ratios(self, fig: str) -> str:
        """The figure's summary: each bar's ratio with its interval (what the claims table reads)."""
        return f"{self.results}/figures/{fig}-ratios.csv"
