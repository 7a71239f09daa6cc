"""Run a native benchmark with no more memory than the guest it is compared with.

A host with many GiB of RAM serves bonnie++'s whole file from the page cache,
so its block read is "too fast to measure".  The guest has ram_mib; putting the
native bonnie++ in a memory cgroup of the same size (page cache is charged to
it) makes the two runs see the same amount of cache.  Works with cgroup v2
(memory.max) and v1 (memory.limit_in_bytes).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Callable, Iterator

CGROUP_ROOT = Path("/sys/fs/cgroup")


class MemoryLimitError(RuntimeError):
    pass


def _own_cgroup(controller_root: Path, v2: bool) -> Path:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        hierarchy, controllers, path = line.split(":", 2)
        if (v2 and hierarchy == "0") or (not v2 and "memory" in controllers.split(",")):
            return controller_root / path.lstrip("/")
    return controller_root


def _candidates() -> list[tuple[Path, str, bool]]:
    """(parent cgroup, limit file name, is v2), most specific first."""
    found = []
    v2_controllers = CGROUP_ROOT / "cgroup.controllers"
    if v2_controllers.is_file() and "memory" in v2_controllers.read_text().split():
        found.append((_own_cgroup(CGROUP_ROOT, True), "memory.max", True))
        # A v2 cgroup that holds processes cannot delegate controllers to children;
        # the root can, so it is the fallback (as root).
        found.append((CGROUP_ROOT, "memory.max", True))
    v1 = CGROUP_ROOT / "memory"
    if (v1 / "memory.limit_in_bytes").is_file():
        found.append((_own_cgroup(v1, False), "memory.limit_in_bytes", False))
        found.append((v1, "memory.limit_in_bytes", False))
    return found


GROUP_PREFIX = "guestio-native"
REMOVE_TIMEOUT_S = 30.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _procs(group: Path) -> list[int]:
    try:
        return [int(p) for p in (group / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def _sweep_abandoned(parent: Path, name: str) -> None:
    """Remove cgroups <name>-<pid> that this module made for a process that is gone."""
    for group in parent.glob(f"{name}-*"):
        pid = group.name[len(name) + 1:]
        if not pid.isdigit() or int(pid) == os.getpid() or _pid_alive(int(pid)):
            continue
        _remove(group)


@contextlib.contextmanager
def memory_limited(limit_mib: int, name: str = GROUP_PREFIX) -> Iterator[Callable[[], None]]:
    """A cgroup limited to limit_mib; yields a preexec_fn that moves a child process into it.

    The cgroup is named ``<name>-<pid of this process>``.  It is removed
    afterwards, however the block ends: a process still in it is killed
    first (it can only be the benchmark this cgroup was made for), and a
    cgroup that cannot be removed is an error naming it.  Cgroups of the same
    name left by a process that no longer exists (killed outright) are
    removed on the way in.
    """
    problems = []
    for parent, limit_file, v2 in _candidates():
        with contextlib.suppress(OSError):
            _sweep_abandoned(parent, name)
        group = parent / f"{name}-{os.getpid()}"
        try:
            group.mkdir(exist_ok=True)
            (group / limit_file).write_text(str(limit_mib * 1024 * 1024))
            if v2 and (group / "memory.swap.max").exists():
                (group / "memory.swap.max").write_text("0")
        except OSError as error:
            problems.append(f"{group}: {error.strerror or error}")
            with contextlib.suppress(OSError):
                group.rmdir()
            continue
        procs = str(group / "cgroup.procs")

        def enter() -> None:
            with open(procs, "w") as f:
                f.write(str(os.getpid()))

        try:
            yield enter
        except BaseException:
            _remove(group)  # best effort: the exception in flight says what went wrong
            raise
        if not _remove(group):
            raise MemoryLimitError(f"cannot remove the memory cgroup {group}: processes "
                                   f"{_procs(group)} still in it after {REMOVE_TIMEOUT_S:g} s")
        return
    raise MemoryLimitError(
        "cannot limit the native benchmark's memory to the guest's: no writable memory cgroup "
        f"({'; '.join(problems) or 'no memory controller mounted under ' + str(CGROUP_ROOT)})"
    )


def _remove(group: Path, timeout_s: float = REMOVE_TIMEOUT_S) -> bool:
    """Kill what is left in *group*, then remove it; True when it is gone."""
    deadline = time.monotonic() + timeout_s
    while True:
        for pid in _procs(group):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        try:
            group.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)  # the last process may still be exiting
