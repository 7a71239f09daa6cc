"""The Slurm profile (profiles/slurm) on a real one-node Slurm cluster without an accounting database.

A session fixture starts a private cluster with tests/slurm/cluster.sh: its own munged (key and
socket in a temporary directory, the host's munge untouched), slurmctld and slurmd, this host as
the only node, MinJobAge=300 so that finished jobs stay visible to squeue and scontrol.  The
test runs Snakemake through the profile, fitted to this node (its cores and memory; every other
key as the profile has it), on three real jobs: the accelerator probe boot (a VM: QEMU boots
the guest kernel and initramfs the tests build, see conftest.py), the data disk and the QEMU
record (qemu.binary: host).  It checks the outputs, what Slurm recorded for each job (time
limit, cores, memory, the whole node for the VM job), and that nothing is left in the queue or
on the node.  Skipped where slurmctld, slurmd or munged are not installed (envs/debian-packages.txt
installs them).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import REPO, SNAKEMAKE

CLUSTER_SH = REPO / "tests" / "slurm" / "cluster.sh"
PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
DAEMONS = ("munged", "slurmctld", "slurmd")
DATA_DISK_MIB = 64
# Set in Snakemake's environment only (not the daemons'): every process a job starts inherits
# it (sbatch --export=ALL, srun passes the environment on), so leftovers can be found by it.
MARKER = "GUESTIO_SLURM_TEST"
HEAVY_LOCK = Path("/tmp/guestio-heavy.lock")   # one VM, build or Snakemake run at a time on this host
# Three short jobs take under a minute; a status command that cannot see jobs end waits forever.
RUN_TIMEOUT_S = 300


@dataclass
class Cluster:
    dir: Path
    conf: Path
    bin_dir: Path
    cpus: int
    memory_mb: int

    def env(self, **extra: str) -> dict[str, str]:
        return dict(os.environ, SLURM_CONF=str(self.conf), PATH=f"{self.bin_dir}:{os.environ['PATH']}", **extra)

    def run(self, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(argv, env=self.env(), capture_output=True, text=True, timeout=30)

    def daemon_pids(self) -> set[int]:
        return {int(p.read_text()) for p in self.dir.glob("*.pid") if p.read_text().strip()}


def _node_facts(conf: Path) -> tuple[int, int]:
    """The node's cores and memory (MiB) as slurmctld offers them."""
    out = subprocess.run(["scontrol", "show", "node", "-o"], env=dict(os.environ, SLURM_CONF=str(conf)),
                         capture_output=True, text=True, check=True).stdout
    return int(re.search(r"CPUTot=(\d+)", out).group(1)), int(re.search(r"RealMemory=(\d+)", out).group(1))


def _srun_wrapper(bin_dir: Path, conf: Path) -> None:
    """srun that finds this cluster's slurm.conf.

    The job step (snakemake-executor-plugin-slurm-jobstep) calls srun with every SLURM_*
    variable but the job's identity removed, SLURM_CONF included, so a node must find its
    slurm.conf where Slurm looks by default (/etc/slurm).  A private cluster must not touch
    /etc/slurm: the srun on the jobs' PATH (sbatch --export=ALL keeps PATH) names it instead.
    """
    bin_dir.mkdir()
    srun = bin_dir / "srun"
    srun.write_text(f"#!/bin/sh\nSLURM_CONF={conf} exec {shutil.which('srun')} \"$@\"\n")
    srun.chmod(srun.stat().st_mode | stat.S_IEXEC | stat.S_IXGRP | stat.S_IXOTH)


