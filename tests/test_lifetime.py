"""A job dies with its Snakemake and takes its children along; shared trees are locked.

Fast: no kernel, no QEMU.  A stand-in for Snakemake (a script called
``snakemake``) starts a job that calls guestio.lifetime.die_with_snakemake()
and runs children the way the pipeline's scripts do; the stand-in or the job
is then signalled and the test checks that the job tidied up (its
``finally:`` ran) and that no child is left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from guestio import children, lifetime
from guestio.util import exclusive, lock_holders, lock_path


def processes_with(token: str) -> list[int]:
    """Live `sleep <token>N` processes."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if cmdline.startswith("sleep ") and token in cmdline and state not in "ZX":
                found.append(int(entry.name))
    return found


def unique_sleep() -> str:
    """A sleep duration no other process has: the test's children are found by it."""
    return f"1000.{uuid.uuid4().int % 10**12:012d}"


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


JOB = """
import os, subprocess, sys, time
from pathlib import Path
from guestio import children, lifetime
out = Path(sys.argv[1]); token = sys.argv[2]
print("snakemake pid", lifetime.die_with_snakemake(), flush=True)
try:
    # A long child through children.run (own group), and an orphan-maker through plain Popen.
    subprocess.Popen(["sh", "-c", f"sleep {token}1 & exec sleep {token}2"])
    (out / "started").write_text("")
    children.run(["sh", "-c", f"exec sleep {token}3"])
finally:
    (out / "cleaned").write_text(str(os.getpid()))
"""

# The stand-in for Snakemake: named "snakemake", starts the job like Snakemake's
# local executor does (a direct child, same process group) and waits.
FAKE_SNAKEMAKE = """#!{python}
import subprocess, sys
job = subprocess.Popen([sys.executable, sys.argv[1], *sys.argv[2:]])
print(job.pid, flush=True)
job.wait()
"""


@pytest.fixture
def job(tmp_path):
    token = unique_sleep()
    (tmp_path / "job.py").write_text(JOB)
    fake = tmp_path / "bin" / "snakemake"
    fake.parent.mkdir()
    fake.write_text(FAKE_SNAKEMAKE.format(python=sys.executable))
    fake.chmod(0o755)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    smk = subprocess.Popen([str(fake), str(tmp_path / "job.py"), str(tmp_path), token],
                           stdout=subprocess.PIPE, text=True, env=env, start_new_session=True)
    job_pid = int(smk.stdout.readline())
    try:
        wait_for(lambda: (tmp_path / "started").exists() and len(processes_with(token)) == 3, 20,
                 "the job's three children")
        yield {"smk": smk, "job": job_pid, "token": token, "dir": tmp_path}
    finally:
        for pid in processes_with(token) + [job_pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if smk.poll() is None:
            smk.kill()
        smk.wait()


def job_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in "ZX"


def test_find_snakemake_and_descendants(job):
    assert lifetime.find_snakemake(job["job"]) == job["smk"].pid
    assert lifetime.find_snakemake() is None or lifetime.find_snakemake() != job["smk"].pid
    assert set(processes_with(job["token"])) <= set(lifetime.descendants(job["job"]))


@pytest.mark.parametrize("how", ["SIGKILL snakemake", "SIGTERM snakemake's group", "SIGTERM job"])
def test_job_stops_cleanly_and_leaves_no_child(job, how):
    if how == "SIGKILL snakemake":
        os.kill(job["smk"].pid, signal.SIGKILL)
    elif how == "SIGTERM job":
        os.kill(job["job"], signal.SIGTERM)
    else:
        os.killpg(job["smk"].pid, signal.SIGTERM)
    wait_for(lambda: job_gone(job["job"]), 30, "the job to end")
    assert (job["dir"] / "cleaned").read_text() == str(job["job"]), "the job's finally: did not run"
    wait_for(lambda: not processes_with(job["token"]), 15, "the job's children to go")


def test_run_stops_the_whole_group_on_timeout(tmp_path):
    token = unique_sleep()
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        children.run(["sh", "-c", f"sleep {token}1 & sleep {token}2; wait"], timeout=1,
                     grace_s=2)
    assert time.monotonic() - started < 10
    wait_for(lambda: not processes_with(token), 5, "the group to go")


def test_run_passes_results_through():
    done = children.run(["sh", "-c", "echo out; echo err >&2; exit 3"], capture_output=True, text=True)
    assert (done.returncode, done.stdout, done.stderr) == (3, "out\n", "err\n")


# --------------------------------------------------------------------------
# Locks on shared build trees

HOLDER = """
import sys, time
from guestio.util import exclusive
with exclusive(sys.argv[1], shared=sys.argv[2] == "shared"):
    print("held", flush=True)
    sys.stdin.readline()
"""


def hold(tree: Path, mode: str = "exclusive") -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tree), mode], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "held\n"
    return proc


