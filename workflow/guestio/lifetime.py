"""A rule's job dies with the Snakemake that started it, and leaves nothing running.

Snakemake runs a ``script:`` rule as a child process.  Interrupted as a user
would interrupt it, three things can go wrong for a long job (a VM run, a
native benchmark, a kernel build):

* SIGKILL (or a crash) of Snakemake alone: the job is orphaned and keeps
  running, and may even write its outputs after Snakemake is gone;
* SIGTERM to the job (Snakemake's process group): Python's default is to die
  on the spot, without ``finally:`` blocks, so a memory cgroup, a data-disk
  copy or a temporary directory stays behind;
* the job's own children (bonnie++, make and the compilers under it) outlive
  it when it dies, since killing a process does not kill its children.

:func:`die_with_snakemake`, called at the top of a long-running script, takes
care of all three:

* SIGTERM, SIGINT and SIGHUP raise :class:`Terminated` (a ``SystemExit``
  whose status is 128 + the signal) in the main thread, so every ``finally:``
  and context manager of the job tidies up as it does for an error;
* a watcher thread waits (``pidfd``, else by polling) for the Snakemake
  process (the nearest ancestor whose command line is snakemake) to exit,
  and then sends the job SIGTERM, i.e. takes the same path;
* the job becomes a child subreaper, so that grandchildren orphaned when a
  child dies (sub-makes, compilers) are re-parented to it rather than to
  init, and at exit every descendant still alive gets SIGTERM, then SIGKILL,
  and is reaped.

The VM lifecycle's own signal guard (guestio.vm.signals) catches these
signals while QEMU runs, stops QEMU and re-delivers them, which lands in
:func:`die_with_snakemake`'s handler.

:func:`guestio.children.run` is ``subprocess.run`` for long children: the child gets its own
process group and ``PR_SET_PDEATHSIG`` (SIGTERM), and when the caller is
interrupted the whole group gets SIGTERM, then SIGKILL, and is reaped before
the exception goes on.

:func:`clear_stale_snakemake_locks` (called by workflow/rules/common.smk when
the workflow is parsed) removes the locks of a Snakemake that was killed
outright, so that the next invocation starts and redoes the work;
:func:`sweep_stale_trace_instances` (called there too) removes the tracefs
instances of KVM exit runs whose QEMU was killed with them.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import select
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

from guestio.util import write_json_atomic

__all__ = ["Terminated", "die_with_snakemake", "find_snakemake", "descendants",
           "stop_descendants", "snakemake_processes", "record_snakemake_locks",
           "clear_stale_snakemake_locks", "sweep_stale_trace_instances"]

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
TERM_GRACE_S = 10.0   # SIGTERM -> SIGKILL for children still alive at exit
POLL_S = 0.5          # fallback polling period when pidfd_open is not available

_PR_SET_CHILD_SUBREAPER = 36

_state: dict = {"installed": False, "signum": None, "snakemake": None}


class Terminated(SystemExit):
    """Raised in the main thread when the job is told to stop (a signal, or Snakemake died)."""

    def __init__(self, signum: int, why: str):
        super().__init__(128 + signum)
        self.signum = signum
        self.why = why

    def __str__(self) -> str:
        return self.why


def _say(msg: str) -> None:
    print(f"guestio: {msg}", file=sys.stderr, flush=True)


def prctl(option: int, value: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return False


# --------------------------------------------------------------------------
# Processes


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may contain spaces and parentheses.
    return int(stat[stat.rindex(")") + 2:].split()[1])


def _is_snakemake(argv: list[str]) -> bool:
    return any(Path(a).name == "snakemake" for a in argv[:3]) or argv[1:3] == ["-m", "snakemake"]


def find_snakemake(pid: int | None = None) -> int | None:
    """The nearest ancestor of *pid* (default: this process) that is snakemake, or None."""
    current = os.getpid() if pid is None else pid
    for _ in range(64):
        parent = _ppid(current)
        if not parent or parent <= 1:
            return None
        if _is_snakemake(_cmdline(parent)):
            return parent
        current = parent
    return None


def descendants(pid: int | None = None) -> list[int]:
    """Every live descendant of *pid* (default: this process), children first."""
    root = os.getpid() if pid is None else pid
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            parent = _ppid(int(entry.name))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], list(children.get(root, []))
    while todo:
        p = todo.pop(0)
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def _alive(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def _reap() -> None:
    """Reap every exited child (they are ours as a subreaper); never blocks."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def stop_descendants(grace_s: float = TERM_GRACE_S, log: Callable[[str], None] = _say) -> list[int]:
    """SIGTERM every live descendant, SIGKILL what is left after *grace_s*; reap. Returns the pids."""
    pids = [p for p in descendants() if _alive(p)]
    if not pids:
        _reap()
        return []
    log(f"stopping {len(pids)} process(es) left by this job: "
        + ", ".join(f"{p} ({' '.join(_cmdline(p))[:60]})" for p in pids[:8]))
    for p in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        _reap()
        if not any(_alive(p) for p in descendants()):
            break
        time.sleep(0.1)
    else:
        for p in descendants():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(p) for p in descendants()):
            _reap()
            time.sleep(0.1)
    _reap()
    return pids


