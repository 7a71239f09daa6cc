"""bonnie++ 2.00a for Fig 1, Fig 2 and Fig 6: one command line, its CSV, native and guest runs.

Natively and in the guest bonnie++ gets the same options (:func:`bonnie_args`):
``-d DIR -s SIZE_MIB -r RAM_MIB -n 0 -f -u root -q [-m LABEL]``, i.e. sequential
block write, rewrite and block read of one SIZE_MIB file (``-f`` skips the
per-character tests, ``-n 0`` the file-creation tests; the random-seek test
always runs).  With ``-q`` bonnie++ writes exactly its CSV line to stdout and
the human-readable table to stderr; both are kept (``bonnie.csv``,
``bonnie.log``).

* :func:`run_native` runs bonnie++ directly on the host, in a directory on the
  host's own file system under the project's build directory (the lead's choice
  of comparable storage: the paper compared the guest with the host's disk),
  with the same -s/-r as the guest.
* :func:`run_vm_bonnie` runs ``workflow/jobs/bonnie.sh`` in a guest on a fresh
  sparse copy of the formatted data disk, attached as IDE (ata_piix, /dev/sda)
  or virtio-blk (/dev/vda); the copy is deleted afterwards, so the shared image
  is never written and no disk-sized file is left behind.

The CSV line of bonnie++ 2.00a
------------------------------
Written by ``BonTimer::DoReportIO``/``DoReportFile`` (bon_time.cpp); 50 fields,
format version ``1.98``.  The header that bonnie++ prints with ``-x N`` does NOT
match the data: ``io_chunk_size`` is never written (field 6 is always empty)
and the seek count and seek-process count follow, so every statistic sits two
fields later than the header says.  The layout, 0-based::

     0 format_version (1.98)   1 bonnie_version (2.00a)   2 name (-m)   3 concurrency
     4 seed   5 file_size (e.g. 512M, 1G)   6 (empty)   7 seeks   8 seek_procs
     9/10 putc, %CPU      11/12 put_block, %CPU   13/14 rewrite, %CPU
    15/16 getc, %CPU      17/18 get_block, %CPU   19/20 seeks, %CPU
    21-37 file-creation tests (empty with -n 0)
    38 putc_latency  39 put_block_latency  40 rewrite_latency  41 getc_latency
    42 get_block_latency  43 seeks_latency  44-49 file-creation latencies

Throughput is ``int(KiB / elapsed s)`` (bonnie's "K/sec"); %CPU is
``int((user+sys of the bonnie++ process) / elapsed * 100)``, from getrusage in
whatever OS runs bonnie++: in a guest that is the guest kernel's accounting of
guest time, i.e. the share of the vCPU bonnie++ got, not the host CPU that
QEMU (TCG translation, device emulation, I/O threads) burnt for it.  The
random-seek %CPU (field 20) is not reported: see :data:`METRICS`.  Elapsed
times come from gettimeofday, so in a guest from the guest's clocksource;
latency is the longest single operation, printed as ``Nus``, ``Nms`` or ``Ns``
(integer, so coarser above 100 ms); it is converted to microseconds here.

Placeholders, and the rule this module applies:

* ``""`` (empty): the test did not run (or, for a latency, no latency was
  recorded).  The metric is absent.
* ``+++++`` (throughput) / ``+++`` (%CPU): the test ran but took less than
  0.5 s (bonnie's MinTime), so bonnie++ refuses to give a number.  It never
  becomes a number here: the metric is absent and its name is listed in
  :attr:`BonnieRecord.too_fast`.

A metric named in ``required`` (default :data:`REQUIRED_METRICS`, the six
block-I/O metrics) that is absent for either reason raises
:class:`BonnieParseError` naming the metric, the field and why ("too fast to
measure" with the advice to raise -s, or "the test did not run").  Pass
``required=()`` to accept partial results.

A killed bonnie++ leaves an empty CSV: it prints its results only at the very
end (the CSV line in one go, then fflush), so a cut-off line is rare and
caught by the field count, the missing newline or an unparsable last field.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from guestio import lifetime
from guestio.analysis.measurements import Measurement
from guestio.workloads.memlimit import memory_limited
from guestio.vm import QEMU_BINARY, DiskSpec, Hooks, RunResult, VMRunError, VMSpec, run_vm

__all__ = [
    "BONNIE",
    "CSV_FORMAT_VERSION",
    "JOB_SCRIPT",
    "METRICS",
    "REQUIRED_METRICS",
    "BonnieParseError",
    "BonnieRunError",
    "BonnieRecord",
    "GuestInfo",
    "Measurement",
    "bonnie_args",
    "guest_device",
    "native_run_dir",
    "parse_csv",
    "parse_csv_file",
    "parse_record",
    "read_guest_info",
    "run_native",
    "run_vm_bonnie",
]

BONNIE = "bonnie++"
CSV_FORMAT_VERSION = "1.98"
CSV_FIELD_COUNT = 50
JOB_SCRIPT = Path(__file__).resolve().parents[2] / "jobs" / "bonnie.sh"
MIN_TIME_S = 0.5  # bonnie.h MinTime: a test shorter than this prints +++++

# metric -> (0-based CSV field, bonnie's name for it, kind)
METRICS: dict[str, tuple[int, str, str]] = {
    "block_write_throughput": (11, "put_block", "throughput"),
    "block_write_cpu": (12, "put_block_cpu", "cpu"),
    "rewrite_throughput": (13, "rewrite", "throughput"),
    "rewrite_cpu": (14, "rewrite_cpu", "cpu"),
    "block_read_throughput": (17, "get_block", "throughput"),
    "block_read_cpu": (18, "get_block_cpu", "cpu"),
    "random_seeks": (19, "seeks", "seeks"),
    # Not seeks_cpu (field 20): the 5 seekers are threads, each reports the whole
    # process's getrusage over its own span and bonnie++ adds them up, so it reads
    # up to 5x too high (159-262 % seen on a 1-vCPU guest).
    "block_write_latency": (39, "put_block_latency", "latency"),
    "rewrite_latency": (40, "rewrite_latency", "latency"),
    "block_read_latency": (42, "get_block_latency", "latency"),
    "random_seeks_latency": (43, "seeks_latency", "latency"),
}
REQUIRED_METRICS: tuple[str, ...] = (
    "block_write_throughput", "block_write_cpu",
    "rewrite_throughput", "rewrite_cpu",
    "block_read_throughput", "block_read_cpu",
)
UNITS = {"throughput": "KiB/s", "cpu": "%", "seeks": "seeks/s", "latency": "us"}

_INT_RE = re.compile(r"^[0-9]+$")
_SEEKS_RE = re.compile(r"^[0-9]+(?:\.[0-9])?$")  # "%.0f" or "%.1f"
_LATENCY_RE = re.compile(r"^([0-9]+)(us|ms|s)$")
_LATENCY_SCALE = {"us": 1, "ms": 1_000, "s": 1_000_000}
_SIZE_RE = re.compile(r"^([0-9]+)([MG])$")


class BonnieParseError(ValueError):
    """bonnie++ output that is not a complete, usable 2.00a CSV result."""


class BonnieRunError(RuntimeError):
    """bonnie++ (natively or in the guest) did not run to a clean end."""


@dataclass(frozen=True)
class BonnieRecord:
    """One parsed CSV line."""
    format_version: str
    bonnie_version: str
    name: str
    concurrency: int
    file_size_mib: int
    measurements: list[Measurement]
    too_fast: tuple[str, ...] = ()   # metrics bonnie++ printed as +++++ / +++
    not_run: tuple[str, ...] = ()    # metrics whose field was empty

    def value(self, metric: str) -> float | None:
        for m in self.measurements:
            if m.metric == metric:
                return m.value
        return None


# --------------------------------------------------------------------------
# Command line


def bonnie_args(directory: os.PathLike | str, size_mib: int, ram_mib: int,
                label: str | None = None, *, user: str = "root") -> list[str]:
    """bonnie++'s options (without the program name), the same natively and in the guest.

    bonnie++ insists on -s >= 2 * -r (else it prints its usage and exits 1);
    that is checked here so that the mistake shows before a guest boots.
    """
    size_mib, ram_mib = int(size_mib), int(ram_mib)
    if size_mib <= 0:
        raise ValueError(f"bonnie++ size must be a positive number of MiB, not {size_mib}")
    if ram_mib < 0:
        raise ValueError(f"bonnie++ RAM size must be >= 0 MiB, not {ram_mib}")
    if ram_mib and size_mib < 2 * ram_mib:
        raise ValueError(f"bonnie++ needs -s >= 2 * -r: -s {size_mib} -r {ram_mib}")
    args = ["-d", os.fspath(directory), "-s", str(size_mib), "-r", str(ram_mib),
            "-n", "0", "-f", "-u", user, "-q"]
    if label:
        if "," in label or any(c.isspace() for c in label):
            raise ValueError(f"bonnie++ label {label!r} must not contain ',' or white space "
                             "(it becomes a CSV field)")
        args += ["-m", label]
    return args


# --------------------------------------------------------------------------
# CSV


def _number(fields: list[str], index: int, what: str, source: str, lineno: int,
            pattern: re.Pattern = _INT_RE) -> str:
    value = fields[index]
    if not pattern.match(value):
        raise BonnieParseError(f"{source}: line {lineno}: field {index} ({what}) is not a number: "
                               f"{value!r}")
    return value


def parse_record(text: str, source: str = "<bonnie++ output>", *,
                 required: Iterable[str] = REQUIRED_METRICS) -> BonnieRecord:
    """Parse bonnie++ 2.00a CSV output (exactly one result line; a header line is allowed).

    Raises BonnieParseError, with *source* and what is wrong in the message, for
    empty output, a cut-off line, a wrong format version, a wrong field count, a
    malformed value, or a metric of *required* that bonnie++ did not measure
    (+++++: faster than 0.5 s; empty: the test did not run).
    """
    required = tuple(required)
    unknown = [m for m in required if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown bonnie++ metric(s): {', '.join(unknown)}")
    if not text:
        raise BonnieParseError(f"{source}: empty (0 bytes): bonnie++ printed no result "
                               "(it prints only when all tests are done: killed or failed?)")
    if not text.strip():
        raise BonnieParseError(f"{source}: only white space: bonnie++ printed no result")
    lines = text.split("\n")
    if lines[-1] != "":
        raise BonnieParseError(f"{source}: line {len(lines)} does not end with a newline: "
                               "output cut off (bonnie++ killed while printing?)")
    data = [(n, line) for n, line in enumerate(lines[:-1], 1)
            if line.strip() and not line.startswith("format_version,")]
    if not data:
        raise BonnieParseError(f"{source}: no result line (only a header)")
    if len(data) > 1:
        raise BonnieParseError(f"{source}: {len(data)} result lines (lines "
                               f"{', '.join(str(n) for n, _ in data)}); expected one")
    lineno, line = data[0]
    fields = line.rstrip("\r").split(",")
    if fields[0] != CSV_FORMAT_VERSION:
        raise BonnieParseError(f"{source}: line {lineno}: format version {fields[0]!r}, expected "
                               f"{CSV_FORMAT_VERSION!r} (the CSV of bonnie++ 2.00a)")
    if len(fields) != CSV_FIELD_COUNT:
        cut = " (line cut off?)" if len(fields) < CSV_FIELD_COUNT else ""
        raise BonnieParseError(f"{source}: line {lineno}: {len(fields)} fields, expected "
                               f"{CSV_FIELD_COUNT}{cut}")
    concurrency = int(_number(fields, 3, "concurrency", source, lineno))
    size = _SIZE_RE.match(fields[5])
    if not size:
        raise BonnieParseError(f"{source}: line {lineno}: field 5 (file_size) is {fields[5]!r}, "
                               "expected a size like 512M or 1G (was -s given?)")
    file_size_mib = int(size.group(1)) * (1024 if size.group(2) == "G" else 1)

    measurements: list[Measurement] = []
    too_fast: list[str] = []
    not_run: list[str] = []
    for metric, (index, what, kind) in METRICS.items():
        raw = fields[index]
        if kind != "latency" and raw == ("+++" if kind == "cpu" else "+++++"):
            too_fast.append(metric)
            continue
        if raw == "":
            not_run.append(metric)
            continue
        if kind == "latency":
            m = _LATENCY_RE.match(raw)
            if not m:
                raise BonnieParseError(f"{source}: line {lineno}: field {index} ({what}) is not a "
                                       f"latency like 123us/45ms/6s: {raw!r}")
            value = float(int(m.group(1)) * _LATENCY_SCALE[m.group(2)])
        else:
            pattern = _SEEKS_RE if kind == "seeks" else _INT_RE
            value = float(_number(fields, index, what, source, lineno, pattern))
        measurements.append(Measurement(metric, value, UNITS[kind]))

    for metric in required:
        index, what, _ = METRICS[metric]
        if metric in too_fast:
            raise BonnieParseError(
                f"{source}: line {lineno}: {metric} (field {index}, {what}) is "
                f"{fields[index]!r}: too fast to measure, bonnie++ gives no number for a test "
                f"shorter than {MIN_TIME_S} s (use a larger -s than {fields[5]})")
        if metric in not_run:
            raise BonnieParseError(f"{source}: line {lineno}: {metric} (field {index}, {what}) is "
                                   "empty: the test did not run")
    return BonnieRecord(fields[0], fields[1], fields[2], concurrency, file_size_mib,
                        measurements, tuple(too_fast), tuple(not_run))


def parse_csv(text: str, source: str = "<bonnie++ output>", *,
              required: Iterable[str] = REQUIRED_METRICS) -> list[Measurement]:
    """The measurements of bonnie++ 2.00a CSV output; see :func:`parse_record`."""
    return parse_record(text, source, required=required).measurements


def parse_csv_file(path: os.PathLike | str, *,
                   required: Iterable[str] = REQUIRED_METRICS) -> BonnieRecord:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise BonnieParseError(f"{path}: missing: bonnie++ wrote no CSV file") from None
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise BonnieParseError(f"{path}: not text (byte {exc.start} is {raw[exc.start]:#04x})") \
            from None
    return parse_record(text, str(path), required=required)


def _check_size(record: BonnieRecord, size_mib: int, source: str) -> None:
    if record.file_size_mib != int(size_mib):
        raise BonnieRunError(f"{source}: bonnie++ reports a {record.file_size_mib} MiB file, "
                             f"but -s {size_mib} was asked for")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(unreadable)"
    return "\n".join(text.strip().splitlines()[-lines:]) or "(empty)"


# --------------------------------------------------------------------------
# Native


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
    (guestio.lifetime.run): an interrupted run stops bonnie++, removes its
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
    _check_size(record, size, str(csv_path))
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
            proc = lifetime.run(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                cwd=run_dir, timeout=timeout_s, preexec_fn=enter_cgroup)
        except FileNotFoundError:
            raise BonnieRunError(f"{BONNIE} not found on the host (apt-get install bonnie++)") \
                from None
        except subprocess.TimeoutExpired:
            raise BonnieRunError(f"native bonnie++ did not finish within {timeout_s} s "
                                 f"(killed; output in {outdir})") from None
    if proc.returncode != 0:
        raise BonnieRunError(f"native bonnie++ exited with status {proc.returncode} "
                             f"({outdir}); its stderr:\n{_tail(log_path)}")


# --------------------------------------------------------------------------
# Guest


def guest_device(interface: str) -> str:
    """The guest's block device for the only data disk on *interface*."""
    devices = {"ide": "/dev/sda", "virtio": "/dev/vda"}
    try:
        return devices[interface]
    except KeyError:
        raise ValueError(f"disk interface must be one of {', '.join(devices)}, "
                         f"not {interface!r}") from None


