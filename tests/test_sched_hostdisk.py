"""The host's I/O scheduler under a guest's disk (§3.2.2): guestio.workloads.hostdisk.

Slow tier (``boot``: root, loop devices).  A loop device made for a run holds a copy of the
image with the scheduler asked for, read back from sysfs; it is detached and its backing file
removed after the run, also when the run fails, is interrupted (SIGINT, SIGTERM through
guestio.lifetime) or killed outright (SIGKILL: the kernel detaches it once nothing holds it
open, and the next run sweeps the backing file away).  No test leaves a loop device behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from guestio import hostprobe
from guestio.workloads import hostdisk

pytestmark = pytest.mark.boot

REPO = Path(__file__).resolve().parents[1]

# What this host's kernel offers a loop device; the tests run on those (bfq where it is offered).
OFFERED = hostprobe.loop_schedulers() or ()
# A scheduler to set that is not a fresh loop device's own default (none), so setting it shows.
SET = next((s for s in ("bfq", "mq-deadline", "kyber") if s in OFFERED), "mq-deadline")


def _offered_or_skip(scheduler: str) -> None:
    if scheduler not in OFFERED:
        why = "host kernel offers no bfq" if scheduler == "bfq" else f"host kernel offers no {scheduler}"
        pytest.skip(f"{why}: a loop device offers {', '.join(OFFERED) or 'nothing'} "
                    "(diskmods.sched.host_fallback stands in for it in the pipeline)")


@pytest.fixture
def image(tmp_path) -> Path:
    if os.geteuid() != 0:
        pytest.skip("loop devices need root")
    path = tmp_path / "data.img"
    with open(path, "wb") as f:
        f.write(b"guestio" * 1000)
        f.truncate(32 << 20)
    yield path
    # Whatever happened, none of this test's loop devices may be left.
    left = [d for d in hostdisk.guestio_loop_devices() if d[1].startswith(str(tmp_path))]
    assert left == [], f"loop devices left behind: {left}"


def _mine(tmp_path) -> list[tuple[str, str]]:
    return [d for d in hostdisk.guestio_loop_devices() if d[1].startswith(str(tmp_path))]


@pytest.mark.parametrize("scheduler", ["bfq", "mq-deadline", "none"])
def test_loop_device_has_the_scheduler_and_the_image_and_goes_away(image, tmp_path, scheduler):
    _offered_or_skip(scheduler)
    backing = tmp_path / "run" / f"{hostdisk.BACKING_PREFIX}data.img"
    with hostdisk.loop_disk(image, backing, scheduler) as disk:
        assert disk.scheduler == scheduler and scheduler in disk.schedulers
        sysfs = Path("/sys/block") / Path(disk.device).name
        assert f"[{scheduler}]" in (sysfs / "queue" / "scheduler").read_text()
        assert disk.direct_io and (sysfs / "loop" / "dio").read_text().strip() == "1"
        assert (sysfs / "loop" / "autoclear").read_text().strip() == "1"
        with open(disk.device, "rb") as dev:
            assert dev.read(7) == b"guestio"
        assert _mine(tmp_path) == [(disk.device, str(backing))]
    assert _mine(tmp_path) == []
    assert not backing.exists() and not Path(str(backing) + ".lock").exists()


def test_an_error_in_the_run_detaches_and_removes_everything(image, tmp_path):
    backing = tmp_path / f"{hostdisk.BACKING_PREFIX}x.img"
    with pytest.raises(RuntimeError, match="the VM failed"):
        with hostdisk.loop_disk(image, backing, SET):
            raise RuntimeError("the VM failed")
    assert _mine(tmp_path) == [] and not backing.exists()


def test_a_scheduler_the_host_does_not_offer_is_refused_naming_the_offered(image, tmp_path):
    backing = tmp_path / f"{hostdisk.BACKING_PREFIX}x.img"
    offered = r".*".join(OFFERED)
    with pytest.raises(hostdisk.HostDiskError, match=rf"'cfq' is not offered .* \(offered: {offered}\)"):
        with hostdisk.loop_disk(image, backing, "cfq"):
            pass
    assert _mine(tmp_path) == [] and not backing.exists()


def test_file_needs_no_loop_device(image, tmp_path):
    with hostdisk.host_disk("file", image, tmp_path) as disk:
        assert disk is None
    assert _mine(tmp_path) == []


# A run in a process of its own: loop device up, a child holding it open as QEMU would, then
# the signal.  The job script calls guestio.lifetime.die_with_snakemake() as every rule does.
RUN = textwrap.dedent("""\
    import subprocess, sys, time
    from guestio import lifetime
    from guestio.workloads import hostdisk
    lifetime.die_with_snakemake()
    with hostdisk.host_disk(sys.argv[3], sys.argv[1], sys.argv[2]) as disk:
        qemu = subprocess.Popen(["sh", "-c", f"exec 3<{disk.device}; echo up; sleep 600"], stdout=subprocess.PIPE)
        qemu.stdout.readline()
        print("ready", disk.device, flush=True)
        try:
            time.sleep(600)
        finally:
            qemu.terminate()
            qemu.wait()
