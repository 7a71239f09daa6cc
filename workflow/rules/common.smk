# Configuration checks, paths and helpers shared by every stage.

from pathlib import Path

from snakemake.exceptions import WorkflowError

import guestio.config
import guestio.lifetime
import guestio.paths
import guestio.plan
import guestio.build.kconfig
import guestio.build.patches
import guestio.build.qemu
import guestio.hostprobe
import guestio.progress
import guestio.provenance
import guestio.vm
import guestio.util

REPO = Path(workflow.basedir)
JOBS_DIR = REPO / "workflow" / "jobs"
JOB_LIB = guestio.vm.JOB_LIB  # sourced by every job, delivered beside it
# The set-up command that error messages name carries this run's --configfile files.
guestio.build.hostdirs.set_run_configfiles(workflow.overwrite_configfiles or [])

# The config (guestio.config.check_all: its schema, defaults filled in, references, inputs,
# consistency), then what this host offers (guestio.hostprobe: a capability it lacks has a stand-in,
# such as bfq's diskmods.sched.host_fallback, or stops here naming what needs it and what to do),
# then every file this config builds and runs, each stage's conditions and the tables and figures
# drawn from them (guestio.plan): one object that every rule file reads.  All before any job.
try:
    guestio.config.check_all(config)
    HOST_PROBE = guestio.hostprobe.check(config, repo=REPO)
    PLAN = guestio.plan.Plan(config, REPO, HOST_PROBE)
except (guestio.config.ConfigError, guestio.hostprobe.HostCapabilityError) as error:
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


VARIANTS = PLAN.variants
QEMU_VARIANTS = PLAN.qemu_variants
RESULTS = PLAN.results
BUILD = "build"
KERNEL_DIR = PLAN.kernel_dir
IMAGE = PLAN.image
IMAGE_MANIFEST = PLAN.image_manifest
DATA_DISK = PLAN.data_disk
HOST_SNAPSHOT = PLAN.host_snapshot
# The host probe's findings (guestio.hostprobe), written at parse time; what the provenance
# records of a table read it, so those rules name it as an input.
HOST_CAPABILITIES = f"{RESULTS}/{guestio.hostprobe.CAPABILITIES_FILE}"
ACCELERATOR = PLAN.accelerator
PLUGIN = PLAN.plugin
CONDA_ENV = "../../envs/guestio.yaml"
# The run paths (their grammar: guestio.paths), as the rules' wildcard patterns.
DISK_VM_DIR = guestio.paths.template("disk_vm", RESULTS)
DISK_NATIVE_DIR = guestio.paths.template("disk_native", RESULTS)
SMOKE_DIR = guestio.paths.template("smoke", RESULTS)
EXIT_DIR = guestio.paths.template("exits", RESULTS)


wildcard_constraints:
    variant="|".join(VARIANTS),
    qemu="|".join(QEMU_VARIANTS),
    rep=r"\d+",