# --------------------------------------------------------------------------
# The job's side


def _handler(signum: int, frame) -> None:
    name = signal.Signals(signum).name
    if _state["signum"] is not None:
        # Already unwinding: let the cleanup that is running finish.
        _say(f"{name} received again; still cleaning up")
        return
    _state["signum"] = signum
    why = _state.pop("why", None) or f"{name} received"
    _say(f"{why}: stopping this job")
    raise Terminated(signum, why)


def _watch(pid: int) -> None:
    # Process-directed signals must go to the main thread, not this one, so
    # that they interrupt whatever system call it is waiting in.
    signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = None
    if fd is not None:
        try:
            select.select([fd], [], [])
        finally:
            os.close(fd)
    else:  # pragma: no cover - kernels before 5.3
        while _alive(pid) and _ppid(os.getpid()) not in (None, 1):
            time.sleep(POLL_S)
    if _state["signum"] is None:
        _state["why"] = f"snakemake (pid {pid}) is gone"
        signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)


def _at_exit() -> None:
    stop_descendants()


def die_with_snakemake(snakemake_pid: int | None = None) -> int | None:
    """Make this job stop cleanly with Snakemake, and take its children with it.

    Call it at the top of a long-running rule script (in the main thread).
    Returns the pid of the Snakemake process watched (None if this process
    was not started by Snakemake: then only the signal handling and the
    cleanup at exit apply).  Calling it again does nothing.
    """
    if _state["installed"]:
        return _state["snakemake"]
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("die_with_snakemake() must be called from the main thread")
    _state["installed"] = True
    for sig in HANDLED_SIGNALS:
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, _handler)
    prctl(_PR_SET_CHILD_SUBREAPER, 1)
    atexit.register(_at_exit)
    pid = snakemake_pid if snakemake_pid is not None else find_snakemake()
    _state["snakemake"] = pid
    if pid is not None:
        threading.Thread(target=_watch, args=(pid,), name="guestio-snakemake-watch",
                         daemon=True).start()
    return pid


# --------------------------------------------------------------------------
# Snakemake's own leftovers


def snakemake_processes(workdir: os.PathLike | str) -> list[int]:
    """Live Snakemake processes (other than this one) working in *workdir*."""
    workdir = Path(workdir).resolve()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        if not _is_snakemake(_cmdline(pid)) or not _alive(pid):
            continue
        try:
            cwd = Path(os.readlink(f"/proc/{pid}/cwd")).resolve()
        except OSError:
            cwd = None
        if cwd is None or cwd == workdir:  # unknown counts as "maybe here"
            found.append(pid)
    return found


OWNERS_DIR = "guestio-lock-owners"  # under .snakemake/: which Snakemake holds which lock files


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot): a pid and this name one process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()[19]


def record_snakemake_locks(workdir: os.PathLike | str, lock_files) -> Path:
    """Note that this process (Snakemake, in its onstart handler) holds *lock_files*."""
    owners = Path(workdir) / ".snakemake" / OWNERS_DIR
    owners.mkdir(parents=True, exist_ok=True)
    record = owners / f"{os.getpid()}.json"
    write_json_atomic(record, {"pid": os.getpid(), "start_time": _start_time(os.getpid()),
                               "locks": sorted(str(Path(f).resolve()) for f in lock_files)})
    return record


