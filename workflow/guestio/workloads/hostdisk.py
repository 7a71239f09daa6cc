"""The host's I/O scheduler under a guest's disk: a loop device the pipeline makes for one run.

§3.2.2 of the paper compares the guest's I/O scheduler (CFQ, noop) under a host that
schedules too (CFQ).  For the host's scheduler to matter, and to be set without touching
the machine's own disks, a run with host scheduler S (``hsched`` other than ``file``)
gets its data disk on a loop device made for it:

* the pristine data-disk image is copied sparsely to a backing file
  (``<outdir>/guestio-hostdisk-<name>.img``) held under an ``flock`` for the whole run;
* a free loop device is configured on it in one ``LOOP_CONFIGURE`` ioctl with
  ``LO_FLAGS_DIRECT_IO`` (the loop device reads and writes the backing file with
  O_DIRECT, so the host's page cache does not absorb the guest's I/O; QEMU opens the
  device with ``cache=none`` as well) and ``LO_FLAGS_AUTOCLEAR`` (the kernel detaches
  the device when its last opener closes it);
* the device's scheduler (``/sys/block/loopN/queue/scheduler``) is set to S and read
  back; the guest's QEMU gets ``/dev/loopN`` as its disk.

After the run, however it ended (error, SIGINT/SIGTERM through
:func:`guestio.lifetime.die_with_snakemake`), the device's scheduler is set back to what it
was (a loop device outlives its binding, and its scheduler with it: the next user of
/dev/loopN would otherwise inherit S), the device is detached, the backing file and its
lock are deleted: nothing is left.  A run killed outright (SIGKILL) cannot tidy up; its device is detached by
the kernel once QEMU and the job are gone (autoclear), and whatever is still there -- a
device, a backing file -- is removed by the next run (:func:`sweep_stale`: a backing file
whose lock nobody holds belongs to a dead run).

Needs root (loop devices, sysfs); refused clearly otherwise.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import struct
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

from guestio.util import lock_is_held

__all__ = ["HostDiskError", "HostDisk", "FILE", "BACKING_PREFIX", "loop_disk", "host_disk",
           "guestio_loop_devices", "sweep_stale", "offered_schedulers"]

#: The host-scheduler value of a run whose disk is a plain image file (no loop device).
FILE = "file"
#: Backing files the pipeline makes start with this; nothing else is ever detached or removed.
BACKING_PREFIX = "guestio-hostdisk-"

SYS_BLOCK = Path("/sys/block")
LOOP_CONTROL = "/dev/loop-control"

# <linux/loop.h>
LOOP_CLR_FD = 0x4C01
LOOP_CONFIGURE = 0x4C0A
LOOP_CTL_GET_FREE = 0x4C82
LO_FLAGS_AUTOCLEAR = 4
LO_FLAGS_DIRECT_IO = 16
LO_NAME_SIZE = 64
# struct loop_info64: 5 u64, 4 u32, file name, crypt name, key (64, 64, 32 bytes), 2 u64
_LOOP_INFO64 = struct.Struct(f"=5Q4I{LO_NAME_SIZE}s{LO_NAME_SIZE}s32s2Q")
# struct loop_config: u32 fd, u32 block_size, struct loop_info64, u64 reserved[8]
_LOOP_CONFIG_HEAD = struct.Struct("=2I")

_SCHEDULER_RE = re.compile(r"^[a-z0-9-]+$")


class HostDiskError(RuntimeError):
    pass


@dataclass(frozen=True)
class HostDisk:
    """A loop device holding one run's data disk."""
    device: str                  # /dev/loopN, what QEMU opens
    backing: str                 # the backing file (a sparse copy of the data disk)
    scheduler: str               # the host scheduler in effect, read back from sysfs
    schedulers: tuple[str, ...]  # what the host kernel offered for the device
    direct_io: bool              # the loop device does O_DIRECT to its backing file
    setup_s: float               # copying the image and configuring the device
    scheduler_before: str = ""   # the device's scheduler before the run, set back after it

    def to_json(self) -> dict:
        d = asdict(self)
        d["schedulers"] = list(self.schedulers)
        return d


def _say_nothing(msg: str) -> None:
    pass


def _require_root() -> None:
    if os.geteuid() != 0:
        raise HostDiskError("a host I/O scheduler other than 'file' needs a loop device, which only "
                            "root can set up: run as root, or use host scheduler 'file'")


def _lock_file(backing: Path) -> Path:
    return backing.with_name(backing.name + ".lock")


