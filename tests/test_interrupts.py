"""The interrupt matrix, through the real CLI: every interruption ends with nothing left over.

Each case starts ``snakemake`` (its own session, like a terminal's job) on one
phase of the pipeline with the profile tests/data/interrupts.yaml, waits until
the phase is really at work, interrupts it, and then checks:

* the interrupted Snakemake ends (at once, or after its running job for a
  SIGTERM to Snakemake alone, which Snakemake takes as "finish what runs");
* no process of the pipeline is left: nothing started during the case whose
  command line or working directory names the results directory, the
  kernel tree of the case, or one of the rule's job scripts (QEMU, bonnie++,
  make, cc1, the job's own Python);
* no data-disk copy (``data-disk.img``), no native run directory, no memory
  cgroup of the pipeline, no new ``/tmp/guestio-*``;
* no half-written output passes for complete: a dry run plans the
  interrupted job again (``rerun-incomplete`` in profiles/default);
* the next invocation completes the work, and leaves nothing either.

Signals: SIGINT and SIGTERM to Snakemake's process group (Ctrl-C, a terminal
closing, ``kill -- -PGID``), SIGTERM and SIGKILL to Snakemake alone, and a
job that fails (its benchmark killed under it).  All five on the cheapest
phase, the native benchmark; one per other phase: SIGTERM to the group
during the probe boot (``vm.accel: auto`` boots under KVM, which hangs here
until ``probe_timeout_s``), SIGKILL to Snakemake alone during a VM run and
during a kernel build (the cases that orphaned QEMU and make before
guestio.lifetime).  SIGINT to the group during a VM run is
test_pipeline_e2e's.  Last, ``vm.accel: kvm`` with a failing probe: the
message names vm.accel and nothing runs after it.

Every case prints its timings (``pytest -s``).  About 8 minutes in all on
2 cores, once the kernels of build/test-results are built.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from conftest import REPO, SNAKEMAKE, TEST_RESULTS, TEST_RESULTS_REL, job_counts
from guestio import paths

pytestmark = [pytest.mark.boot, pytest.mark.interrupt]

PROFILE = REPO / "tests" / "data" / "interrupts.yaml"
RESULTS = TEST_RESULTS
NATIVE_DIR = RESULTS / "native-bonnie"
KERNEL_TREE = REPO / "build" / "kernel" / "intr"
CLK_TCK = os.sysconf("SC_CLK_TCK")
LOG_DIR = RESULTS / "interrupt-logs"


def rel(*parts: str) -> str:
    return "/".join([TEST_RESULTS_REL, *parts])


def cli(targets: list[str], overlay: Path | None = None, *args: str) -> list[str]:
    # Targets first: --configfile takes several values.
    configs = [str(PROFILE)] + ([str(overlay)] if overlay else [])
    return [str(SNAKEMAKE), *targets, *args, "--cores", "all", "--configfile", *configs]


# --------------------------------------------------------------------------
# Processes


def _now_ticks() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME) * CLK_TCK


def _proc(pid: int) -> tuple[str, str, int, str] | None:
    """(cmdline, cwd, start time in ticks, state) of a live process, or None."""
    try:
        cmdline = (Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                   .decode(errors="replace").strip())
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        cwd = ""
    fields = stat[stat.rindex(")") + 2:].split()
    return cmdline, cwd, int(fields[19]), fields[0]


@dataclass
class Phase:
    name: str
    rule: str
    targets: list[str]
    scripts: tuple[str, ...]        # job scripts of the phase (.snakemake/scripts/tmpXXX.<name>)
    ready: Callable[[], bool]       # the phase is at work: interrupt now
    clear: Callable[[], None]       # make the phase's job(s) due
    markers: tuple[str, ...] = ()   # more strings that name the phase's processes
    victim: Callable[[], int | None] = lambda: None  # a process to kill for "job fails"
    outputs: list[Path] = field(default_factory=list)


def leftovers(phase: Phase, since_ticks: float) -> list[str]:
    """Processes started since *since_ticks* that belong to the pipeline run of *phase*."""
    dirs = [str(RESULTS), str(KERNEL_TREE)]
    strings = [str(RESULTS), TEST_RESULTS_REL, str(KERNEL_TREE), "build/kernel/intr", *phase.markers]
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        info = _proc(int(entry.name))
        if info is None:
            continue
        cmdline, cwd, started, state = info
        if started < since_ticks or state in "ZX":
            continue
        ours = (any(s in cmdline for s in strings)
                or any(cwd == d or cwd.startswith(d + "/") for d in dirs)
                or (".snakemake/scripts/" in cmdline and any(cmdline.endswith(f".{s}") for s in phase.scripts)))
        if ours:
            found.append(f"{entry.name}: {cmdline[:160]} (cwd {cwd})")
    return found


def processes(pattern: str, *needles: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            info = _proc(int(entry.name))
            if info and info[3] not in "ZX" and re.search(pattern, info[0]) and all(n in info[0] for n in needles):
                found.append(int(entry.name))
    return found


# --------------------------------------------------------------------------
# What else may not be left


def cgroups() -> list[Path]:
    return [p for p in Path("/sys/fs/cgroup").rglob("guestio-native-*") if p.is_dir()]


def tmp_dirs() -> set[str]:
    return {p.name for p in Path("/tmp").glob("guestio-*")}


def in_use_elsewhere(name: str) -> bool:
    """Some live process outside this test's pipeline run names /tmp/<name> (a QEMU's QMP socket)."""
    path = f"/tmp/{name}/"
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            info = _proc(int(entry.name))
            if info and info[3] not in "ZX" and path in info[0] and TEST_RESULTS_REL not in info[0] \
                    and str(RESULTS) not in info[0]:
                return True
    return False


def leftover_files() -> list[str]:
    found = [str(p) for p in (RESULTS / "runs").rglob("data-disk.img")] if (RESULTS / "runs").is_dir() else []
    if NATIVE_DIR.is_dir():
        found += [str(p) for p in NATIVE_DIR.iterdir()]
    found += [str(p) for p in (RESULTS / "disks").glob(".*.tmp")] if (RESULTS / "disks").is_dir() else []
    found += [str(p) for p in cgroups()]
    return found


# --------------------------------------------------------------------------
# Phases


def _serial_says(pattern: str) -> bool:
    for log in (RESULTS / "runs" / "disk" / "vm").rglob("serial.log"):
        if pattern in log.read_text(errors="replace"):
            return True
    return False


def _rm(*paths: Path) -> None:
    for p in paths:
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


_ready_since: dict[str, float] = {}


def _after(key: str, condition: bool, delay: float) -> bool:
    """True once *condition* has held for *delay* seconds."""
    if not condition:
        _ready_since.pop(key, None)
        return False
    start = _ready_since.setdefault(key, time.monotonic())
    return time.monotonic() - start >= delay


NATIVE = Phase(
    name="native benchmark", rule="disk_native",
    targets=[f"{paths.run_dir('disk_native', TEST_RESULTS_REL, rep=r)}/measurements.csv" for r in (0, 1)],
    scripts=("disk_native.py",),
    # bonnie++ has written part of its file (it is in its memory cgroup by then).
    ready=lambda: _after("native", any(p.stat().st_size > 64 << 20 for p in NATIVE_DIR.glob("guestio-run-*/Bonnie.*")), 0.5),
    clear=lambda: _rm(RESULTS / "runs" / "disk" / "native"),
    markers=(str(NATIVE_DIR),),
    victim=lambda: next(iter(processes(r"^bonnie\+\+ ", str(NATIVE_DIR))), None),
)

VM = Phase(
    name="VM run", rule="disk_vm",
    targets=[f"{paths.run_dir('disk_vm', TEST_RESULTS_REL, variant='baseline', qemu='stock', disk='ide', gsched='mq-deadline', hsched='file', rep=0)}/measurements.csv"],
    scripts=("disk_vm.py",),
    # bonnie++ runs in the guest: init reached a few seconds ago.
    ready=lambda: _after("vm", _serial_says("GUESTIO: init started"), 5),
    clear=lambda: _rm(RESULTS / "runs" / "disk" / "vm"),
)

PROBE = Phase(
    name="probe boot", rule="accelerator",
    targets=[rel("host", "accelerator.json")],
    scripts=("probe_accelerator.py",),
    # QEMU under KVM is up (and hangs until probe_timeout_s).
    ready=lambda: _after("probe", bool(processes(r"qemu-system", "accel=kvm", TEST_RESULTS_REL)), 3),
    clear=lambda: _rm(RESULTS / "host" / "accelerator.json", RESULTS / "host" / "probe"),
)


def _compiled_lines() -> int:
    try:
        return sum(1 for line in (RESULTS / "kernels" / "intr" / "build.log").read_text(errors="replace")
                   .splitlines() if line.startswith("  CC "))
    except OSError:
        return 0


KERNEL = Phase(
    name="kernel build", rule="kernel",
    targets=[rel("kernels", "intr", "build.json")],
    scripts=("build_kernel.py",),
    # make is well into the objects (ccache or not).
    ready=lambda: _compiled_lines() > 150 and bool(processes(r"^make ", str(KERNEL_TREE))),
    clear=lambda: _rm(RESULTS / "kernels" / "intr"),
)


# --------------------------------------------------------------------------
# One case


SIGNALS = {
    "SIGINT to the group": lambda smk: os.killpg(smk.pid, signal.SIGINT),
    "SIGTERM to the group": lambda smk: os.killpg(smk.pid, signal.SIGTERM),
    "SIGTERM to snakemake": lambda smk: os.kill(smk.pid, signal.SIGTERM),
    "SIGKILL to snakemake": lambda smk: os.kill(smk.pid, signal.SIGKILL),
}


def wait_for(what: str, predicate, timeout: float, smk: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if smk is not None and smk.poll() is not None:
            raise AssertionError(f"snakemake ended (status {smk.returncode}) before {what}:\n"
                                 + (log.read_text()[-4000:] if log else ""))
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def planned(phase: Phase) -> tuple[dict[str, int], str]:
    dry = subprocess.run(cli(phase.targets, None, "-n"), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    return job_counts(dry.stdout), dry.stdout + dry.stderr


def run_case(phase: Phase, how: str) -> dict[str, float]:
    """Interrupt *phase* by *how*; check what is left, the rerun plan and the next invocation."""
    times: dict[str, float] = {}
    phase.clear()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = LOG_DIR / f"{phase.rule}-{how.replace(' ', '-')}.log"
    tmp_before = tmp_dirs()
    t0, since = time.monotonic(), _now_ticks() - CLK_TCK  # a second of slack for the clock's grain
    with open(log, "w") as out:
        smk = subprocess.Popen(cli(phase.targets), cwd=REPO, stdout=out, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        _ready_since.clear()
        wait_for(f"the {phase.name} to be at work", phase.ready, 900, smk, log)
        times["until interrupted"] = time.monotonic() - t0
        t1 = time.monotonic()
        if how == "job fails":
            victim = wait_for("a process to kill", phase.victim, 30)
            os.kill(victim, signal.SIGKILL)
        else:
            SIGNALS[how](smk)
        # Snakemake alone with SIGTERM finishes its running job first.
        smk.wait(timeout=600)
        times["snakemake gone"] = time.monotonic() - t1
    finally:
        if smk.poll() is None:
            os.killpg(smk.pid, signal.SIGKILL)
            smk.wait()
    output = log.read_text()
    assert smk.returncode != 0, f"the interrupted snakemake ended with status 0:\n{output[-3000:]}"

    # Nothing left: processes (their cleanup may still be under way after SIGKILL), files, cgroups.
    t2 = time.monotonic()
    deadline = time.monotonic() + 90
    while (left := leftovers(phase, since)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == [], f"{how} during the {phase.name} left processes:\n" + "\n".join(left) + "\n" + output[-3000:]
    times["all processes gone"] = time.monotonic() - t2
    assert leftover_files() == [], f"{how} during the {phase.name} left files: {leftover_files()}"
    # Another program's temporary directory (in use by a QEMU that is not ours, or soon gone)
    # is not the pipeline's.
    deadline = time.monotonic() + 30
    while (new := {d for d in tmp_dirs() - tmp_before if not in_use_elsewhere(d)}) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert new == set(), f"temporary directories left: {new}"

    # The interrupted job is due again: what it left is not taken as complete.  Its outputs are
    # written last and whole, so normally there is none; to show that even a whole output
    # written by a job that outlived its Snakemake would not pass (rerun-incomplete), one is
    # forged here for the native job the killed Snakemake was running.
    forged = None
    if how == "SIGKILL to snakemake" and phase is NATIVE:
        rep = re.findall(r"wildcards: rep=(\d+)", output)[-1]
        forged = REPO / phase.targets[int(rep)]
        assert not forged.exists()
        forged.parent.mkdir(parents=True, exist_ok=True)
        forged.write_text("written by a job that outlived its snakemake\n")
    counts, plan = planned(phase)
    if forged is not None:
        # Both repetitions are due; the forged one as incomplete (Snakemake 9 with
        # rerun-incomplete says "Forced execution", without it "Incomplete output files").
        block = plan[plan.index(f"output: {forged.relative_to(REPO)}"):]
        block = block[:block.index("\n\n")] if "\n\n" in block else block
        assert counts.get(phase.rule) == 2 and re.search(r"reason: (Forced execution|Incomplete output)", block), plan
    if how == "SIGTERM to snakemake" and phase is NATIVE:
        # Snakemake finished the running repetition and started no other.
        assert counts.get(phase.rule) == 1, plan
    else:
        assert counts.get(phase.rule, 0) >= 1, f"the interrupted {phase.rule} job is not planned again:\n{plan}"
    if how == "SIGKILL to snakemake":
        assert "stale Snakemake lock" in plan, f"the killed Snakemake's locks were not cleared:\n{plan}"
    reasons = sorted({line.strip() for line in plan.splitlines() if line.strip().startswith("reason:")})

    # The next invocation completes the work.
    t3 = time.monotonic()
    again = subprocess.run(cli(phase.targets), cwd=REPO, capture_output=True, text=True, timeout=1200)
    times["next invocation"] = time.monotonic() - t3
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    for target in phase.targets:
        assert (REPO / target).is_file(), target
        if target.endswith(".csv"):
            assert "written by a job" not in (REPO / target).read_text()
    assert planned(phase)[0].get(phase.rule, 0) == 0
    assert leftovers(phase, since) == [] and leftover_files() == []
    times["total"] = time.monotonic() - t0
    print(f"\n{phase.name} / {how}: " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items())
          + "\n  planned again because: " + " | ".join(reasons))
    record = LOG_DIR / "times.json"
    data = json.loads(record.read_text()) if record.is_file() else {}
    data[f"{phase.name} / {how}"] = {k: round(v, 1) for k, v in times.items()}
    record.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return times


# --------------------------------------------------------------------------
# The matrix (in this order: the probe first, since the VM run needs its decision)


@pytest.fixture(scope="module", autouse=True)
def built_inputs():
    """What the cases stand on (kernel, image, QEMU, data disk), built first: not part of any case."""
    done = subprocess.run(cli(VM.targets, None, "--omit-from", "accelerator"), cwd=REPO, capture_output=True,
                          text=True, timeout=3600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]


def test_kvm_requested_with_a_failing_probe_stops_the_run(tmp_path):
    """vm.accel: kvm where the probe fails (here: KVM hangs): the error names vm.accel, nothing runs after it."""
    overlay = tmp_path / "kvm.yaml"
    overlay.write_text("vm:\n  accel: kvm\n  probe_timeout_s: 5\n")
    PROBE.clear()
    targets = [*PROBE.targets, *VM.targets, *NATIVE.targets]
    done = subprocess.run(cli(targets, overlay), cwd=REPO, capture_output=True, text=True, timeout=900)
    text = done.stdout + done.stderr
    assert done.returncode != 0
    assert "vm.accel: kvm requested but /dev/kvm exists but a probe boot did not reach init within 5 s" in text
    after = text[text.index("Error in rule accelerator"):]
    assert not re.search(r"^\s*(local)?rule \w+:", after, re.M), f"jobs started after the failed probe:\n{after}"
    assert not (RESULTS / "host" / "accelerator.json").exists()


def test_probe_boot_sigterm_to_the_group():
    run_case(PROBE, "SIGTERM to the group")


def test_vm_run_sigkill_to_snakemake():
    run_case(VM, "SIGKILL to snakemake")


@pytest.mark.parametrize("how", [*SIGNALS, "job fails"])
def test_native_benchmark(how):
    run_case(NATIVE, how)


def test_kernel_build_sigkill_to_snakemake():
    try:
        run_case(KERNEL, "SIGKILL to snakemake")
    finally:
        # The case's own kernel tree (about 1 GiB of objects) is no use to anyone else.
        shutil.rmtree(KERNEL_TREE, ignore_errors=True)