def test_second_holder_waits_until_the_first_releases(tmp_path):
    tree = tmp_path / "build" / "kernel" / "baseline"
    first = hold(tree)
    assert lock_holders(lock_path(tree)) == [first.pid]
    second = subprocess.Popen([sys.executable, "-c", HOLDER, str(tree), "exclusive"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        message = second.stderr.readline()
        assert message == f"waiting for {lock_path(tree)} held by pid {first.pid}\n"
        time.sleep(1)
        assert second.poll() is None and lock_holders(lock_path(tree)) == [first.pid]
        first.communicate("\n", timeout=10)
        assert second.stdout.readline() == "held\n"  # only now
        assert second.stderr.readline() == f"got {lock_path(tree)}\n"
        assert lock_holders(lock_path(tree)) == [second.pid]
    finally:
        for p in (first, second):
            if p.poll() is None:
                p.kill()
            p.wait()


def test_a_killed_holder_releases_and_readers_share(tmp_path):
    tree = tmp_path / "src" / "linux"
    first = hold(tree)
    first.kill()  # SIGKILL: no cleanup at all
    first.wait()
    readers = [hold(tree, "shared"), hold(tree, "shared")]  # both at once
    messages = []
    with exclusive(tree, shared=True, log=messages.append):
        pass
    assert messages == []
    try:
        assert sorted(lock_holders(lock_path(tree))) == sorted(p.pid for p in readers)
        got = []

        def write_lock():
            with exclusive(tree, log=got.append, poll_s=0.05):
                got.append("in")
        import threading
        t = threading.Thread(target=write_lock)
        t.start()
        wait_for(lambda: got, 5, "the writer to wait")
        assert got[0].startswith(f"waiting for {lock_path(tree)} held by pid ")
        for r in readers:
            r.communicate("\n", timeout=10)
        t.join(10)
        assert got[-1] == "in"
    finally:
        for r in readers:
            if r.poll() is None:
                r.kill()
            r.wait()


def test_hold_exclusive_lasts_as_long_as_the_process(tmp_path):
    """What each Snakemake run does with its results_dir (common.smk, onstart)."""
    results = tmp_path / "results"
    holder = subprocess.Popen([sys.executable, "-c", f"""
import sys
from guestio.util import hold_exclusive
hold_exclusive({str(results / ".snakemake-run")!r})
print("held", flush=True)
sys.stdin.readline()
"""], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        assert lock_holders(lock_path(results / ".snakemake-run")) == [holder.pid]
        holder.communicate("\n", timeout=10)
        assert lock_holders(lock_path(results / ".snakemake-run")) == []
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait()


# --- tracefs instances of killed KVM exit runs ----------------------------------------------------

def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_killed_runs_trace_instance_is_swept_a_live_ones_kept(tmp_path):
    root = tmp_path / "tracing"
    instances = root / "instances"
    dead, live = instances / f"guestio-{_dead_pid()}", instances / f"guestio-{os.getpid()}"
    foreign, unnamed = instances / "perf-tool", instances / "guestio"
    for d in (dead, live, foreign, unnamed):
        d.mkdir(parents=True)
    said = []
    swept = lifetime.sweep_stale_trace_instances([root], log=said.append)
    assert swept == [dead] and not dead.exists()
    assert live.is_dir() and foreign.is_dir() and unnamed.is_dir()
    assert said and str(dead) in said[0]


def test_a_trace_instance_that_cannot_be_removed_is_reported_with_what_to_do(tmp_path):
    instance = tmp_path / "instances" / f"guestio-{_dead_pid()}"
    instance.mkdir(parents=True)
    (instance / "trace").write_text("busy")   # a plain directory with files: rmdir fails
    said = []
    assert lifetime.sweep_stale_trace_instances([tmp_path], log=said.append) == []
    assert instance.is_dir() and any(f"rmdir {instance}" in s for s in said)


def test_no_tracefs_is_nothing_to_sweep(tmp_path):
    assert lifetime.sweep_stale_trace_instances([tmp_path / "not-mounted"]) == []
