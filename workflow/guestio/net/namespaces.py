"""The testbeds' network namespaces on this machine: where they live, what the machine has, and
the leftovers of killed runs (namespaces, locks, temporary directories, /run/netns as it was)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

from guestio.net import TestbedError
from guestio.util import lock_is_held, write_json_atomic

NS_PREFIX = "guestio-net-"
LOCK_DIR = Path("/run/guestio-net")
NETNS_DIR = Path("/run/netns")
TERM_WAIT_S = 3.0


def run_command(argv: Sequence[str], *, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise TestbedError(f"`{shlex.join(argv)}` failed (exit {result.returncode}): "
                           f"{(result.stderr or result.stdout).strip()}")
    return result


def guestio_namespaces() -> list[str]:
    """The testbeds' namespaces on this machine (``guestio-net-*`` under /run/netns)."""
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(NS_PREFIX))
    except FileNotFoundError:
        return []


def _tag_of(namespace: str) -> str:
    return namespace[len(NS_PREFIX):].rsplit("-", 1)[0]


def _ns_pids(namespace: str) -> list[int]:
    r = run_command(["ip", "netns", "pids", namespace], check=False)
    return [int(p) for p in r.stdout.split() if p.isdigit()]


def _kill_all(pids: Iterable[int], wait_s: float = TERM_WAIT_S) -> None:
    pids = [p for p in pids if p != os.getpid()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, sig)
        deadline = time.monotonic() + wait_s
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if _alive(p)]
            if pids:
                time.sleep(0.05)
        if not pids:
            return


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def delete_namespace(namespace: str) -> None:
    _kill_all(_ns_pids(namespace))
    r = run_command(["ip", "netns", "delete", namespace], check=False)
    if r.returncode != 0 and (NETNS_DIR / namespace).exists():
        raise TestbedError(f"cannot delete namespace {namespace}: {r.stderr.strip()}")


#: The first testbed's note of /run/netns as it found it: {"existed": bool, "mounted": bool}.
NETNS_NOTE = LOCK_DIR / "netns-dir.json"
TMP_PREFIX = NS_PREFIX   # the QEMU wrapper's directory: <tmp>/guestio-net-<tag>-XXXX


@contextlib.contextmanager
def shared_dirs_lock():
    """Serialise the set-up and tear-down of /run/guestio-net and /run/netns between testbeds
    (flock on /run itself: no file of ours to leave behind)."""
    fd = os.open(LOCK_DIR.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def netns_mounts() -> int:
    """How many mounts sit on /run/netns itself (``ip netns add`` bind-mounts it on itself)."""
    target = str(NETNS_DIR)
    return sum(1 for ln in Path("/proc/self/mountinfo").read_text().splitlines() if ln.split()[4] == target)


def note_netns_dir() -> None:
    """Before the first testbed: note whether /run/netns exists and is a mount (kept across a kill)."""
    if not NETNS_NOTE.exists():
        write_json_atomic(NETNS_NOTE, {"existed": NETNS_DIR.is_dir(),
                                       "mounted": NETNS_DIR.is_dir() and netns_mounts() > 0})


def _live_testbeds() -> list[Path]:
    return [lock for lock in LOCK_DIR.glob("*.lock") if lock_is_held(lock)] if LOCK_DIR.is_dir() else []


def restore_shared_dirs(log: Callable[[str], None]) -> None:
    """With no testbed left: /run/netns and /run/guestio-net as the first testbed found them."""
    if _live_testbeds() or guestio_namespaces():
        return
    try:
        note = json.loads(NETNS_NOTE.read_text())
    except (OSError, ValueError):
        note = None
    if note is not None:
        if not note.get("mounted"):
            for _ in range(netns_mounts()):
                r = run_command(["umount", str(NETNS_DIR)], check=False)
                if r.returncode != 0:
                    log(f"could not unmount {NETNS_DIR} (ip netns mounted it): {r.stderr.strip()}; "
                        f"run: umount {NETNS_DIR}")
                    break
        if not note.get("existed") and NETNS_DIR.is_dir() and netns_mounts() == 0:
            with contextlib.suppress(OSError):   # not empty: someone else's namespace is there now
                NETNS_DIR.rmdir()
        NETNS_NOTE.unlink(missing_ok=True)
    if LOCK_DIR.is_dir():
        for lock in LOCK_DIR.glob("*.lock"):
            lock.unlink(missing_ok=True)   # none is held (above)
        with contextlib.suppress(OSError):
            LOCK_DIR.rmdir()


def _stale_tmp_dirs() -> list[Path]:
    """QEMU wrapper directories of testbeds whose owner is gone."""
    stale = []
    for d in Path(tempfile.gettempdir()).glob(f"{TMP_PREFIX}*"):
        parts = d.name[len(TMP_PREFIX):].split("-")
        if len(parts) >= 3 and d.is_dir() and not d.is_symlink() \
                and not lock_is_held(LOCK_DIR / f"{parts[0]}-{parts[1]}.lock"):
            stale.append(d)
    return stale


def cleanup_stale(log: Callable[[str], None] = print, restore: bool = True) -> list[str]:
    """Remove the namespaces, lock files and temporary directories of testbeds whose owner is
    gone; with ``restore`` and no testbed left, /run/netns and /run/guestio-net too."""
    removed = []
    for namespace in guestio_namespaces():
        tag = _tag_of(namespace)
        if not lock_is_held(LOCK_DIR / f"{tag}.lock"):
            log(f"removing namespace {namespace} left by a run that was killed")
            delete_namespace(namespace)
            removed.append(namespace)
    if LOCK_DIR.is_dir():
        live = {_tag_of(n) for n in guestio_namespaces()}
        for lock in LOCK_DIR.glob("*.lock"):
            if lock.stem not in live and not lock_is_held(lock):
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()
    for d in _stale_tmp_dirs():
        log(f"removing {d} left by a run that was killed")
        shutil.rmtree(d, ignore_errors=True)
    if restore:
        with shared_dirs_lock():
            restore_shared_dirs(log)
    return removed
