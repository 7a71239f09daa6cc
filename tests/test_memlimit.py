"""The native benchmark's memory cgroup: the page cache really is capped, and nothing is left.

Slow tier (``boot``): making a cgroup needs root.  Quick all the same.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from guestio.workloads import memlimit
from guestio.workloads.memlimit import memory_limited

pytestmark = [pytest.mark.boot,
              pytest.mark.skipif(os.geteuid() != 0, reason="making a memory cgroup needs root")]

# Writes and rereads a 192 MiB file, then prints the cgroup's peak memory use.
CHILD = r"""
import os, sys
from pathlib import Path
path = Path(sys.argv[1])
block = os.urandom(1 << 20)
with open(path, "wb") as f:
    for _ in range(192):
        f.write(block)
with open(path, "rb") as f:
    while f.read(1 << 20):
        pass
group = [l.split(":", 2) for l in Path("/proc/self/cgroup").read_text().splitlines()]
print(" ".join(p for h, c, p in group if h == "0" or "memory" in c.split(",")))
"""


def cgroup_dirs(name: str) -> list[Path]:
    """Cgroups named <name>-* (or <name> itself), in whichever hierarchy holds them."""
    return [p for p in Path("/sys/fs/cgroup").rglob(f"{name}*") if p.is_dir()
            and (p.name == name or p.name.startswith(name + "-"))]


def test_child_runs_in_a_capped_cgroup_that_is_removed(tmp_path):
    name = "guestio-test"
    with memory_limited(64, name=name) as enter:
        [group] = cgroup_dirs(name)
        limit_file = group / ("memory.max" if (group / "memory.max").exists() else "memory.limit_in_bytes")
        assert int(limit_file.read_text()) == 64 * 1024 * 1024
        out = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "f")], preexec_fn=enter,
                             capture_output=True, text=True, check=True)
        assert f"{name}-" in out.stdout
        peak_file = group / ("memory.peak" if (group / "memory.peak").exists() else "memory.max_usage_in_bytes")
        if peak_file.exists():
            assert int(peak_file.read_text()) <= 64 * 1024 * 1024
    assert cgroup_dirs(name) == []


def test_abandoned_cgroup_is_emptied_and_removed(tmp_path):
    """A cgroup left by a process killed outright (and a benchmark still in it) goes on the next run."""
    name = "guestio-test-abandoned"
    owner = subprocess.Popen([sys.executable, "-c", f"""
import subprocess, sys, time
from guestio.workloads.memlimit import memory_limited
with memory_limited(64, name={name!r}) as enter:
    child = subprocess.Popen(["sleep", "1000"], preexec_fn=enter, start_new_session=True)
    print(child.pid, flush=True)
    time.sleep(1000)
"""], stdout=subprocess.PIPE, text=True)
    orphan = int(owner.stdout.readline())
    try:
        [group] = cgroup_dirs(name)
        owner.kill()  # SIGKILL: its finally never runs
        owner.wait()
        assert group.is_dir() and str(orphan) in (group / "cgroup.procs").read_text()
        with memory_limited(64, name=name):
            assert not group.exists()  # swept on the way in: the orphan killed, the cgroup removed
        assert cgroup_dirs(name) == []
        time.sleep(0.2)
        assert not Path(f"/proc/{orphan}").exists() or \
            Path(f"/proc/{orphan}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX"
    finally:
        if owner.poll() is None:
            owner.kill()
        try:
            os.kill(orphan, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.skipif(shutil.which("bonnie++") is None, reason="bonnie++ not installed")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_native_run_leaves_no_bonnie_cgroup_or_directory(tmp_path, signum):
    """SIGTERM/SIGINT to a native run (as in disk_native.py): bonnie++, its cgroup and run directory go."""
    native = tmp_path / "native"
    native.mkdir()
    (native / "user-file").write_text("mine\n")
    job = subprocess.Popen([sys.executable, "-c", f"""
import sys
from guestio import lifetime
lifetime.die_with_snakemake()
from guestio.workloads.bonnie_native import run_native
run_native({str(native)!r}, 4096, 32, {str(tmp_path / "out")!r}, memory_limit_mib=64, log=print)
"""], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not list(native.glob("guestio-run-*/Bonnie.*")):
            assert job.poll() is None, job.stdout.read()
            assert time.monotonic() < deadline, "bonnie++ did not start writing"
            time.sleep(0.1)
        [group] = cgroup_dirs(memlimit.GROUP_PREFIX + f"-{job.pid}") or [None]
        bonnies = [int(p) for p in (group / "cgroup.procs").read_text().split()] if group else []
        assert bonnies, "bonnie++ is not in its cgroup"
        job.send_signal(signum)
        out, _ = job.communicate(timeout=60)
        assert job.returncode == 128 + signum, out
        assert os.listdir(native) == ["user-file"], out
        assert not any(Path(f"/proc/{p}").exists() for p in bonnies), out
        assert not group.exists(), out
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
