"""Shared test fixtures, the test results directory, and the test tiers.

No test writes into the user's results/: the pipeline's products that tests
need (guest kernels, the image) are built by Snakemake into TEST_RESULTS
(build/test-results, ``--config results_dir=...``), and every other test uses
its own directory (tmp_path, or a results dir of its own under build/).

Boot tests need a guest kernel and an initramfs following the guestio guest
contract.  By default they are the pipeline's own products, built (or found
up to date) by Snakemake into TEST_RESULTS at the start of the session, so a
broken build fails the tests instead of skipping them.  GUESTIO_TEST_KERNEL
and GUESTIO_TEST_INITRD point the tests at other files; GUESTIO_TEST_APPEND
overrides the kernel command line.

Tiers (pyproject.toml): ``pytest -m "not boot"`` is the fast tier: no root, no
network, no kernel build, no QEMU, a few minutes.  A test is in the slow tier
(``boot``) when it is marked so, or when it uses a fixture that builds or
downloads what the fast tier must not (:data:`SLOW_FIXTURES`): such tests are
marked here, so that a new test cannot slip a kernel build into the fast tier.
Plain ``pytest`` (CI) runs both.
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
# Relative to REPO, the way Snakemake names outputs: the same spelling keeps its metadata valid.
TEST_RESULTS_REL = "build/test-results"
TEST_RESULTS = REPO / TEST_RESULTS_REL
BASELINE_KERNEL = TEST_RESULTS / "kernels" / "baseline" / "bzImage"
IMAGE = TEST_RESULTS / "image" / "initramfs.cpio"

#: Fixtures that build a kernel or the image, boot QEMU, fetch sources or download .debs.
SLOW_FIXTURES = {"pipeline_artifacts", "guest_kernel", "guest_initrd", "deb_cache", "plugin_so",
                 "pristine", "tree"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) and item.get_closest_marker("boot") is None:
            item.add_marker(pytest.mark.boot)


def snakemake(*args: str, cwd: Path = REPO, check: bool = True,
              results: str | None = TEST_RESULTS_REL) -> subprocess.CompletedProcess:
    """Run this checkout's Snakemake; output is kept for the assertion message.

    Outputs go to *results* (default: the tests' results directory; None: the
    config's own results_dir, for dry runs only).  Targets must come before
    any option that takes several values (--configfile).
    """
    extra = ["--config", f"results_dir={results}"] if results is not None else []
    return subprocess.run([str(SNAKEMAKE), "--cores", "all", *args, *extra], cwd=cwd, capture_output=True,
                          text=True, check=check)


def build_or_fail(what: str, *targets: str, results: str = TEST_RESULTS_REL) -> None:
    """Build pipeline targets (quick when up to date); fail the test naming *what* if that fails."""
    done = snakemake(*targets, check=False, results=results)
    if done.returncode != 0:
        pytest.fail(f"building {what} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def qemu_trace_event(op: str, addr: int, size: int, name: str, cpu: int = 0, value: int = 0) -> str:
    """One memory_region_ops_{read,write} line of QEMU's trace, as the exit cross-check parses it."""
    return (f"memory_region_ops_{op} cpu {cpu} mr 0x55d0c0ffee00 addr 0x{addr:x} "
            f"value 0x{value:x} size {size} name '{name}'")


def results_path(*parts: str) -> str:
    """A path under the tests' results directory, spelt relative to REPO (a Snakemake target)."""
    return "/".join([TEST_RESULTS_REL, *parts])


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
    build_or_fail("the guest kernel and image", *(str(t.relative_to(REPO)) for t in (BASELINE_KERNEL, IMAGE)))
    return {"kernel": BASELINE_KERNEL, "initrd": IMAGE}


#: The exit plugin as the pipeline's exit_plugin rule builds it, with its decoder test program and
#: the qemu-plugin.h it was compiled against (include/) beside it.
PLUGIN_BUILD = TEST_RESULTS / "exits" / "plugin"


@pytest.fixture(scope="session")
def plugin_so() -> Path:
    """The pipeline's exit plugin (quick when up to date)."""
    build_or_fail("the exit plugin", results_path("exits", "plugin", "libexitcount.so"))
    return PLUGIN_BUILD / "libexitcount.so"


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
