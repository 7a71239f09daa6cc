"""Small helpers shared by every stage: hashing, all-or-nothing writes, locks on shared trees."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Iterator


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(path: os.PathLike | str) -> Iterator[Path]:
    """A temporary path beside *path* for a writer that wants a path (savefig, a copy, a csv
    writer); renamed to *path* when the block ends without an error, removed otherwise, so a
    reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: Path, data: bytes, *, fsync: bool = False) -> None:
    """Write *data* through :func:`atomic_path`.  *fsync*: flush the data to disk before the
    rename (for a large artifact that a crash must not leave empty under its final name)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def write_json_atomic(path: Path, data) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


# --------------------------------------------------------------------------
# Locks on shared build trees


def lock_path(path: os.PathLike | str) -> Path:
    """The lock file that guards *path*: a sibling ``<name>.lock`` (the tree itself may be replaced)."""
    path = Path(path).absolute()
    return path.with_name(path.name + ".lock")


def lock_holders(lock_file: os.PathLike | str) -> list[int]:
    """Pids holding an flock on *lock_file*, from /proc/locks (empty if none or unknown)."""
    try:
        st = os.stat(lock_file)
        table = Path("/proc/locks").read_text()
    except OSError:
        return []
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids = []
    for line in table.splitlines():
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF"; blocked waiters have "->"
        if "->" in fields or len(fields) < 6 or fields[1] != "FLOCK":
            continue
        if fields[5] == dev and fields[4].isdigit():
            pids.append(int(fields[4]))
    return sorted(set(pids))


def lock_is_held(lock_file: os.PathLike | str) -> bool:
    """Whether a live process holds the flock on *lock_file* (a missing file is not held).

    Probes by trying the lock without waiting, so it also sees holders in other mount or
    pid namespaces, which /proc/locks may not name."""
    try:
        fd = os.open(lock_file, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _holder(lock_file: Path) -> str:
    pids = lock_holders(lock_file)
    if pids:
        return "pid " + ", ".join(map(str, pids))
    try:
        text = lock_file.read_text().strip()
    except OSError:
        text = ""
    return f"pid {text}" if text.isdigit() else "another process"


def _acquire(path: os.PathLike | str, shared: bool, log: Callable[[str], None] | None,
             poll_s: float) -> tuple[int, Path]:
    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    lock_file = lock_path(path)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        waited = False
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited:
                    say(f"waiting for {lock_file} held by {_holder(lock_file)}")
                    waited = True
                time.sleep(poll_s)
        if waited:
            say(f"got {lock_file}")
        if not shared:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    return fd, lock_file


@contextlib.contextmanager
def exclusive(path: os.PathLike | str, *, shared: bool = False,
              log: Callable[[str], None] | None = None,
              poll_s: float = 0.5) -> Iterator[Path]:
    """Hold a lock on *path* (a shared build tree) for the duration of the ``with`` block.

    Two invocations of the pipeline (for example with different results
    directories) share build/src/linux, build/kernel/<variant>, build/debs,
    ... ; whoever writes such a tree holds it exclusively, whoever only reads
    it may hold it *shared*.  The lock is an ``flock`` on ``<path>.lock``, so
    it is released when the holder exits, however it dies (even SIGKILL):
    a stale lock cannot exist.  While waiting, *log* (default: stderr) gets
    "waiting for <lock> held by pid N" once, and "got <lock>" when it is ours.
    Yields the lock file's path.
    """
    fd, lock_file = _acquire(path, shared, log, poll_s)
    try:
        yield lock_file
    finally:
        os.close(fd)  # releases the flock


_held: list[int] = []


def hold_exclusive(path: os.PathLike | str, *, log: Callable[[str], None] | None = None,
                   poll_s: float = 0.5) -> Path:
    """:func:`exclusive` for the rest of this process's life (the lock goes when it exits)."""
    fd, lock_file = _acquire(path, False, log, poll_s)
    _held.append(fd)
    return lock_file
