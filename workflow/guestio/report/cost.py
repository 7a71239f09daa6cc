"""What an artifact cost: the wall time of the jobs that made it and the disk their outputs use.

Read from Snakemake's own records (``.snakemake/metadata`` of the working directory: one
record per output file with the rule, its inputs, and the job's start and end time), so every
rule counts, not only the VM runs, and nothing has to be timed twice.  The closure of an
artifact is every job reachable from its files through the recorded inputs.  Jobs are split in
two: *runs* (the experiment: benchmarks, exit tracing, tables, figures) and *builds* (kernels,
QEMU, the image, the data disk, host facts, the plugin), which are shared by many artifacts.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

#: Output locations (under the results dir) of the shared build steps; everything else is a run.
BUILD_PARTS = ("kernels", "qemu", "image", "disks", "host")


def _decode(rel: str) -> str | None:
    # Snakemake stores each record under urlsafe_b64encode(path); names longer than 255
    # characters are split into directories of 255.
    try:
        return base64.urlsafe_b64decode(rel.replace(os.sep, "")).decode()
    except (ValueError, UnicodeDecodeError):
        return None


def load_records(workdir: str | os.PathLike = ".") -> dict[str, dict]:
    """{output path as Snakemake recorded it: record} of the working directory's metadata."""
    root = Path(workdir) / ".snakemake" / "metadata"
    records: dict[str, dict] = {}
    if not root.is_dir():
        return records
    for dirpath, _, files in os.walk(root):
        for name in files:
            full = Path(dirpath) / name
            path = _decode(str(full.relative_to(root)))
            if path is None:
                continue
            try:
                records[path] = json.loads(full.read_text())
            except (OSError, ValueError):
                continue
    return records


@dataclass
class Cost:
    run_s: float = 0.0
    build_s: float = 0.0
    run_bytes: int = 0
    build_bytes: int = 0
    jobs: int = 0
    files: list[str] = field(default_factory=list)

    @property
    def known(self) -> bool:
        return self.jobs > 0

    def text(self) -> str:
        if not self.known:
            return "not recorded"
        return (f"runs {_duration(self.run_s)}, {_size(self.run_bytes)}; "
                f"builds (shared) {_duration(self.build_s)}, {_size(self.build_bytes)}")


def _duration(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def _size(b: int) -> str:
    mib = b / (1 << 20)
    return f"{mib:.1f} MiB" if mib < 1024 else f"{mib / 1024:.2f} GiB"


def disk_usage(path: str | os.PathLike) -> int:
    """Bytes a file takes on disk (allocated blocks: a sparse data disk counts what it uses)."""
    try:
        st = os.stat(path)
    except OSError:
        return 0
    return st.st_blocks * 512


def is_build(path: str, results: str) -> bool:
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(results))
    if rel.startswith(".."):
        return True   # outside the results dir: build/ trees
    return rel.split(os.sep, 1)[0] in BUILD_PARTS


def closure_cost(files: Iterable[str], records: dict[str, dict], results: str) -> Cost:
    """Cost of every recorded job reachable from ``files`` through recorded inputs."""
    cost = Cost()
    seen_files: set[str] = set()
    # One job, one key: Snakemake records every output of a job with the job's end time but its
    # own start time (microseconds apart), so the start cannot tell jobs apart.
    jobs: dict[tuple, list[str]] = {}
    started: dict[tuple, float] = {}
    stack = [str(f) for f in files]
    by_abs = {os.path.abspath(p): p for p in records}
    while stack:
        f = stack.pop()
        key = by_abs.get(os.path.abspath(f))
        if key is None or key in seen_files:
            continue
        seen_files.add(key)
        rec = records[key]
        job = (rec.get("rule"), rec.get("job_hash"), rec.get("endtime"))
        jobs.setdefault(job, []).append(key)
        if rec.get("starttime") is not None:
            started[job] = min(started.get(job, float("inf")), float(rec["starttime"]))
        stack.extend(rec.get("input") or [])
    for job, outputs in sorted(jobs.items(), key=lambda kv: str(kv[0])):
        start, end = started.get(job), job[2]
        if start is None or end is None:
            continue
        cost.jobs += 1
        build = all(is_build(o, results) for o in outputs)
        seconds = max(0.0, float(end) - float(start))
        size = sum(disk_usage(o) for o in outputs)
        if build:
            cost.build_s += seconds
            cost.build_bytes += size
        else:
            cost.run_s += seconds
            cost.run_bytes += size
        cost.files.extend(outputs)
    return cost
