"""bonnie++ on the host (the native side of Fig 1 and Fig 2): a run directory of its own, a memory
cgroup, and a larger file while a test is too fast to measure."""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator

from guestio import children
from guestio.analysis.measurements import Measurement
from guestio.workloads.bonnie import (MIN_TIME_S, REQUIRED_METRICS, BonnieRunError, bonnie_args, check_size,
                                      output_tail, parse_csv_file)
from guestio.workloads.memlimit import memory_limited

BONNIE = "bonnie++"
RUN_DIR_PREFIX = "guestio-run-"
_OWNER_FILE = ".guestio-run"  # flock-held by the run that owns the directory


def _sweep_abandoned_runs(directory: Path, say: Callable[[str], None]) -> None:
    """Remove run directories of earlier native runs that died without tidying up.

    Only directories that a run of this module created (named guestio-run-*,
    holding its owner file) and whose owner is gone (the owner file's lock is
    free) are removed; anything else in *directory* is left alone.
    """
    for path in sorted(directory.glob(f"{RUN_DIR_PREFIX}*")):
        owner = path / _OWNER_FILE
        if path.is_symlink() or not path.is_dir() or not owner.is_file():
            continue
        try:
            fd = os.open(owner, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)  # a live run
            continue
        try:
            say(f"native: removing {path}, left by a run that did not finish")
            shutil.rmtree(path, ignore_errors=True)
        finally:
            os.close(fd)


@contextlib.contextmanager
def native_run_dir(directory: os.PathLike | str,
                   log: Callable[[str], None] | None = None) -> Iterator[Path]:
    """A fresh run directory under *directory* (created if needed), removed afterwards.

    The run's directory, ``guestio-run-XXXXXXXX``, is the only thing the run
    writes under *directory* and the only thing it removes; its owner file
    stays locked while the run lives, so that a later run can tell an
    abandoned directory (its owner killed outright) from a live one and
    remove it.  Nothing else in *directory* is ever touched.
    """
    say = log or (lambda msg: None)
    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    _sweep_abandoned_runs(directory, say)
    run_dir = Path(tempfile.mkdtemp(prefix=RUN_DIR_PREFIX, dir=directory))
    fd = os.open(run_dir / _OWNER_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield run_dir
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
        os.close(fd)


def run_native(directory: os.PathLike | str, size_mib: int, ram_mib: int,
               outdir: os.PathLike | str, label: str | None = None, *,
               timeout_s: float | None = None,
               log: Callable[[str], None] | None = None,
               required: Iterable[str] = REQUIRED_METRICS,
               memory_limit_mib: int | None = None,
               max_size_mib: int | None = None) -> list[Measurement]:
    """Run bonnie++ on the host in a fresh run directory under *directory*; raw output into *outdir*.

    *directory* (created if needed) should be on the host's own file system,
    under the project's build directory.  bonnie++ runs in a run directory
    of its own under it (:func:`native_run_dir`), which is removed afterwards,
    also after a failure, a timeout or an interruption; nothing else in
    *directory* is touched.  *outdir* gets bonnie.csv (stdout), bonnie.log
    (stderr) and bonnie-cmdline.txt.  Raises BonnieRunError if bonnie++ fails
    or times out, BonnieParseError if its CSV is unusable (*required*: see
    :func:`parse_record`).  As root bonnie++ runs with ``-u root``; otherwise
    as the current user (bonnie++ cannot switch to root then).

    bonnie++ leads its own process group and dies with this process
    (guestio.children.run): an interrupted run stops bonnie++, removes its
    file and its memory cgroup before the exception goes on.

    On a host with plenty of RAM the page cache makes the native block read
    too fast to measure (``+++++``) for any -s that fits in memory (seen here
    up to -s 4096 on a 24 GiB host).  *memory_limit_mib* runs bonnie++ in a
    memory cgroup of that size (guestio.workloads.memlimit), so that natively it has as
    much page cache as the guest it is compared with.

    Even then a fast host disk can finish a required test within bonnie++'s 0.5 s
    minimum (a 1 GiB read at over 2 GB/s, seen here).  With *max_size_mib* such a run is
    repeated with twice the file, up to that size and while the file system has room:
    throughput of a file several times the page cache does not depend on its size, and the
    time does.  The earlier attempts' CSV lines are kept as ``bonnie-<N>M.csv``, and the size
    used is a measurement of its own, ``file_size`` (MiB).
    """
    say = log or (lambda msg: None)
    outdir = Path(outdir).absolute()
    required = tuple(required)
    # The options are checked before anything is created.
    bonnie_args(directory, size_mib, ram_mib, label)
    outdir.mkdir(parents=True, exist_ok=True)
    csv_path = outdir / "bonnie.csv"
    size = int(size_mib)
    while True:
        _run_native_once(directory, size, ram_mib, outdir, label, timeout_s, say, memory_limit_mib)
        record = parse_csv_file(csv_path, required=())
        too_fast = [m for m in required if m in record.too_fast]
        bigger = 2 * size
        if not (too_fast and _room_for(directory, bigger, max_size_mib)):
            break
        kept = outdir / f"bonnie-{size}M.csv"
        csv_path.replace(kept)
        say(f"native: {', '.join(too_fast)} took under bonnie++'s {MIN_TIME_S} s at -s {size} "
            f"(kept as {kept.name}): again with -s {bigger}")
        size = bigger
    record = parse_csv_file(csv_path, required=required)
    check_size(record, size, str(csv_path))
    return [*record.measurements, Measurement("file_size", float(size), "MiB")]


def _room_for(directory: os.PathLike | str, size_mib: int, max_size_mib: int | None) -> bool:
    """Whether a native retry may use a file of size_mib (max_size_mib, free space)."""
    if max_size_mib is None or size_mib > max_size_mib:
        return False
    free_mib = shutil.disk_usage(directory).free // (1 << 20)
    return free_mib >= size_mib + 256  # room for bonnie's file and a margin


def _run_native_once(directory, size_mib: int, ram_mib: int, outdir: Path, label, timeout_s,
                     say: Callable[[str], None], memory_limit_mib: int | None) -> None:
    user = "root" if os.geteuid() == 0 else getpass.getuser()
    csv_path, log_path = outdir / "bonnie.csv", outdir / "bonnie.log"
    limit = memory_limited(memory_limit_mib) if memory_limit_mib else contextlib.nullcontext(None)
    with native_run_dir(directory, say) as run_dir, limit as enter_cgroup, \
            open(csv_path, "wb") as out, open(log_path, "wb") as err:
        argv = [BONNIE, *bonnie_args(run_dir, size_mib, ram_mib, label, user=user)]
        (outdir / "bonnie-cmdline.txt").write_text(shlex.join(argv) + "\n")
        say(f"native: {shlex.join(argv)}")
        try:
            proc = children.run(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                cwd=run_dir, timeout=timeout_s, preexec_fn=enter_cgroup)
        except FileNotFoundError:
            raise BonnieRunError(f"{BONNIE} not found on the host (apt-get install bonnie++)") \
                from None
        except subprocess.TimeoutExpired:
            raise BonnieRunError(f"native bonnie++ did not finish within {timeout_s} s "
                                 f"(killed; output in {outdir})") from None
    if proc.returncode != 0:
        raise BonnieRunError(f"native bonnie++ exited with status {proc.returncode} "
                             f"({outdir}); its stderr:\n{output_tail(log_path)}")