def _backing_of(sysdev: Path) -> Path | None:
    try:
        text = (sysdev / "loop" / "backing_file").read_text().strip()
    except OSError:
        return None
    return Path(text.removesuffix(" (deleted)"))


def guestio_loop_devices() -> list[tuple[str, str]]:
    """(device, backing file) of every loop device whose backing file the pipeline made."""
    found = []
    for sysdev in sorted(SYS_BLOCK.glob("loop*")):
        backing = _backing_of(sysdev)
        if backing is not None and backing.name.startswith(BACKING_PREFIX):
            found.append((f"/dev/{sysdev.name}", str(backing)))
    return found


def offered_schedulers(device: str) -> tuple[str, tuple[str, ...]]:
    """(effective, offered) schedulers of a block device, from sysfs."""
    line = (SYS_BLOCK / Path(device).name / "queue" / "scheduler").read_text().strip()
    effective = re.search(r"\[([^\]]+)\]", line)
    offered = tuple(s.strip("[]") for s in line.split())
    return (effective.group(1) if effective else line), offered


def _detach(device: str) -> None:
    """LOOP_CLR_FD; a device still open (QEMU) is detached by the kernel when it is closed."""
    try:
        fd = os.open(device, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        fcntl.ioctl(fd, LOOP_CLR_FD)
    except OSError as e:
        if e.errno != errno.ENXIO:   # ENXIO: not bound (already detached)
            raise
    finally:
        os.close(fd)


def _wait_detached(device: str, backing: Path, timeout_s: float = 10.0) -> bool:
    sysdev = SYS_BLOCK / Path(device).name
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = _backing_of(sysdev)
        if now is None or now != backing:
            return True
        time.sleep(0.05)
    return False


def sweep_stale(say: Callable[[str], None] = _say_nothing, directory: Path | None = None) -> list[str]:
    """Remove what killed runs left: their loop devices and backing files.

    A pipeline backing file (:data:`BACKING_PREFIX`) whose lock no live process holds
    belongs to a run that is gone: its loop device is detached and the file and its lock
    removed.  *directory*: also remove such files there that no loop device uses.
    Returns what was removed.
    """
    removed = []
    for device, backing in guestio_loop_devices():
        path = Path(backing)
        if lock_is_held(_lock_file(path)):
            continue
        say(f"host disk: detaching {device} left by a killed run (backing file {backing})")
        _detach(device)
        _wait_detached(device, path)
        removed.append(device)
        for p in (path, _lock_file(path)):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(str(p))
    if directory is not None and Path(directory).is_dir():
        for path in sorted(Path(directory).glob(f"{BACKING_PREFIX}*.img")):
            if not lock_is_held(_lock_file(path)):
                say(f"host disk: removing {path} left by a killed run")
                for p in (path, _lock_file(path)):
                    with contextlib.suppress(FileNotFoundError):
                        p.unlink()
                        removed.append(str(p))
    return removed


def _restore_scheduler(device: str, previous: str, say: Callable[[str], None]) -> None:
    """Set the device's scheduler back to *previous*: it stays with /dev/loopN after the detach."""
    try:
        if offered_schedulers(device)[0] != previous:
            (SYS_BLOCK / Path(device).name / "queue" / "scheduler").write_text(previous)
    except OSError as e:
        say(f"host disk: could not set {device}'s scheduler back to {previous}: {e}")


def _copy_sparse(src: Path, dest: Path) -> None:
    subprocess.run(["cp", "--sparse=always", "--reflink=auto", str(src), str(dest)], check=True)


def _configure(backing_fd: int, backing: Path) -> tuple[str, int]:
    """A free loop device configured on *backing_fd* (direct I/O, autoclear): its path and an
    open descriptor of it.  The caller keeps that open for as long as it needs the device:
    with autoclear, closing the last descriptor detaches it."""
    info = _LOOP_INFO64.pack(0, 0, 0, 0, 0, 0, 0, 0, LO_FLAGS_DIRECT_IO | LO_FLAGS_AUTOCLEAR,
                             os.fsencode(str(backing))[-(LO_NAME_SIZE - 1):], b"", b"", 0, 0)
    config = bytearray(_LOOP_CONFIG_HEAD.pack(backing_fd, 0) + info + bytes(8 * 8))
    ctl = os.open(LOOP_CONTROL, os.O_RDWR)
    try:
        for _ in range(20):
            number = fcntl.ioctl(ctl, LOOP_CTL_GET_FREE)
            device = f"/dev/loop{number}"
            fd = os.open(device, os.O_RDWR)
            try:
                fcntl.ioctl(fd, LOOP_CONFIGURE, config)
                return device, fd
            except OSError as e:
                os.close(fd)
                if e.errno != errno.EBUSY:   # taken by someone else meanwhile: the next free one
                    raise HostDiskError(f"LOOP_CONFIGURE of {device} on {backing} failed: {e}") from e
    finally:
        os.close(ctl)
    raise HostDiskError("no free loop device (20 tries)")


@contextlib.contextmanager
def loop_disk(image: os.PathLike | str, backing: os.PathLike | str, scheduler: str, *,
              say: Callable[[str], None] = _say_nothing) -> Iterator[HostDisk]:
    """A loop device with host scheduler *scheduler* on a sparse copy of *image*.

    The copy is *backing* (its name must start with :data:`BACKING_PREFIX`).  Leftovers of
    killed runs are swept first.  On exit, however it happens, the device's scheduler is set
    back to what it was, the device is detached and the copy and its lock are removed.
    """
    _require_root()
    if not _SCHEDULER_RE.match(scheduler) or scheduler == FILE:
        raise HostDiskError(f"host scheduler {scheduler!r} is not a scheduler name")
    image, backing = Path(image), Path(backing).absolute()
    if not backing.name.startswith(BACKING_PREFIX):
        raise HostDiskError(f"backing file {backing} must be named {BACKING_PREFIX}*")
    if not image.is_file():
        raise FileNotFoundError(2, "data disk image not found", str(image))
    backing.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(say, backing.parent)
    started = time.monotonic()
    lock = _lock_file(backing)
    lock_fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    device = previous = None
    backing_fd = holder = None
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _copy_sparse(image, backing)
        backing_fd = os.open(backing, os.O_RDWR)
        # The device stays open (holder) for the whole run: with autoclear, the kernel
        # detaches it as soon as this process and QEMU are gone, even after a SIGKILL.
        device, holder = _configure(backing_fd, backing)
        os.close(backing_fd)
        backing_fd = None
        name = Path(device).name
        effective, offered = offered_schedulers(device)
        previous = effective
        if scheduler not in offered:
            raise HostDiskError(f"host scheduler {scheduler!r} is not offered for {device} by this host's "
                                f"kernel (offered: {', '.join(offered)})")
        (SYS_BLOCK / name / "queue" / "scheduler").write_text(scheduler)
        effective, offered = offered_schedulers(device)
        if effective != scheduler:
            raise HostDiskError(f"{device}: scheduler reads back as {effective!r}, not {scheduler!r}")
        dio = (SYS_BLOCK / name / "loop" / "dio").read_text().strip() == "1"
        disk = HostDisk(device=device, backing=str(backing), scheduler=effective, schedulers=offered,
                        direct_io=dio, setup_s=round(time.monotonic() - started, 3), scheduler_before=previous)
        say(f"host disk: {device} on {backing} (scheduler {effective} of {' '.join(offered)}, "
            f"direct I/O {'on' if dio else 'off'}, set up in {disk.setup_s:.1f} s)")
        yield disk
    finally:
        try:
            if backing_fd is not None:
                os.close(backing_fd)
            if device is not None:
                if previous is not None:
                    _restore_scheduler(device, previous, say)
                _detach(device)
                if holder is not None:
                    os.close(holder)
                    holder = None
                if not _wait_detached(device, backing):
                    say(f"host disk: {device} is still attached to {backing} (still open?)")
                else:
                    say(f"host disk: {device} detached")
        finally:
            if holder is not None:
                os.close(holder)
            with contextlib.suppress(FileNotFoundError):
                backing.unlink()
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
            os.close(lock_fd)


@contextlib.contextmanager
def host_disk(hsched: str, image: os.PathLike | str, outdir: os.PathLike | str, *,
              say: Callable[[str], None] = _say_nothing) -> Iterator[HostDisk | None]:
    """The disk of a run with host scheduler *hsched*: None for ``file`` (the run copies the
    image itself), else a :func:`loop_disk` on ``<outdir>/guestio-hostdisk-<image>.img``."""
    if hsched == FILE:
        yield None
        return
    backing = Path(outdir).absolute() / f"{BACKING_PREFIX}{Path(image).stem}.img"
    with loop_disk(image, backing, hsched, say=say) as disk:
        yield disk
