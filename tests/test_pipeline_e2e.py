"""The whole chain through the real CLI: kernels, image, VM runs, Fig 1, Fig 2, Fig 6, Table 3.

Uses the default config with two repetitions, writing to build/e2e-results, so
the user's results/ is untouched.  Covers: Ctrl-C in the middle of a VM run
leaves no QEMU behind and the next invocation finishes the work; a second
invocation does nothing; editing plotting code reruns only plotting; figures
are byte-identical when redrawn.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from guestio.util import sha256_file

from conftest import REPO, SNAKEMAKE, job_counts

PROFILE = REPO / "tests" / "data" / "e2e.yaml"
RESULTS = REPO / "build" / "e2e-results"
TARGETS = ["fig1", "fig2", "fig6", "table3"]
FIGURES = [RESULTS / "figures" / f"{fig}.{ext}" for fig in ("fig1", "fig2", "fig6") for ext in ("pdf", "png")]

pytestmark = pytest.mark.boot


def cli(*args: str) -> list[str]:
    # Targets first: --configfile takes several values.
    return [str(SNAKEMAKE), *args, "--cores", "all", "--configfile", str(PROFILE)]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(cli(*args), cwd=REPO, capture_output=True, text=True)


def qemu_processes(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "qemu-system" in cmdline and marker in cmdline:
                found.append(int(entry.name))
    return found



@pytest.fixture(scope="module")
def interrupted_then_completed():
    """Ctrl-C during the first VM run, then a second invocation that completes everything."""
    shutil.rmtree(RESULTS, ignore_errors=True)
    marker = str(RESULTS / "runs" / "disk" / "vm")
    # Its own process group, signalled as a whole: what a terminal's Ctrl-C does.
    first = subprocess.Popen(cli(*TARGETS), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 1200
    while not qemu_processes(marker):
        assert first.poll() is None, f"snakemake ended before any VM run:\n{first.stdout.read()[-4000:]}"
        assert time.monotonic() < deadline, "no VM run started within 20 minutes"
        time.sleep(0.2)
    time.sleep(2)
    os.killpg(first.pid, signal.SIGINT)
    output, _ = first.communicate(timeout=120)
    left = qemu_processes(marker)
    copies = list((RESULTS / "runs").rglob("data-disk.img"))
    second = run(*TARGETS)
    return {"first_rc": first.returncode, "first_out": output, "left": left, "copies": copies, "second": second}


def test_ctrl_c_leaves_no_qemu_and_next_run_completes(interrupted_then_completed):
    r = interrupted_then_completed
    assert r["first_rc"] != 0
    assert r["left"] == [], "QEMU processes survived Ctrl-C"
    assert r["copies"] == [], "data disk copies left behind"
    assert r["second"].returncode == 0, r["second"].stdout[-4000:] + r["second"].stderr[-4000:]
    for path in FIGURES:
        assert path.is_file() and path.stat().st_size > 0


def test_second_invocation_does_nothing(interrupted_then_completed):
    again = run(*TARGETS)
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr


def test_table_is_long_form_and_traceable(interrupted_then_completed):
    table = pd.read_csv(RESULTS / "tables" / "disk.csv")
    vm = table[table.target == "vm"]
    assert set(vm.accelerator) == {"tcg"}
    assert set(vm.variant) == {"baseline"}
    assert set(vm.clocksource) == {"acpi_pm"}
    assert sorted(table.repetition.unique()) == [0, 1]
    assert set(table[table.target == "native"].disk) == {"host-fs"}
    per_run = table.groupby(["target", "variant", "disk", "repetition"]).metric.nunique()
    assert (per_run >= 6).all()
    provenance = json.loads((RESULTS / "tables" / "disk.provenance.json").read_text())
    assert provenance["accelerator"]["accelerator"] == "tcg"
    assert provenance["kernels"]["baseline"]["patches"] == [] and provenance["kernels"]["baseline"]["arch"] == "x86_64"
    # Fig 6's two sides: 32-bit kernels, the paper's one change between them
    boot = json.loads((RESULTS / "tables" / "boot.provenance.json").read_text())
    assert {v: k["arch"] for v, k in boot["kernels"].items()} == {"baseline-i386": "i386", "pmtmr-i386": "i386"}
    patches = boot["kernels"]["pmtmr-i386"]["patches"]
    assert [Path(p["file"]).name for p in patches] == ["0001-acpi_pm-drop-verify_pmtmr_rate-in-a-VM.patch"]
    assert provenance["qemu"]["version"].startswith("7.2") and provenance["qemu"]["variant"] == "stock"
    assert len(provenance["runs"]) == 2 + 2
    vm_runs = [(REPO / run).with_name("provenance.json") for run in provenance["runs"] if "/native/" not in run]
    assert len(vm_runs) == 2
    for run in vm_runs:  # the job and the library it sourced, each by hash
        job = json.loads(run.read_text())["job"]
        assert job["sha256"] == sha256_file(REPO / "workflow" / "jobs" / "bonnie.sh")
        assert job["lib"]["sha256"] == sha256_file(REPO / "workflow" / "jobs" / "lib.sh")


def test_plotting_code_change_reruns_only_plotting(interrupted_then_completed):
    # Snakemake compares checksums as well as times, so the edit must be real.
    figures_py = REPO / "workflow" / "guestio" / "analysis" / "figures.py"
    original, stat = figures_py.read_bytes(), figures_py.stat()
    try:
        figures_py.write_bytes(original + b"\n# an edit to plotting code\n")
        planned = run("-n", *TARGETS)
    finally:
        figures_py.write_bytes(original)
        os.utime(figures_py, (stat.st_atime, stat.st_mtime))
    assert job_counts(planned.stdout) == {"figure": 3, "fig1": 1, "fig2": 1, "fig6": 1, "total": 6}


def test_redrawn_figures_are_byte_identical(interrupted_then_completed):
    before = {p: sha256_file(p) for p in FIGURES}
    for path in FIGURES:
        path.unlink()
    redo = run(*TARGETS)
    assert redo.returncode == 0, redo.stderr[-3000:]
    assert {p: sha256_file(p) for p in FIGURES} == before


def test_table3_shows_the_pm_timer_verification_vanish(interrupted_then_completed):
    text = (RESULTS / "tables" / "table3.md").read_text()
    assert "modelled exits (TCG)" in text and "Handling" not in text
    for site in ("acpi_pm_read", "iowrite8", "ioread8"):
        assert site in text
    # With frame pointers (no sibling calls) ata_bmdma_status's tail call to ioread8 is a call: its caller
    sites = pd.read_csv(RESULTS / "exits" / "bonnie" / "baseline" / "stock" / "rep0" / "exits.csv", keep_default_na=False)
    bench = sites[sites.phase == "benchmark"]
    assert ((bench.function == "ioread8") & (bench.caller == "ata_bmdma_status")).any()
    assert ((bench.function == "iowrite32") & (bench.caller == "ata_bmdma_setup")).any()
    assert "## The paper's ranking" in text
    # The 32-bit boot: init_acpi_pm_clocksource's own exits (verify_pmtmr_rate's PIT polling, inlined)
    # are there on the baseline and gone without it; the monotonicity checks' reads stay on both.
    setup = text[text.index("### The PM timer's set-up at boot"):]
    own = [line for line in setup.splitlines() if line.startswith("| init_acpi_pm_clocksource |")]
    assert own, setup
    baseline, pmtmr = (int(cell) for cell in own[0].strip("|").split("|")[2:4])
    assert baseline > 100 and pmtmr == 0
    reads = [line for line in setup.splitlines() if line.startswith("| acpi_pm_read | init_acpi_pm_clocksource |")]
    [row] = reads
    # the ten monotonicity checks read the timer at least twice each (until it moves), on both
    assert all(int(cell) >= 20 for cell in row.strip("|").split("|")[2:4])
    check = (RESULTS / "exits" / "bonnie" / "baseline" / "stock" / "rep0" / "crosscheck.txt").read_text()
    assert check.startswith("cross-check OK")
    summary = json.loads((RESULTS / "exits" / "bonnie" / "baseline" / "stock" / "rep0" / "summary.json").read_text())
    assert summary["written_mib"] > 0 and summary["exits_per_mib_written"] > 0
    boot = pd.read_csv(RESULTS / "tables" / "boot.csv")
    setup_exits = boot[boot.metric == "pm_timer_setup_exits"].groupby("variant").value.min()
    assert setup_exits["pmtmr-i386"] < 0.5 * setup_exits["baseline-i386"]
