"""The native benchmark's memory cgroup: the page cache really is capped, and nothing is left."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from guestio.workloads.memlimit import memory_limited

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
    return [p for p in Path("/sys/fs/cgroup").rglob(f"{name}-*") if p.is_dir()]


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
