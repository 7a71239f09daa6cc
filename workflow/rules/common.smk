# Configuration checks, paths and helpers shared by every stage.

from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

import guestio.config
import guestio.lifetime
import guestio.paths
import guestio.build.kconfig
import guestio.build.patches
import guestio.build.qemu
import guestio.hostprobe
import guestio.progress
import guestio.provenance
import guestio.vm
import guestio.util

REPO = Path(workflow.basedir)
LAYERS_ROOT = REPO / "workflow" / "kernel" / "layers"
JOBS_DIR = REPO / "workflow" / "jobs"
JOB_LIB = guestio.vm.JOB_LIB  # sourced by every job, delivered beside it
# The set-up command that error messages name carries this run's --configfile files.
guestio.build.hostdirs.set_run_configfiles(workflow.overwrite_configfiles or [])

try:
    guestio.config.check(config, REPO / "workflow" / "schemas" / "config.schema.yaml")
    guestio.config.check_variants(config, LAYERS_ROOT)
    # Fills in the schema's defaults.
    validate(config, "../schemas/config.schema.yaml")
    # Paths (~ expanded here, in config, for every rule), the subnet, the patches, the
    # report's artifacts, the exit window: refused before anything is written.
    guestio.config.check_inputs(config)
    # Values that are each valid but cannot work together: before any job.
    guestio.config.check_consistency(config, image_mib=guestio.config.image_size_mib(config["results_dir"]))
except guestio.config.ConfigError as error:
    raise WorkflowError(str(error))

# What this host offers, before any job (guestio.hostprobe): a capability it lacks has a
# stand-in (bfq's: diskmods.sched.host_fallback) or stops here, naming what needs it and what to
# do.  HOST_PROBE.host_schedulers is diskmods.sched.host as it runs on this host.
try:
    HOST_PROBE = guestio.hostprobe.check(config, repo=REPO)
except guestio.hostprobe.HostCapabilityError as error:
    raise WorkflowError(str(error))

# A Snakemake killed outright (SIGKILL) leaves its locks; the next one removes them.
guestio.lifetime.clear_stale_snakemake_locks(Path.cwd())
# ... and a KVM exit run killed with it, its tracefs instance (buffers, event filters).
guestio.lifetime.sweep_stale_trace_instances()


# Snakemake's own locks do not keep two runs on one results_dir apart (the first to end
# removes every lock in .snakemake/locks): each run also holds its results_dir, for its
# whole life; a second run waits for it ("waiting for ... held by pid N").
onstart:
    guestio.lifetime.record_snakemake_locks(Path.cwd(), getattr(workflow.persistence, "_lockfile", {}).values())
    guestio.util.hold_exclusive(Path(RESULTS) / ".snakemake-run")
    # The run's estimated time by stage, and the time left as jobs finish (real runs only: a dry
    # run calls no onstart).  It never stops the run: a problem is one warning line.
    guestio.progress.start(workflow)


VARIANTS = list(config["variants"])

RESULTS = config["results_dir"]
BUILD = "build"
KERNEL_DIR = f"{RESULTS}/kernels"
IMAGE = f"{RESULTS}/image/initramfs.cpio"
IMAGE_MANIFEST = f"{RESULTS}/image/initramfs.json"
DATA_DISK = f"{RESULTS}/disks/data-{config['image']['data_disk_mib']}M.img"
HOST_SNAPSHOT = f"{RESULTS}/host/host.json"
# The host probe's findings (guestio.hostprobe), written at parse time; what the provenance
# records of a table read it, so those rules name it as an input.
HOST_CAPABILITIES = f"{RESULTS}/{guestio.hostprobe.CAPABILITIES_FILE}"
ACCELERATOR = f"{RESULTS}/host/accelerator.json"
CONDA_ENV = "../../envs/guestio.yaml"


wildcard_constraints:
    variant="|".join(VARIANTS),


def layer_files(wildcards):
    """The fragments and patches a variant is built from, so editing one rebuilds it."""
    files = []
    for layer in config["variants"][wildcards.variant]:
        fragment = guestio.build.kconfig.layer_fragment(LAYERS_ROOT, layer)
        if fragment is not None:
            files.append(str(fragment))
        files.extend(str(p) for p in guestio.build.kconfig.layer_patches(LAYERS_ROOT, layer))
    return files


def host_identity(wildcards=None):
    """Host facts whose change must redo host-dependent results (a rerun trigger)."""
    return guestio.provenance.host_identity()


def smoke_runs():
    return [f"{guestio.paths.run_dir('smoke', RESULTS, variant=v)}/provenance.json" for v in config["smoke"]["variants"]]