@dataclass(frozen=True)
class GuestInfo:
    """What bonnie.sh recorded beside the benchmark."""
    scheduler: str                   # the effective I/O scheduler (the one in brackets)
    schedulers: tuple[str, ...]      # all the kernel offered for the device
    clocksource: str                 # before bonnie++ ran
    clocksource_after: str           # after it ran ("" if not recorded)
    interrupts_before: str = field(repr=False, default="")
    interrupts_after: str = field(repr=False, default="")


def read_guest_info(results_dir: os.PathLike | str) -> GuestInfo:
    """Read scheduler.txt, clocksource*.txt and the /proc/interrupts snapshots of a guest run."""
    results = Path(results_dir)
    line = (results / "scheduler.txt").read_text().strip()
    effective = re.search(r"\[([^\]]+)\]", line)
    # A device without a queue scheduler choice prints just "none".
    scheduler = effective.group(1) if effective else line
    schedulers = tuple(s.strip("[]") for s in line.split())

    def read(name: str) -> str:
        with contextlib.suppress(FileNotFoundError):
            return (results / name).read_text()
        return ""

    return GuestInfo(scheduler, schedulers, (results / "clocksource.txt").read_text().strip(),
                     read("clocksource-after.txt").strip(),
                     read("interrupts-before.txt"), read("interrupts-after.txt"))