def _processes_with(needle: bytes, exclude: set[int], command: str = "") -> list[str]:
    """'pid cmdline' of every process whose environment contains *needle* (and whose command line
    starts with *command*)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in exclude | {os.getpid()}:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if cmdline.startswith(command) and needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(f"{entry.name} {cmdline}")
        except OSError:
            continue
    return found


def leftovers(cluster: Cluster, marker: str) -> list[str]:
    """Job processes still alive: anything the run started, and any slurmstepd of this cluster
    (started by its slurmd, whose environment names the cluster's slurm.conf)."""
    ours = _processes_with(f"{MARKER}={marker}".encode(), cluster.daemon_pids())
    steps = _processes_with(f"SLURM_CONF={cluster.conf}".encode(), cluster.daemon_pids(), command="slurmstepd")
    return sorted(set(ours) | set(steps))


def active_jobs(cluster: Cluster) -> list[str]:
    return cluster.run("squeue", "-h", "-t", "PENDING,RUNNING,SUSPENDED,COMPLETING,CONFIGURING",
                       "-o", "%i %j %T").stdout.split("\n")[:-1]


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def slurm_cluster():
    missing = [d for d in DAEMONS if shutil.which(d) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (envs/debian-packages.txt: slurmctld slurmd munge)")
    if os.geteuid() != 0:
        pytest.skip("the private Slurm cluster runs its daemons as root (SlurmUser=root)")
    # Not under pytest's tmp: munged wants every directory above its socket searchable by all.
    top = Path(tempfile.mkdtemp(prefix="guestio-slurm-"))
    top.chmod(0o755)
    state = top / "cluster"
    # A SIGTERM (CI's timeout, a user's kill) would end pytest without its teardown and leave the
    # daemons running: made an interrupt, it unwinds through the stop below like Ctrl-C does.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    started = subprocess.run([str(CLUSTER_SH), "start", str(state)], capture_output=True, text=True, timeout=120)
    try:
        if started.returncode != 0:
            pytest.fail(f"the private Slurm cluster did not start:\n{started.stdout}{started.stderr}")
        conf = state / "slurm.conf"
        _srun_wrapper(top / "bin", conf)
        cpus, memory_mb = _node_facts(conf)
        cluster = Cluster(dir=state, conf=conf, bin_dir=top / "bin", cpus=cpus, memory_mb=memory_mb)
        yield cluster
    finally:
        pids = {int(p.read_text()) for p in state.glob("*.pid") if p.read_text().strip()}
        stopped = subprocess.run([str(CLUSTER_SH), "stop", str(state)], capture_output=True, text=True, timeout=120)
        alive = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
        shutil.rmtree(top, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous)
        assert stopped.returncode == 0 and not alive, \
            f"the private Slurm cluster did not stop (still alive: {alive}):\n{stopped.stdout}{stopped.stderr}"


@contextlib.contextmanager
def heavy_lock():
    with HEAVY_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def fitted_profile(cluster: Cluster, dest: Path, logdir: Path) -> dict:
    """profiles/slurm with cores and each rule's cores and memory cut to this node, polled fast.

    Everything else (executor, status command, time limits, --exclusive, the vm resource) is
    the profile's own.  A profile given on the command line replaces set-resources as a whole,
    so the fitted copy is written as a profile of its own.
    """
    profile = yaml.safe_load(PROFILE.read_text())
    profile["cores"] = cluster.cpus
    profile["jobs"] = 1
    for resources in [profile["default-resources"], *profile["set-resources"].values()]:
        resources["cpus_per_task"] = min(resources["cpus_per_task"], cluster.cpus)
        resources["mem_mb"] = min(resources["mem_mb"], cluster.memory_mb)
    profile.update({"slurm-init-seconds-before-status-checks": 2, "seconds-between-status-checks": 2,
                    "latency-wait": 5, "slurm-keep-successful-logs": True, "slurm-logdir": str(logdir),
                    "slurm-no-account": True})
    dest.mkdir(parents=True)
    (dest / "config.yaml").write_text(yaml.safe_dump(profile))
    return profile


def place_guest(results: Path, kernel: Path, initrd: Path) -> None:
    """The kernel and initramfs the tests built, where the probe boot reads them (not rebuilt here)."""
    for src, rel in ((kernel, "kernels/baseline/bzImage"), (initrd, "image/initramfs.cpio")):
        (results / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, results / rel)


def submitted_jobs(output: str, logdir: Path) -> dict[str, tuple[str, Path]]:
    """{rule: (Slurm job id, its log)} from Snakemake's 'submitted with SLURM jobid N (log: PATH)'."""
    jobs = {}
    for m in re.finditer(r"submitted with SLURM jobid (\d+) \(log: (\S+)\)", output):
        log = Path(m.group(2))
        jobs[log.relative_to(logdir).parts[0].removeprefix("rule_")] = (m.group(1), log)
    return jobs


def recorded(cluster: Cluster, job_id: str) -> dict[str, str]:
    """scontrol's record of a job (kept MinJobAge seconds after it ended, no database needed)."""
    out = cluster.run("scontrol", "show", "job", "-o", job_id).stdout
    return dict(field.split("=", 1) for field in out.split() if "=" in field)


def test_profile_runs_a_vm_job_and_builds_on_a_cluster_without_accounting(slurm_cluster, guest_kernel, guest_initrd,
                                                                          tmp_path):
    cluster = slurm_cluster
    # The premise: no accounting database, so sacct cannot see any job here.
    assert cluster.run("sacct", "-X", "-n").returncode != 0
    logdir = tmp_path / "slurm-logs"
    profile = fitted_profile(cluster, tmp_path / "profile", logdir)
    rel = f"build/test-slurm-cluster/{uuid.uuid4().hex[:8]}"
    results = REPO / rel
    place_guest(results, guest_kernel, guest_initrd)
    config = tmp_path / "config.yaml"
    # The host's QEMU (no QEMU build); the variants that patch it have no layers then.
    config.write_text(yaml.safe_dump({"results_dir": rel, "qemu": {
        "binary": "host", "variants": {"coalesce": [], "pit-scale": []}}}))
    targets = [f"{rel}/host/accelerator.json", f"{rel}/disks/data-{DATA_DISK_MIB}M.img"]
    marker = uuid.uuid4().hex
    try:
        with heavy_lock():
            try:
                proc = subprocess.run(
                    [str(SNAKEMAKE), "--workflow-profile", str(tmp_path / "profile"), *targets,
                     "--allowed-rules", "accelerator", "data_disk", "qemu", "--configfile", str(config)],
                    cwd=REPO, env=cluster.env(**{MARKER: marker}), capture_output=True, text=True,
                    timeout=RUN_TIMEOUT_S)
            except subprocess.TimeoutExpired as timed_out:
                pytest.fail(f"Snakemake was still waiting after {RUN_TIMEOUT_S} s (queue: {active_jobs(cluster)}): "
                            f"does the profile's slurm-status-command see jobs end without accounting?\n"
                            f"{(timed_out.stderr or b'').decode()[-4000:]}")
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-6000:]

        probe = json.loads((results / "host" / "accelerator.json").read_text())
        assert probe["accelerator"] in ("kvm", "tcg"), probe
        assert (results / "disks" / f"data-{DATA_DISK_MIB}M.img").stat().st_size == DATA_DISK_MIB << 20

        jobs = submitted_jobs(out, logdir)
        assert sorted(jobs) == ["accelerator", "data_disk", "qemu"], out[-6000:]
        for rule, (job_id, _) in jobs.items():
            want = profile["set-resources"][rule]
            job = recorded(cluster, job_id)
            assert job.get("JobState") == "COMPLETED", (rule, job)
            assert job["Comment"].startswith(f"rule_{rule}"), job
            assert job["TimeLimit"] == time.strftime("%H:%M:00", time.gmtime(want["runtime"] * 60)), (rule, job)
            assert int(job["CPUs/Task"]) == want["cpus_per_task"], (rule, job)
            assert job["MinMemoryNode"] == f"{want['mem_mb']}M", (rule, job)
        # The VM job had the node to itself: --exclusive, every core allocated to it.
        vm_job = recorded(cluster, jobs["accelerator"][0])
        assert vm_job["OverSubscribe"] == "NO" and int(vm_job["NumCPUs"]) == cluster.cpus, vm_job
        assert recorded(cluster, jobs["data_disk"][0])["OverSubscribe"] != "NO"
        # The probe boot ran inside its job, on the node: its output is in the job's log.
        assert f"accelerator: {probe['accelerator']}" in jobs["accelerator"][1].read_text()

        assert active_jobs(cluster) == []
        deadline = time.monotonic() + 15
        while (left := leftovers(cluster, marker)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert left == [], f"processes of the run still alive: {left}"
    finally:
        shutil.rmtree(results, ignore_errors=True)