def _owned_locks(workdir: Path) -> tuple[set[str], set[str]]:
    """(lock files of live Snakemakes, lock files of dead ones), from their records; dead records go."""
    live, dead = set(), set()
    for record in (workdir / ".snakemake" / OWNERS_DIR).glob("*.json"):
        try:
            data = json.loads(record.read_text())
            pid, started, locks = int(data["pid"]), data["start_time"], set(data["locks"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if _alive(pid) and _start_time(pid) == started:
            live |= locks
        else:
            dead |= locks
            with contextlib.suppress(OSError):
                record.unlink()
    return live, dead - live


def clear_stale_snakemake_locks(workdir: os.PathLike | str,
                                log: Callable[[str], None] = _say) -> list[Path]:
    """Remove the locks that a killed Snakemake left in *workdir*; returns the files removed.

    Snakemake locks the files it is about to write (.snakemake/locks) and
    removes the locks when it ends; SIGKILL gives it no chance to, and the
    next invocation would refuse to start ("Directory cannot be locked").
    Every Snakemake of this workflow notes in its onstart handler which lock
    files are its own (:func:`record_snakemake_locks`).  A lock file is stale
    when the Snakemake that noted it is gone, or when nobody noted it and no
    Snakemake at all runs in *workdir*; a stale lock protects nothing and is
    removed (what ``snakemake --unlock`` does, for that lock only).  Locks of
    a Snakemake still running, here or in another invocation, are kept.
    """
    workdir = Path(workdir).resolve()
    locks = sorted((workdir / ".snakemake" / "locks").glob("*.lock"))
    live, dead = _owned_locks(workdir)
    nobody_here = None
    stale = []
    for lock in locks:
        key = str(lock.resolve())
        if key in live:
            continue
        if key not in dead:
            if nobody_here is None:
                nobody_here = not snakemake_processes(workdir)
            if not nobody_here:
                continue
        stale.append(lock)
    for lock in stale:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
    if stale:
        log(f"removed {len(stale)} stale Snakemake lock file(s) ({', '.join(p.name for p in stale)}) in "
            f"{workdir / '.snakemake' / 'locks'}: the Snakemake that held them was killed")
    return stale


# --------------------------------------------------------------------------
# Host state of a killed run: KVM exit tracing's tracefs instances

#: Where tracefs is mounted (guestio.exits.kvm.recorder.KvmTracer.default_root looks in the same places).
TRACEFS_ROOTS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
#: A KVM exit run's instance is named after the QEMU process it traces (KvmExitTracer).
_TRACE_INSTANCE = "guestio-"


def _instance_owner(name: str) -> int | None:
    """The pid an instance of ours is named after; None for an instance that is not ours."""
    if not name.startswith(_TRACE_INSTANCE) or not name[len(_TRACE_INSTANCE):].isdigit():
        return None
    return int(name[len(_TRACE_INSTANCE):])


def _remove_trace_instance(instance: Path) -> None:
    """Stop the instance's tracing, then remove it: on tracefs, rmdir frees its buffers
    (the kernel refuses while a reader holds it open: that is reported, not hidden)."""
    switch = instance / "tracing_on"
    if switch.is_file():   # never create it: outside tracefs that would be a file of our own
        with contextlib.suppress(OSError):
            switch.write_text("0")
    instance.rmdir()


def sweep_stale_trace_instances(roots: Sequence[os.PathLike | str] | None = None,
                                log: Callable[[str], None] = _say) -> list[Path]:
    """Remove the tracefs instances (``instances/guestio-<pid>``) whose QEMU is gone; returns them.

    A KVM exit run sets up a trace instance of its own and tears it down when the VM stops; a
    run killed outright (SIGKILL, a crash, the host's OOM killer) cannot, and the instance keeps
    its per-CPU buffers (``buffer_size_kb`` each: 64 MiB a CPU by default) and its event
    filters until the host reboots.  An instance is stale when the process it is named after no
    longer runs; instances of a live run and any instance not named by guestio are left alone.
    ``roots``: the tracefs mounts to look in (default :data:`TRACEFS_ROOTS`; a fake one in tests).
    """
    swept = []
    for root in (TRACEFS_ROOTS if roots is None else [Path(r) for r in roots]):
        try:
            instances = sorted(Path(root, "instances").iterdir())
        except OSError:   # not mounted, not root, no instances directory: nothing of ours there
            continue
        for instance in instances:
            owner = _instance_owner(instance.name)
            if owner is None or _alive(owner) or not instance.is_dir():
                continue
            try:
                _remove_trace_instance(instance)
            except OSError as exc:
                log(f"could not remove the tracefs instance {instance} left by a killed KVM exit run "
                    f"(QEMU pid {owner}): {exc}; remove it with: rmdir {instance}")
                continue
            swept.append(instance)
    if swept:
        log(f"removed {len(swept)} tracefs instance(s) left by killed KVM exit runs: "
            + ", ".join(str(p) for p in swept))
    return swept
