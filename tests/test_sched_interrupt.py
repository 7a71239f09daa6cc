"""An interrupted host-scheduler run through the real CLI leaves no loop device (§3.2.2).

Slow tier (``boot``: root, a TCG boot).  Snakemake runs one disk_vm job whose data disk is a
loop device with host scheduler bfq (or, on a host whose kernel offers none, the scheduler that
stands in for it: diskmods.sched.host_fallback); once the device is there and QEMU runs on it, the whole
process group gets SIGINT (Ctrl-C).  Afterwards no loop device of the pipeline, no backing
file and no QEMU on it is left, and the next invocation plans the job again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO, SNAKEMAKE, TEST_RESULTS_REL, job_counts, results_path, snakemake
from guestio import hostprobe, paths
from guestio.workloads import hostdisk

pytestmark = pytest.mark.boot

# The default config's diskmods.sched.host ([bfq]) as it runs here: the DAG names the scheduler
# used in the run's path.
_HOSTS, _, _ = hostprobe.resolve_host_schedulers(["bfq"], "mq-deadline", hostprobe.loop_schedulers())
RUN = paths.run_dir("disk_vm", variant="baseline", qemu="stock", disk="ide", gsched="none",
                    hsched=_HOSTS[0] if _HOSTS else "bfq", rep=0)


def _qemu_on(path: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "qemu-system" in cmd and path in cmd:
                pids.append(int(entry.name))
    return pids


def test_sigint_during_a_loop_device_run_leaves_nothing(pipeline_artifacts):
    if os.geteuid() != 0:
        pytest.skip("loop devices need root")
    target = results_path(RUN, "measurements.csv")
    run_dir = str(REPO / TEST_RESULTS_REL / RUN)
    # what the run stands on, outside the interrupted invocation
    done = snakemake(results_path("host", "accelerator.json"), results_path("disks", "data-3072M.img"),
                     results_path("qemu", "stock", "build.json"), results_path("host", "host.json"), check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    proc = subprocess.Popen([str(SNAKEMAKE), "--cores", "all", target, "--config", f"results_dir={TEST_RESULTS_REL}"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        device = None
        while time.monotonic() < deadline and proc.poll() is None:
            mine = [d for d, b in hostdisk.guestio_loop_devices() if b.startswith(run_dir)]
            if mine and _qemu_on(mine[0]):
                device = mine[0]
                break
            time.sleep(0.2)
        assert device is not None, f"no QEMU on a loop device appeared:\n{proc.stdout.read()[-3000:] if proc.poll() is not None else ''}"
        time.sleep(3)                                  # QEMU booting on it
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and [d for d, b in hostdisk.guestio_loop_devices() if b.startswith(run_dir)]:
        time.sleep(0.2)
    assert [d for d, b in hostdisk.guestio_loop_devices() if b.startswith(run_dir)] == [], out[-3000:]
    assert _qemu_on(device) == [] and _qemu_on(run_dir) == []
    assert list(Path(run_dir).glob(f"{hostdisk.BACKING_PREFIX}*")) == []
    plan = snakemake("-n", target, check=False)
    assert job_counts(plan.stdout).get("disk_vm") == 1, plan.stdout[-2000:]