""")


def _start_run(image: Path, outdir: Path) -> tuple[subprocess.Popen, str]:
    script = outdir.parent / "run.py"
    script.write_text(RUN)
    env = dict(os.environ, PYTHONPATH=str(REPO / "workflow"))
    proc = subprocess.Popen([sys.executable, str(script), str(image), str(outdir), SET], stdout=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)
    line = proc.stdout.readline().split()
    assert line[:1] == ["ready"], line
    return proc, line[1]


def _wait_gone(tmp_path, timeout_s: float = 15) -> list:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _mine(tmp_path):
        time.sleep(0.1)
    return _mine(tmp_path)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_leaves_no_loop_device(image, tmp_path, sig):
    outdir = tmp_path / "run"
    outdir.mkdir()
    proc, device = _start_run(image, outdir)
    assert _mine(tmp_path) and Path(device).exists()
    os.killpg(proc.pid, sig)
    proc.wait(timeout=60)
    assert _wait_gone(tmp_path) == []
    assert list(outdir.glob(f"{hostdisk.BACKING_PREFIX}*")) == []


def test_a_killed_run_is_cleaned_by_the_kernel_and_the_next_run(image, tmp_path):
    outdir = tmp_path / "run"
    outdir.mkdir()
    proc, device = _start_run(image, outdir)
    os.killpg(proc.pid, signal.SIGKILL)      # no finally: runs, the job and its "QEMU" die at once
    proc.wait(timeout=30)
    # autoclear: detached by the kernel once the last holder is gone
    assert _wait_gone(tmp_path) == []
    left = list(outdir.glob(f"{hostdisk.BACKING_PREFIX}*"))
    assert left, "SIGKILL left no backing file to sweep (nothing tested)"
    # the next run in that directory removes what the killed one left, then runs
    with hostdisk.host_disk("mq-deadline", image, outdir) as disk:
        assert disk.scheduler == "mq-deadline"
    assert list(outdir.glob(f"{hostdisk.BACKING_PREFIX}*")) == []


def test_sweep_detaches_a_device_whose_owner_is_gone(image, tmp_path):
    backing = tmp_path / f"{hostdisk.BACKING_PREFIX}stale.img"
    backing.write_bytes(image.read_bytes()[:1 << 20])
    # a leftover without autoclear, as an older run or losetup would leave it
    device = subprocess.run(["losetup", "--find", "--show", str(backing)], capture_output=True, text=True,
                            check=True).stdout.strip()
    try:
        assert _mine(tmp_path) == [(device, str(backing))]
        removed = hostdisk.sweep_stale()
        assert device in removed and _wait_gone(tmp_path) == [] and not backing.exists()
    finally:
        subprocess.run(["losetup", "-d", device], capture_output=True)


def _run_changing_the_scheduler(image, backing, fail: bool = False):
    """A run on a loop device whose scheduler it changes: the first offered scheduler that is not
    the device's own (a device earlier runs left with one is taken as it is)."""
    for scheduler in OFFERED:
        try:
            with hostdisk.loop_disk(image, backing, scheduler) as disk:
                if disk.scheduler_before != scheduler and fail:
                    raise RuntimeError("the VM failed")
        except RuntimeError:
            return disk
        if disk.scheduler_before != scheduler:
            return disk
    pytest.fail(f"no run changed its loop device's scheduler (offered: {', '.join(OFFERED)})")


def test_the_loop_devices_scheduler_is_set_back_after_the_run(image, tmp_path):
    """The scheduler belongs to /dev/loopN, which outlives its binding: the next user must not
    inherit the run's."""
    disk = _run_changing_the_scheduler(image, tmp_path / f"{hostdisk.BACKING_PREFIX}x.img")
    assert disk.scheduler != disk.scheduler_before
    assert hostdisk.offered_schedulers(disk.device)[0] == disk.scheduler_before, f"{disk.device} kept {disk.scheduler}"


def test_the_scheduler_is_set_back_also_when_the_run_fails(image, tmp_path):
    disk = _run_changing_the_scheduler(image, tmp_path / f"{hostdisk.BACKING_PREFIX}x.img", fail=True)
    assert hostdisk.offered_schedulers(disk.device)[0] == disk.scheduler_before != disk.scheduler
