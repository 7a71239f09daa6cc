"""Shared test fixtures.

Boot tests need a guest kernel and an initramfs following the guestio guest
contract.  By default they are the pipeline's own products, built (or found
up to date) by Snakemake at the start of the session, so a broken build fails
the tests instead of skipping them.  GUESTIO_TEST_KERNEL and
GUESTIO_TEST_INITRD point the tests at other files;
GUESTIO_TEST_APPEND overrides the kernel command line.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
BASELINE_KERNEL = REPO / "results" / "kernels" / "baseline" / "bzImage"
IMAGE = REPO / "results" / "image" / "initramfs.cpio"


def snakemake(*args: str, cwd: Path = REPO, check: bool = True) -> subprocess.CompletedProcess:
    """Run this checkout's Snakemake; output is kept for the assertion message."""
    return subprocess.run([str(SNAKEMAKE), "--cores", "all", *args], cwd=cwd, capture_output=True,
                          text=True, check=check)


def job_counts(dry_run_output: str) -> dict[str, int]:
    """The 'Job stats' table of a Snakemake dry run, as {rule: count} with 'total'."""
    counts = {}
    for line in dry_run_output.splitlines():
        if m := re.match(r"^(\w+)\s+(\d+)$", line.strip()):
            counts[m.group(1)] = int(m.group(2))
    return counts


@pytest.fixture(scope="session")
def pipeline_artifacts() -> dict[str, Path]:
    """The baseline kernel and the image, built by the pipeline (quick when up to date)."""
    targets = [BASELINE_KERNEL, IMAGE]
    result = snakemake(*(str(t.relative_to(REPO)) for t in targets), check=False)
    if result.returncode != 0:
        pytest.fail(f"building the guest kernel and image failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return {"kernel": BASELINE_KERNEL, "initrd": IMAGE}


def _artifact(var: str, key: str, request) -> Path:
    value = os.environ.get(var)
    if value:
        path = Path(value)
        if not path.is_file():
            pytest.fail(f"{var}={value} does not exist")
        return path
    return request.getfixturevalue("pipeline_artifacts")[key]


@pytest.fixture(scope="session")
def guest_kernel(request) -> Path:
    return _artifact("GUESTIO_TEST_KERNEL", "kernel", request)


@pytest.fixture(scope="session")
def guest_initrd(request) -> Path:
    return _artifact("GUESTIO_TEST_INITRD", "initrd", request)


@pytest.fixture(scope="session")
def guest_append() -> str:
    return os.environ.get("GUESTIO_TEST_APPEND", "console=ttyS0 panic=-1 nokaslr rootfstype=ramfs")