def kernel_outputs(variant):
    return {
        "bzimage": f"{KERNEL_DIR}/{variant}/bzImage",
        "system_map": f"{KERNEL_DIR}/{variant}/System.map",
        "vmlinux": f"{KERNEL_DIR}/{variant}/vmlinux",
        "kconfig": f"{KERNEL_DIR}/{variant}/config",
        "build": f"{KERNEL_DIR}/{variant}/build.json",
    }


# QEMU variants (qemu.variants: name -> patch layers) and what each one's runs use.
QEMU_VARIANTS = list(config["qemu"]["variants"])


def qemu_outputs(variant):
    """{"binary": the QEMU binary, "build": its build.json} (guestio.build.qemu.load_build reads it)."""
    return guestio.build.qemu.outputs(RESULTS, variant, config["qemu"])


if config["vm"]["qemu"] not in QEMU_VARIANTS:
    raise WorkflowError(f"invalid configuration: vm.qemu: {config['vm']['qemu']!r} is not a QEMU variant; "
                        f"qemu.variants defines: {', '.join(QEMU_VARIANTS)}")


def run_qemu(wildcards=None):
    """The build.json of the default QEMU (vm.qemu): runs whose path names no QEMU variant."""
    return qemu_outputs(config["vm"]["qemu"])["build"]


def qemu_build_of(wildcards):
    """The build.json of the QEMU variant a run's path names ({qemu} wildcard)."""
    return qemu_outputs(wildcards.qemu)["build"]


wildcard_constraints:
    qemu="|".join(QEMU_VARIANTS),


# Disk experiment: one job per condition and repetition.  A condition is the matrix
# point (kernel variant, QEMU variant, disk interface, guest scheduler, host scheduler);
# the run path encodes all of it, so an artifact that needs a condition another one
# already ran shares that run (Fig 1's VM runs are Fig 5's vHZ1000 runs).
DISK = config["disk"]
DISK_REPS = range(DISK["repetitions"])
DISK_CONDITION_KEYS = ("variant", "qemu", "disk", "gsched", "hsched")
# The run paths (their grammar: guestio.paths), as the rules' wildcard patterns.
DISK_VM_DIR = guestio.paths.template("disk_vm", RESULTS)
DISK_NATIVE_DIR = guestio.paths.template("disk_native", RESULTS)
SMOKE_DIR = guestio.paths.template("smoke", RESULTS)


def disk_condition(**kw):
    """A disk condition: the default one (Fig 1's VM side) with the given keys changed."""
    unknown = set(kw) - set(DISK_CONDITION_KEYS)
    if unknown:
        raise WorkflowError(f"disk_condition: unknown keys {sorted(unknown)} (known: {DISK_CONDITION_KEYS})")
    condition = {"variant": "baseline", "qemu": config["vm"]["qemu"], "disk": DISK["interfaces"][0],
                 "gsched": DISK["guest_scheduler"], "hsched": "file"}
    condition.update(kw)
    return condition


def disk_vm_runs(conditions, name="measurements.csv", reps=None):
    """Every repetition's file of each condition (a condition appearing twice is run once)."""
    paths = []
    for c in conditions:
        for rep in reps if reps is not None else DISK_REPS:
            path = f"{guestio.paths.run_dir('disk_vm', RESULTS, rep=rep, **c)}/{name}"
            if path not in paths:
                paths.append(path)
    return paths


def disk_native_runs():
    return [f"{guestio.paths.run_dir('disk_native', RESULTS, rep=rep)}/measurements.csv" for rep in DISK_REPS]


# Long-form measurement tables, one per artifact group: name -> the run CSVs it combines.
# A stage registers its own (TABLES["timer"] = ...); rule measurement_table writes
# {RESULTS}/tables/<name>.csv with provenance.  Figures: id -> the table they are drawn from.
TABLES = {}
FIGURES = {}


# The default condition's value of each extra measurement column: a claim's selector that
# leaves one unnamed means this value (guestio.analysis.figure_data._side).
CONDITION_DEFAULTS = {"qemu": config["vm"]["qemu"], "guest_scheduler": DISK["guest_scheduler"],
                      "host_scheduler": "file",
                      # not a column: what "{sched_host}" in claims.yaml stands for, the host
                      # scheduler in the paper's CFQ's place on this host (guestio.analysis.claims)
                      "sched_host": HOST_PROBE.cfq_standin}


def register_table(name, runs, variants=(), qemus=(), experiment=None, config_sections=()):
    """A measurement table: its runs, and the kernel and QEMU builds its provenance names."""
    TABLES[name] = {
        "runs": list(dict.fromkeys(runs)),
        "variants": sorted(set(variants)),
        "qemus": sorted(set(qemus) | {config["vm"]["qemu"]}),
        "experiment": experiment or name,
        "config": {"vm": config["vm"], **{k: config[k] for k in config_sections}},
    }