def run_vm_bonnie(*, kernel: os.PathLike | str, initrd: os.PathLike | str, append: str,
                  accel: str, memory_mib: int, data_disk: os.PathLike | str,
                  interface: str = "ide", cache: str = "none", size_mib: int, ram_mib: int,
                  io_scheduler: str | None = None, outdir: os.PathLike | str,
                  boot_timeout_s: float, job_timeout_s: float,
                  log: Callable[[str], None] | None = None, cpus: int = 1,
                  label: str | None = None, mount_opts: str | None = None,
                  machine_opts: str = "", required: Iterable[str] = REQUIRED_METRICS,
                  hooks: Iterable[Hooks] = (), qemu: str = QEMU_BINARY,
                  firmware_dir: str | None = None, run_label: str | None = None,
                  host_disk: os.PathLike | str | None = None,
                  ) -> tuple[RunResult, list[Measurement]]:
    """Run bonnie++ in a guest on a fresh copy of *data_disk*; return (RunResult, measurements).

    *data_disk* is a raw image holding an ext4 file system (guestio.build.disk.make_data_disk);
    it is copied sparsely to OUTDIR/data-disk.img, which the guest gets as its only disk
    (*interface* ide -> /dev/sda, virtio -> /dev/vda; QEMU cache mode *cache*) and which
    is deleted when the run is over, however it ends.  OUTDIR/params holds the job's
    parameters; the VM lifecycle writes its files there and the guest's files go to OUTDIR/results
    (bonnie.csv, bonnie.log, job.log, scheduler.txt, clocksource.txt, interrupts-*.txt).

    Raises VMRunError (naming OUTDIR, the job's error and the serial tail) if the run does
    not end "ok", BonnieParseError (naming OUTDIR/results/bonnie.csv) if the guest's CSV is
    unusable (*required*: see :func:`parse_record`).  *hooks* act around the run (the
    exitcount plugin, a KVM tracer: :class:`guestio.vm.hooks.Hooks`).  *host_disk*: a block
    device already holding a copy of *data_disk* (a loop device with a host I/O scheduler,
    guestio.workloads.hostdisk) that the guest gets instead of a fresh copy.
    """
    device = guest_device(interface)
    # The same options as natively; the job script spells them out the same way.
    bonnie_args("/mnt/data", size_mib, ram_mib, label)
    if io_scheduler is not None and not re.match(r"^[a-z0-9-]+$", io_scheduler):
        raise ValueError(f"I/O scheduler name {io_scheduler!r} is not valid")
    data_disk = Path(data_disk)
    if not data_disk.is_file():
        raise FileNotFoundError(2, "data disk image not found", str(data_disk))
    outdir = Path(outdir).absolute()
    outdir.mkdir(parents=True, exist_ok=True)

    params = {"DEVICE": device, "SIZE_MIB": str(int(size_mib)), "RAM_MIB": str(int(ram_mib))}
    if io_scheduler:
        params["IO_SCHEDULER"] = io_scheduler
    if mount_opts:
        params["MOUNT_OPTS"] = mount_opts
    if label:
        params["LABEL"] = label
    params_path = outdir / "params"
    params_path.write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in params.items()))

    copy = outdir / "data-disk.img"
    spec = VMSpec(kernel=Path(kernel), initrd=Path(initrd), append=append, accel=accel,
                  memory_mib=int(memory_mib), cpus=int(cpus), machine_opts=machine_opts,
                  job=JOB_SCRIPT, inputs={"params": params_path},
                  disks=[DiskSpec(path=copy, interface=interface, cache=cache, copy_of=data_disk)
                         if host_disk is None else DiskSpec(path=Path(host_disk), interface=interface, cache=cache)],
                  qemu=qemu, firmware_dir=firmware_dir)
    result = run_vm(spec, outdir, boot_timeout_s=boot_timeout_s, job_timeout_s=job_timeout_s,
                    log=log, hooks=hooks, label=run_label or f"bonnie++ in {outdir.name}")

    results = outdir / "results"
    if not result.ok:
        detail = ""
        job_log = results / "job.log"
        if job_log.is_file():
            errors = [ln for ln in job_log.read_text(errors="replace").splitlines()
                      if "error" in ln.lower()]
            detail = "; job log: " + (" | ".join(errors[-3:]) if errors else _tail(job_log, 3))
        raise VMRunError(f"bonnie++ guest run in {outdir}", result, outdir, detail)
    record = parse_csv_file(results / "bonnie.csv", required=required)
    _check_size(record, size_mib, str(results / "bonnie.csv"))
    return result, record.measurements
