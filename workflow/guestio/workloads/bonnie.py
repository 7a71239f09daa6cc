"""bonnie++ 2.00a for Fig 1, Fig 2 and Fig 6: one command line, its CSV, native and guest runs.

Natively and in the guest bonnie++ gets the same options (:func:`bonnie_args`):
``-d DIR -s SIZE_MIB -r RAM_MIB -n 0 -f -u root -q [-m LABEL]``, i.e. sequential
block write, rewrite and block read of one SIZE_MIB file (``-f`` skips the
per-character tests, ``-n 0`` the file-creation tests; the random-seek test
always runs).  With ``-q`` bonnie++ writes exactly its CSV line to stdout and
the human-readable table to stderr; both are kept (``bonnie.csv``,
``bonnie.log``).

This module holds the command line and the parser; the runs are beside it:

* :func:`guestio.workloads.bonnie_native.run_native` runs bonnie++ directly on the host, in a
  directory on the host's own file system under the project's build directory (storage comparable
  to the guest's: the paper compared the guest with the host's disk),
  with the same -s/-r as the guest.
* :func:`guestio.workloads.bonnie_vm.run_vm_bonnie` runs ``workflow/jobs/bonnie.sh`` in a guest on a fresh
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

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from guestio.analysis.measurements import Measurement

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


def check_size(record: BonnieRecord, size_mib: int, source: str) -> None:
    if record.file_size_mib != int(size_mib):
        raise BonnieRunError(f"{source}: bonnie++ reports a {record.file_size_mib} MiB file, "
                             f"but -s {size_mib} was asked for")


def output_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(unreadable)"
    return "\n".join(text.strip().splitlines()[-lines:]) or "(empty)"