def conditions_variants(conditions):
    return [c["variant"] for c in conditions]


def conditions_qemus(conditions):
    return [c["qemu"] for c in conditions]


def table_files(name):
    return {"csv": f"{RESULTS}/tables/{name}.csv", "provenance": f"{RESULTS}/tables/{name}.provenance.json"}


def figure_files(fig):
    return [f"{RESULTS}/figures/{fig}.{ext}" for ext in ("pdf", "png")]


# Exit tables: modelled exits of bonnie++ per kernel variant.
# Per results dir: it is built against that dir's QEMU source record, so two results dirs
# do not rebuild one shared file and force each other's exit runs to redo.
PLUGIN = f"{RESULTS}/exits/plugin/libexitcount.so"


# One exit run: workload, kernel variant, QEMU variant and repetition.  Every exit table reads
# repetition 0; only Table 4 asks for more (diskmods.coalesce.exit_repetitions), so its before
# side's rep0 is Table 3's run of that condition and no other table's run is repeated.
EXIT_DIR = guestio.paths.template("exits", RESULTS)


wildcard_constraints:
    rep=r"\d+",


def exit_dir(workload, variant, qemu, rep=0):
    """The directory of one exit run."""
    return guestio.paths.run_dir("exits", RESULTS, workload=workload, variant=variant, qemu=qemu, rep=rep)


def fig6_selected():
    """Whether this run makes Fig 6 (report.artifacts: null is every artifact)."""
    artifacts = (config.get("report") or {}).get("artifacts")
    return artifacts is None or "fig6" in artifacts


def table3_boot_runs(variants):
    """The 32-bit boot runs Table 3 shows: only where Fig 6 is made (a profile without it, such as
    the KVM acceptance profile, builds no 32-bit kernel) and only where exits are traced here (a
    re-analysis of recorded KVM runs, exits.kvm_recorded, boots nothing)."""
    if not fig6_selected() or config["exits"].get("kvm_recorded"):
        return []
    return exit_runs("boot", variants, config["vm"]["qemu"], "exits.csv")


def exit_runs(workload, variants, qemu, name, reps=(0,)):
    """One file of the exit runs of a workload, per kernel variant and repetition (in that
    order), on one QEMU variant."""
    return [f"{exit_dir(workload, v, qemu, rep)}/{name}" for v in variants for rep in reps]


def exits_recorded(variant, rep=0):
    """A KVM run of this variant recorded elsewhere (config exits.kvm_recorded), or None.
    Repetition 0 is the variant's directory there, repetition k its subdirectory rep<k>."""
    recorded = config["exits"]["kvm_recorded"]
    if not recorded:
        return None
    run = Path(recorded) / variant
    if int(rep) == 0:
        return str(run)
    # One recording read twice would be two identical "independent" runs: an interval of nothing.
    run = run / f"rep{rep}"
    if not run.is_dir():
        raise WorkflowError(
            f"exits.kvm_recorded: {run} does not exist, and repetition {rep} of the exit runs of {variant} "
            f"(diskmods.coalesce.exit_repetitions) needs a recording of its own; record one there (laid out "
            f"as {Path(recorded) / variant}), or leave exits.kvm_recorded unset to run them here")
    return str(run)


# The exit backend the config already decides: vm.accel kvm means KVM or a stop at the probe,
# tcg means the plugin; auto leaves it to the probe's run-time decision (None).
PLANNED_EXIT_BACKEND = {"kvm": "kvm", "tcg": "tcg"}.get(config["vm"]["accel"])


def exit_plugin_input(wildcards=None):
    """The TCG exit plugin, for exit runs that may run under TCG.  Under vm.accel: kvm no run can,
    so the plugin (and the QEMU source its header comes from) is not built: an offline host
    running prebuilt artifacts (docs/kvm-acceptance.md) has neither the source nor a compiler."""
    return {} if PLANNED_EXIT_BACKEND == "kvm" else {"plugin": PLUGIN}


def exit_run_inputs(wildcards):
    """What booting the exit run needs; a recorded KVM run needs none of it."""
    if exits_recorded(wildcards.variant, wildcards.rep):
        return {}
    return {"initrd": IMAGE, "data_disk": DATA_DISK, **exit_plugin_input()}


def exits_accelerator(wildcards):
    """The accelerator decision an exit table follows: this host's, or the recording's."""
    recorded = exits_recorded(wildcards.variant, wildcards.rep)
    return f"{recorded}/accelerator.json" if recorded else ACCELERATOR
