"""The VM lifecycle: one QEMU process from launch to reap, and how its job ended.

The contract with the guest (see the guest image): its /init prints
``GUESTIO: init started`` on the serial console, runs the shell script it
finds in fw_cfg ``opt/guestio/job`` (with the jobs' shared ``lib.sh`` beside it
in ``/guestio/in``), prints ``GUESTIO: job finished status=N``,
writes ``tar -cf - -C /guestio/out .`` into the virtio-serial port
``org.guestio.results`` and powers off.

:class:`Machine` starts QEMU paused (``-S``) with QMP on a private unix socket,
sends ``cont``, follows the serial log, and ends in one of the statuses of
:data:`STATUSES`.  Whatever happens, QEMU (and its process group) is stopped
and reaped, and scratch disk copies are deleted, before the run returns or
raises: QMP ``quit``, then SIGTERM, then SIGKILL.  :class:`Hooks` let a caller
act around the run: add QEMU arguments, start host-side work once QEMU runs
(its pid and QMP connection), follow the guest's job start, named phases and
job end, and tidy up after shutdown.  :func:`run_vm` is the one-call form.  SIGTERM/SIGINT/SIGHUP received meanwhile are held back until
QEMU is gone and are then re-delivered with the handler that was installed
before, so the caller dies (or raises ``KeyboardInterrupt``) as it would have.

The design follows QEMU's python/qemu/machine (launch with -S, Python is the
QMP server, escalating shutdown), reduced to what this pipeline needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import inspect
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Literal

from qemu.qmp import EventListener, QMPClient, Runstate

__all__ = [
    "DiskSpec",
    "NicSpec",
    "VMSpec",
    "RunResult",
    "VMSpecError",
    "VMRunError",
    "Hooks",
    "Machine",
    "STATUSES",
    "build_qemu_argv",
    "run_vm",
    "load_run",
    "last_serial_line",
]

logger = logging.getLogger(__name__)

QEMU_BINARY = "qemu-system-x86_64"

#: Statuses a returned :class:`RunResult` can have.
STATUSES = (
    "ok",               # job ran, exit_status 0, results collected
    "job-failed",       # job ran and exited non-zero
    "boot-timeout",     # no "GUESTIO: init started" within boot_timeout_s
    "job-timeout",      # no "GUESTIO: job finished" within job_timeout_s after init
    "panic",            # kernel panic / Oops / BUG on the serial console
    "qemu-failed",      # QEMU did not start, crashed, or the guest died before init
    "results-missing",  # guest stopped without delivering a readable results tar
)
#: Extra statuses that only appear in run.json, when run_vm raises instead of returning.
RAISED_STATUSES = ("interrupted", "runner-error")

INIT_MARKER = "GUESTIO: init started"
GUEST_ERROR_MARKER = "GUESTIO: error:"  # the guest init reports setup failures like this
JOB_STARTED_MARKER = "GUESTIO: job started"
JOB_FINISHED_RE = re.compile(r"GUESTIO: job finished status=(-?\d+)")
# A job names a window of itself: echo "GUESTIO: phase NAME" >/dev/kmsg (the plugin's phases too).
PHASE_RE = re.compile(r"GUESTIO: phase ([A-Za-z0-9_.:-]{1,63})\s*$")
# Kernel messages start with "[    1.234567] " (and "[    T1] " with PRINTK_CALLER).
PANIC_RE = re.compile(r"^(?:\[[^\]]*\]\s*)*(?:Kernel panic - not syncing|Oops:|BUG:)")

RESULTS_PORT = "org.guestio.results"
FW_CFG_PREFIX = "opt/guestio/"
FW_CFG_NAME_MAX = 55  # QEMU: FW_CFG_MAX_FILE_PATH (56) including the NUL
# What every job sources (fail, load_params, the tick window): delivered beside each job as
# fw_cfg opt/guestio/lib.sh, so the guest finds it at $GUESTIO_IN/lib.sh.
JOB_LIB = Path(__file__).resolve().parents[2] / "jobs" / "lib.sh"
_RESERVED_INPUTS = ("job", JOB_LIB.name)

# Timing knobs (seconds).  Module-level so that tests/callers can adjust them.
POLL_S = 0.1                # serial/process polling period
QMP_CONNECT_TIMEOUT_S = 30  # QEMU start until its QMP connection is accepted
QMP_COMMAND_TIMEOUT_S = 5   # any single QMP command
POWEROFF_GRACE_S = 30       # "job finished" until QEMU has exited
QUIT_WAIT_S = 5             # QMP quit -> wait
TERM_WAIT_S = 5             # SIGTERM  -> wait
KILL_WAIT_S = 30            # SIGKILL  -> wait (only a D-state process outlives this)
PROGRESS_EVERY_S = 30       # "still booting"/"job running" progress lines
STDERR_TAIL_CHARS = 2000

_UNIX_PATH_MAX = 107  # sun_path is 108 bytes including the NUL
_FW_CFG_NAME_RE = re.compile(r"^[A-Za-z0-9._-]+$")
_NIC_MODELS = ("e1000", "rtl8139", "virtio-net-pci")
_DISK_INTERFACES = ("ide", "virtio")


class VMSpecError(ValueError):
    """The VM specification is invalid (bad value, unknown model, ...)."""


class VMRunError(RuntimeError):
    """A VM run did not end "ok": the one error for every way a guest job can fail.

    The message names the run, its status and reason, the last serial lines and
    where the run's files are; ``result`` and ``outdir`` carry the same.
    """

    def __init__(self, label: str, result: "RunResult", outdir: Path, detail: str = ""):
        self.label, self.result, self.outdir = label, result, Path(outdir)
        tail = "\n    ".join(serial_tail(self.outdir / "serial.log", 8))
        super().__init__(f"{label}: {result.status}: {result.reason}{detail}\n"
                         f"  run files: {self.outdir} (serial.log, qemu-stderr.log, run.json)\n"
                         f"  last serial lines:\n    {tail}")


class Hooks:
    """What a caller does around one run.  Override what you need.

    Called in this order: :meth:`qemu_args` (before launch), :meth:`after_launch`
    (QEMU runs, paused; ``machine.pid`` and ``machine.qmp`` are set),
    :meth:`job_started`, :meth:`phase` (each "GUESTIO: phase NAME"),
    :meth:`job_finished`, and :meth:`after_shutdown` (QEMU reaped).  Every hook
    whose after_launch ran gets after_shutdown, however the run ended, also on
    a signal.  Guest events are seen on the serial log, so they reach a hook
    within about ``POLL_S`` of the guest printing them.  A method may return an
    awaitable (for example to use ``machine.qmp``); it is awaited.  An exception
    in a hook ends the run as "runner-error" and is raised after cleanup.
    """

    def qemu_args(self, machine: "Machine") -> list[str]:
        return []

    def after_launch(self, machine: "Machine") -> Any:
        pass

    def job_started(self, machine: "Machine") -> Any:
        pass

    def phase(self, machine: "Machine", name: str) -> Any:
        pass

    def job_finished(self, machine: "Machine", status: int) -> Any:
        pass

    def after_shutdown(self, machine: "Machine", result: "RunResult") -> None:
        pass


@dataclass
class DiskSpec:
    path: Path
    interface: Literal["ide", "virtio"] = "virtio"
    cache: str = "none"  # none | writeback | writethrough | directsync | unsafe
    format: str = "raw"
    # A pristine image: the run gets a fresh sparse copy of it at *path*, deleted when it ends.
    copy_of: Path | None = None


@dataclass
class NicSpec:
    model: Literal["e1000", "rtl8139", "virtio-net-pci"] = "virtio-net-pci"
    netdev: str = "user"  # backend and its options, e.g. "user" or "user,restrict=on"


@dataclass
class VMSpec:
    kernel: Path
    initrd: Path
    append: str
    accel: Literal["tcg", "kvm"] = "tcg"
    memory_mib: int = 512
    machine: str = "pc"
    machine_opts: str = ""  # appended to -machine, e.g. "kernel_irqchip=on"
    cpus: int = 1
    job: Path | None = None  # shell script -> fw_cfg opt/guestio/job
    inputs: dict[str, Path] = field(default_factory=dict)  # -> fw_cfg opt/guestio/<name>
    disks: list[DiskSpec] = field(default_factory=list)
    nics: list[NicSpec] = field(default_factory=list)
    extra_args: list[str] = field(default_factory=list)
    qemu: str = QEMU_BINARY            # the QEMU binary (a built one: guestio.build.qemu)
    firmware_dir: str | None = None    # -L: where that QEMU finds SeaBIOS and option ROMs

    def validate(self) -> None:
        """Raise VMSpecError for bad values, FileNotFoundError for missing files."""
        if self.accel not in ("tcg", "kvm"):
            raise VMSpecError(f"accel must be 'tcg' or 'kvm', not {self.accel!r}")
        if int(self.memory_mib) <= 0:
            raise VMSpecError(f"memory_mib must be positive, not {self.memory_mib!r}")
        if int(self.cpus) < 1:
            raise VMSpecError(f"cpus must be >= 1, not {self.cpus!r}")
        for name in self.inputs:
            if name in _RESERVED_INPUTS or not _FW_CFG_NAME_RE.match(name):
                raise VMSpecError(
                    f"input name {name!r} is not usable as fw_cfg {FW_CFG_PREFIX}<name>"
                    " (letters, digits, '.', '_', '-'; 'job' and 'lib.sh' are reserved)")
            if len(FW_CFG_PREFIX + name) > FW_CFG_NAME_MAX:
                raise VMSpecError(f"input name {name!r} is too long for fw_cfg "
                                  f"(max {FW_CFG_NAME_MAX - len(FW_CFG_PREFIX)} chars)")
        for disk in self.disks:
            if disk.interface not in _DISK_INTERFACES:
                raise VMSpecError(f"disk interface must be one of {_DISK_INTERFACES}, "
                                  f"not {disk.interface!r} ({disk.path})")
        if sum(d.interface == "ide" for d in self.disks) > 4:
            raise VMSpecError("at most 4 IDE disks fit on the pc machine's two IDE buses")
        for nic in self.nics:
            if nic.model not in _NIC_MODELS:
                raise VMSpecError(f"NIC model must be one of {_NIC_MODELS}, not {nic.model!r}")

        files = [("kernel image", self.kernel), ("initrd", self.initrd)]
        if self.job is not None:
            files.append(("job script", self.job))
        files += [(f"input {name!r}", p) for name, p in self.inputs.items()]
        files += [("disk image", d.copy_of or d.path) for d in self.disks
                  if not (d.copy_of is None and Path(d.path).is_block_device())]  # a loop device (hostdisk)
        for what, path in files:
            if not Path(path).is_file():
                raise FileNotFoundError(2, f"VM {what} not found (or not a regular file)",
                                        str(path))

    def to_json(self) -> dict[str, Any]:
        return _jsonable(dataclasses.asdict(self))


@dataclass
class RunResult:
    status: str          # one of STATUSES
    reason: str          # human-readable explanation ("" for ok)
    exit_status: int | None = None  # the job's exit status, when known
    boot_s: float | None = None     # cont -> "GUESTIO: init started"
    job_s: float | None = None      # init started -> "GUESTIO: job finished"
    wall_s: float | None = None     # QEMU start -> QEMU reaped
    qemu_returncode: int | None = None  # negative: killed by that signal

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict[str, Any]:
        return _jsonable(dataclasses.asdict(self))


def load_run(path: Path | str) -> tuple[RunResult, dict[str, Any]]:
    """Read a run.json written by run_vm: (RunResult, spec as a JSON dict)."""
    data = json.loads(Path(path).read_text())
    names = {f.name for f in dataclasses.fields(RunResult)}
    return RunResult(**{k: v for k, v in data["result"].items() if k in names}), data["spec"]


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def _opt(value: Path | str) -> str:
    """Escape a value for a QEMU 'key=value,...' option list (',' -> ',,')."""
    return os.fspath(value).replace(",", ",,")


def build_qemu_argv(spec: VMSpec, serial_log: Path, qmp_socket: Path,
                    results_tar: Path) -> list[str]:
    """The QEMU command line for *spec* (QMP: QEMU connects to our server socket)."""
    machine = f"{spec.machine},accel={spec.accel}"
    if spec.machine_opts:
        machine += f",{spec.machine_opts}"
    argv = [spec.qemu, *(["-L", spec.firmware_dir] if spec.firmware_dir else []),
        "-nodefaults", "-no-user-config", "-nographic", "-display", "none",
        "-no-reboot", "-S",
        "-machine", machine,
        "-m", str(int(spec.memory_mib)),
        "-smp", str(int(spec.cpus)),
        "-kernel", os.fspath(spec.kernel),
        "-initrd", os.fspath(spec.initrd),
        "-append", spec.append,
        "-chardev", f"socket,id=qmp0,path={_opt(qmp_socket)}",
        "-mon", "chardev=qmp0,mode=control",
        "-chardev", f"file,id=serial0,path={_opt(serial_log)}",
        "-serial", "chardev:serial0",
        "-device", "virtio-serial-pci,id=vser0",
        "-chardev", f"file,id=results,path={_opt(results_tar)}",
        "-device", f"virtserialport,bus=vser0.0,chardev=results,name={RESULTS_PORT}",
    ]
    if spec.job is not None:
        argv += ["-fw_cfg", f"name={FW_CFG_PREFIX}job,file={_opt(spec.job)}",
                 "-fw_cfg", f"name={FW_CFG_PREFIX}{JOB_LIB.name},file={_opt(JOB_LIB)}"]
    for name, path in spec.inputs.items():
        argv += ["-fw_cfg", f"name={FW_CFG_PREFIX}{name},file={_opt(path)}"]
    n_ide = 0
    for i, disk in enumerate(spec.disks):
        argv += ["-drive", f"file={_opt(disk.path)},format={disk.format},if=none,"
                           f"id=disk{i},cache={disk.cache}"]
        if disk.interface == "ide":
            bus, unit = divmod(n_ide, 2)
            n_ide += 1
            argv += ["-device", f"ide-hd,drive=disk{i},bus=ide.{bus},unit={unit}"]
        else:
            argv += ["-device", f"virtio-blk-pci,drive=disk{i}"]
    for i, nic in enumerate(spec.nics):
        # romfile= : direct kernel boot needs no PXE option ROM.
        argv += ["-netdev", f"{nic.netdev},id=net{i}",
                 "-device", f"{nic.model},netdev=net{i},romfile="]
    argv += list(spec.extra_args)
    return argv


# --------------------------------------------------------------------------
# Signals


class _Interrupted(BaseException):
    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class _SignalGuard:
    """Catch SIGTERM/SIGINT/SIGHUP while a VM runs; re-deliver them afterwards.

    The handler only records the signal; the supervision loop polls it and
    unwinds through the normal cleanup.  Signals that were ignored stay
    ignored.  Outside the main thread no handlers can be installed; QEMU is
    then still protected by PR_SET_PDEATHSIG.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum

    def __enter__(self) -> _SignalGuard:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                old = signal.getsignal(sig)
                if old is signal.SIG_IGN:
                    continue
                self._old[sig] = old
                signal.signal(sig, self._handler)
        return self

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
        self._old.clear()

    def __exit__(self, *exc: Any) -> None:
        self.restore()

    def redeliver(self) -> None:
        """Restore the old handlers and raise the recorded signal again."""
        self.restore()
        if self.signum is not None:
            signal.raise_signal(self.signum)


# --------------------------------------------------------------------------
# Process helpers


def _pdeathsig_preexec(parent_pid: int) -> Callable[[], None]:
    """Child setup: die with SIGKILL if the (thread of the) parent goes away."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):  # pragma: no cover - non-glibc
        prctl = None

    def preexec() -> None:
        if prctl is not None:
            prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
            if os.getppid() != parent_pid:  # parent died before prctl
                os._exit(1)

    return preexec


def _peek_exit(pid: int) -> int | None:
    """Returncode of *pid* if it has exited, without reaping it (WNOWAIT).

    Leaving the zombie in place keeps the pid and process group id from being
    reused until we killpg() the group and reap it in _stop_process().
    """
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:  # already reaped
        return -1
    if info is None:
        return None
    if info.si_code == os.CLD_EXITED:
        return info.si_status
    return -info.si_status


def _tail(path: Path, chars: int = STDERR_TAIL_CHARS) -> str:
    try:
        data = path.read_bytes()[-chars * 4:]
    except OSError:
        return ""
    return data.decode("utf-8", "replace").strip()[-chars:]


_ANSI_RE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b.|[\x00-\x08\x0b-\x1f\x7f]")


def last_serial_line(path: Path) -> str:
    """Last non-empty serial line, without terminal escapes (SeaBIOS clears the screen)."""
    for line in reversed(_tail(path, 4000).splitlines()):
        line = _ANSI_RE.sub("", line).strip()
        if line:
            return line
    return "(none)"


class _SerialFollower:
    """Incrementally read complete lines from the growing serial log."""

    def __init__(self, path: Path):
        self.path = path
        self._f = None
        self._partial = b""

    def lines(self, final: bool = False) -> list[str]:
        if self._f is None:
            try:
                self._f = open(self.path, "rb")
            except FileNotFoundError:
                return []
        data = self._partial + self._f.read()
        *complete, self._partial = data.split(b"\n")
        if final and self._partial:
            complete.append(self._partial)
            self._partial = b""
        return [c.decode("utf-8", "replace").rstrip("\r") for c in complete]

    def close(self) -> None:
        if self._f is not None:
            self._f.close()


# --------------------------------------------------------------------------
# Results


class _UnsafeTar(Exception):
    pass


def _extract_results(tar_path: Path, dest: Path) -> list[str]:
    """Extract regular files and directories only; refuse absolute and '..' paths."""
    dest.mkdir(parents=True, exist_ok=True)
    extracted = []
    with tarfile.open(tar_path, mode="r:*") as tf:
        for member in tf:
            posix = PurePosixPath(member.name)
            if posix.is_absolute() or ".." in posix.parts:
                raise _UnsafeTar(f"unsafe path in results tar: {member.name!r}")
            parts = [p for p in posix.parts if p not in ("", ".")]
            if not parts:
                continue
            target = dest.joinpath(*parts)
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
            elif member.isreg():
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tf.extractfile(member)
                assert src is not None
                with src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                target.chmod(0o755 if member.mode & 0o111 else 0o644)
                extracted.append("/".join(parts))
            else:
                logger.warning("results tar: skipping non-regular member %r", member.name)
    return extracted


# --------------------------------------------------------------------------
# The run


_OUTPUT_FILES = ("qemu-cmdline.json", "qemu-stderr.log", "serial.log",
                 "qmp-events.jsonl", "run.json")


class Machine:
    """One QEMU process from launch to reap, running one guest job.

    ::

        with Machine(spec, outdir, boot_timeout_s=120, job_timeout_s=900, hooks=[tracer]) as vm:
            result = vm.run()          # a RunResult for every way the run can end
        # or: vm.run(check=True) raises VMRunError unless the result is "ok"

    Writes to *outdir*: qemu-cmdline.json, qemu-stderr.log, serial.log,
    qmp-events.jsonl, results/ (what the guest sent back) and, last, run.json
    ({"result": RunResult, "spec": VMSpec}).  Disks with ``copy_of`` get a fresh
    sparse copy at their path that is deleted when the run ends, however it ends.
    SIGTERM/SIGINT/SIGHUP during the run stop QEMU, run.json gets status
    "interrupted", and the signal is re-delivered to the handler installed
    before (normally ending the process or raising KeyboardInterrupt) when the
    ``with`` block is left.  Must not be used from a running asyncio event loop.
    """

    def __init__(self, spec: VMSpec, outdir: Path | str, *, boot_timeout_s: float,
                 job_timeout_s: float, log: Callable[[str], None] | None = None,
                 hooks: Iterable[Hooks] = (), label: str | None = None):
        self.spec = spec
        self.outdir = Path(outdir).absolute()
        self.boot_timeout_s = boot_timeout_s
        self.job_timeout_s = job_timeout_s
        self.say = log if log is not None else logger.info
        self.hooks = list(hooks)
        self.label = label or self.outdir.name
        self.serial_log = self.outdir / "serial.log"
        self.stderr_log = self.outdir / "qemu-stderr.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.qmp: QMPClient | None = None
        self.result: RunResult | None = None
        self.t_start: float | None = None
        self.t_cont: float | None = None
        self.t_init: float | None = None
        self.t_job_start: float | None = None
        self.t_job: float | None = None
        self.serial_status: int | None = None
        self.shutdown_reason: str | None = None
        self.guest_error: str | None = None
        self._launched_hooks: list[Hooks] = []
        self._copies: list[Path] = []
        self._entered = False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    # -- context: everything that must be undone -----------------------------

    def __enter__(self) -> Machine:
        self.spec.validate()
        self.outdir.mkdir(parents=True, exist_ok=True)
        _clear_outputs(self.outdir)
        self.guard = _SignalGuard().__enter__()
        self._entered = True
        try:
            self._events_f = open(self.outdir / "qmp-events.jsonl", "w")
            self._stderr_f = open(self.stderr_log, "wb")
            self.tmpdir = _private_tmpdir()
            self.qmp_socket = self.tmpdir / "qmp.sock"
            self.results_tar = self.tmpdir / "results.tar"
            for disk in self.spec.disks:
                if disk.copy_of is not None:
                    self._copies.append(Path(disk.path))
                    _copy_sparse(Path(disk.copy_of), Path(disk.path))
            self.argv = build_qemu_argv(self.spec, self.serial_log, self.qmp_socket,
                                        self.results_tar)
            for hook in self.hooks:
                self.argv += list(hook.qemu_args(self))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        if not self._entered:
            return
        self._entered = False
        try:
            self.stop_process()
        finally:
            self.close()
            for copy in self._copies:
                with contextlib.suppress(FileNotFoundError):
                    copy.unlink()
            self.guard.restore()
        if self.guard.signum is not None and exc[0] is None:
            self.guard.redeliver()
            # Still here: the old handler neither exited nor raised.
            raise KeyboardInterrupt(f"{signal.Signals(self.guard.signum).name} during a VM run")

    def run(self, check: bool = False) -> RunResult:
        """Boot, run the job, collect results, stop QEMU; the RunResult (run.json too)."""
        if not self._entered:
            raise RuntimeError("Machine.run() outside its 'with' block")
        spec, say = self.spec, self.say
        say(f"booting {self.label} under {spec.accel} ({spec.memory_mib} MiB, "
            f"{spec.cpus} vCPU, kernel {Path(spec.kernel).name}, {spec.qemu})...")
        _write_json(self.outdir / "qemu-cmdline.json", self.argv)
        result: RunResult | None = None
        extra_status: tuple[str, str] | None = None
        try:
            try:
                result = asyncio.run(self._main())
            finally:
                self.stop_process()
        except _Interrupted as exc:
            name = signal.Signals(exc.signum).name
            say(f"{name} received: QEMU stopped, run abandoned")
            extra_status = ("interrupted", f"{name} received")
        except BaseException as exc:
            extra_status = ("runner-error", f"{type(exc).__name__}: {exc}")
            raise
        finally:
            if self.guard.signum is not None and extra_status is None:
                # Signal arrived after the run had ended, during cleanup.
                extra_status = ("interrupted", f"{signal.Signals(self.guard.signum).name} received")
                result = None
            if result is None:
                result = self._result(*(extra_status or ("runner-error", "no result")))
            result.qemu_returncode = self.proc.returncode if self.proc is not None else None
            if self.t_start is not None:
                result.wall_s = round(time.monotonic() - self.t_start, 3)
            self.serial_log.touch()
            self.result = result
            _write_json(self.outdir / "run.json", {"result": result.to_json(),
                                                   "spec": spec.to_json()})
            self._after_shutdown(result)
        if self.guard.signum is not None:
            return result  # __exit__ re-delivers the signal
        if result.status == "ok":
            say(f"run ok: boot {result.boot_s:.1f} s, job {result.job_s:.1f} s, "
                f"wall {result.wall_s:.1f} s")
        else:
            say(f"run ended with status {result.status}: {result.reason}")
            if check:
                raise VMRunError(self.label, result, self.outdir)
        return result

    def _after_shutdown(self, result: RunResult) -> None:
        errors = []
        for hook in reversed(self._launched_hooks):
            try:
                hook.after_shutdown(self, result)
            except Exception as exc:  # every hook gets its turn to tidy up
                errors.append(exc)
        self._launched_hooks.clear()
        if errors:
            raise errors[0]

    async def _call_hooks(self, method: str, *args: Any) -> None:
        for hook in list(self._launched_hooks):
            value = getattr(hook, method)(self, *args)
            if inspect.isawaitable(value):
                await value

    # -- small helpers ------------------------------------------------------

    def _exited(self) -> int | None:
        assert self.proc is not None
        if self.proc.returncode is not None:
            return self.proc.returncode
        return _peek_exit(self.proc.pid)

    def _check_signal(self) -> None:
        if self.guard.signum is not None:
            raise _Interrupted(self.guard.signum)

    def _record_event(self, event: Any) -> None:
        ev = dict(event)
        if ev.get("event") == "SHUTDOWN":
            self.shutdown_reason = (ev.get("data") or {}).get("reason")
        self._events_f.write(json.dumps(ev, sort_keys=True) + "\n")
        self._events_f.flush()

    def _result(self, status: str, reason: str, **kw: Any) -> RunResult:
        def since(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else round(b - a, 3)
        return RunResult(status=status, reason=reason,
                         boot_s=since(self.t_cont, self.t_init),
                         job_s=since(self.t_init, self.t_job), **kw)

    def _qemu_failed(self, what: str) -> RunResult:
        rc = self._exited()
        msg = what if rc is None else f"{what} (QEMU exit status {rc})"
        tail = _tail(self.stderr_log)
        return self._result("qemu-failed", f"{msg}: {tail}" if tail else msg)

    # -- async part: QMP, supervision ----------------------------------------

    async def _main(self) -> RunResult:
        qmp = self.qmp = QMPClient(self.outdir.name or "guestio")
        listener = EventListener()
        qmp.register_listener(listener)
        await qmp.start_server(str(self.qmp_socket))
        try:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=self._stderr_f,
                stderr=self._stderr_f, start_new_session=True,
                preexec_fn=_pdeathsig_preexec(os.getpid()))
            self.t_start = time.monotonic()
            failure = await self._accept(qmp)
            if failure is not None:
                return failure
            for hook in self.hooks:
                self._launched_hooks.append(hook)
                value = hook.after_launch(self)
                if inspect.isawaitable(value):
                    await value
            try:
                await asyncio.wait_for(qmp.execute("cont"), QMP_COMMAND_TIMEOUT_S)
            except Exception as exc:  # QEMU died or hung
                await self._wait_exit(2)
                return self._qemu_failed(f"QMP 'cont' failed ({type(exc).__name__}: {exc})")
            self.t_cont = time.monotonic()
            return await self._supervise(listener)
        finally:
            try:
                await self._quit(qmp)
            finally:
                for ev in listener.clear():
                    self._record_event(ev)
                with contextlib.suppress(Exception, asyncio.TimeoutError):
                    await asyncio.wait_for(qmp.disconnect(), QMP_COMMAND_TIMEOUT_S)

    async def _accept(self, qmp: QMPClient) -> RunResult | None:
        """Wait for QEMU to connect to our QMP socket; a RunResult on failure."""
        task = asyncio.ensure_future(qmp.accept())
        deadline = time.monotonic() + QMP_CONNECT_TIMEOUT_S
        failure = None
        try:
            while not task.done():
                self._check_signal()
                if self._exited() is not None:
                    failure = self._qemu_failed("QEMU exited during startup")
                    break
                if time.monotonic() > deadline:
                    failure = self._qemu_failed(
                        f"QEMU did not connect to QMP within {QMP_CONNECT_TIMEOUT_S} s")
                    break
                await asyncio.wait({task}, timeout=POLL_S)
            else:
                try:
                    task.result()
                except Exception as exc:
                    if await self._wait_exit(2) is not None:
                        failure = self._qemu_failed("QEMU exited during startup")
                    else:
                        failure = self._qemu_failed(
                            f"QMP handshake failed ({type(exc).__name__}: {exc})")
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        return failure

    async def _wait_exit(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while (rc := self._exited()) is None and time.monotonic() < deadline:
            await asyncio.sleep(POLL_S)
        return rc

    async def _quit(self, qmp: QMPClient) -> None:
        """First shutdown step: QMP quit, then give QEMU QUIT_WAIT_S to exit."""
        if self.proc is None or self._exited() is not None:
            return
        if qmp.runstate == Runstate.RUNNING:
            with contextlib.suppress(Exception, asyncio.TimeoutError):
                await asyncio.wait_for(qmp.execute("quit"), QMP_COMMAND_TIMEOUT_S)
        if await self._wait_exit(QUIT_WAIT_S) is None:
            self.say(f"QEMU (pid {self.proc.pid}) still running {QUIT_WAIT_S} s after QMP quit")

    async def _supervise(self, listener: EventListener) -> RunResult:
        follower = _SerialFollower(self.serial_log)
        last_progress = time.monotonic()
        try:
            while True:
                self._check_signal()
                for ev in listener.clear():
                    self._record_event(ev)
                rc = self._exited()  # before reading serial: see all output on exit
                for line in follower.lines(final=rc is not None):
                    if PANIC_RE.match(line):
                        self.say(f"guest panicked: {line.strip()}")
                        return self._result("panic", line.strip())
                    now = time.monotonic()
                    if self.guest_error is None and GUEST_ERROR_MARKER in line:
                        self.guest_error = _ANSI_RE.sub("", line).strip()
                        self.say(f"guest reported: {self.guest_error}")
                    if self.t_init is None and INIT_MARKER in line:
                        self.t_init = now
                        self.say(f"init reached after {now - self.t_cont:.1f} s")
                    elif self.t_job_start is None and JOB_STARTED_MARKER in line:
                        self.t_job_start = now
                        await self._call_hooks("job_started")
                    elif self.t_job is None and (m := PHASE_RE.search(line)):
                        self.say(f"job phase {m.group(1)}")
                        await self._call_hooks("phase", m.group(1))
                    elif self.t_job is None and (m := JOB_FINISHED_RE.search(line)):
                        self.t_job = now
                        self.serial_status = int(m.group(1))
                        since = now - (self.t_init or self.t_cont)
                        self.say(f"job finished status {self.serial_status} after {since:.1f} s")
                        await self._call_hooks("job_finished", self.serial_status)
                if rc is not None:
                    for ev in listener.clear():
                        self._record_event(ev)
                    return self._after_exit(rc)

                now = time.monotonic()
                if self.t_init is None:
                    if now - self.t_cont > self.boot_timeout_s:
                        return self._timeout("boot-timeout", "guest did not reach init within "
                                             f"{self.boot_timeout_s:g} s")
                elif self.t_job is None:
                    if now - self.t_init > self.job_timeout_s:
                        return self._timeout("job-timeout", "job did not finish within "
                                             f"{self.job_timeout_s:g} s")
                elif now > max(self.t_init + self.job_timeout_s, self.t_job + POWEROFF_GRACE_S):
                    return self._timeout(
                        "results-missing",
                        f"job finished (status {self.serial_status}) but the guest did not "
                        "power off in time")
                if now - last_progress >= PROGRESS_EVERY_S:
                    last_progress = now
                    if self.t_init is None:
                        self.say(f"still booting after {now - self.t_cont:.0f} s "
                                 f"(boot timeout {self.boot_timeout_s:g} s)")
                    elif self.t_job is None:
                        self.say(f"job running for {now - self.t_init:.0f} s "
                                 f"(job timeout {self.job_timeout_s:g} s)")
                    else:
                        self.say("waiting for the guest to power off")
                await asyncio.sleep(POLL_S)
        finally:
            follower.close()

    def _serial_context(self) -> str:
        """What the serial log says about a failure: the guest's error, else its last line."""
        if self.guest_error is not None:
            return f"guest reported {self.guest_error!r}"
        return f"last serial line: {last_serial_line(self.serial_log)}"

    def _timeout(self, status: str, what: str) -> RunResult:
        self.say(f"{status}: {what}")
        return self._result(status, f"{what}; {self._serial_context()}")

    def _after_exit(self, rc: int) -> RunResult:
        """QEMU exited by itself: classify, and collect the results."""
        how = f"QEMU exit status {rc}, shutdown reason {self.shutdown_reason or 'unknown'}"
        context = self._serial_context()
        if rc != 0:
            return self._qemu_failed("QEMU exited unexpectedly")
        if self.t_init is None:
            return self._result("qemu-failed",
                                f"guest stopped before reaching init ({how}); {context}")
        if self.t_job is None:
            return self._result("results-missing",
                                "guest stopped before 'GUESTIO: job finished' "
                                f"({how}); {context}")
        results = self.outdir / "results"
        try:
            files = _extract_results(self.results_tar, results)
        except (tarfile.TarError, _UnsafeTar, OSError) as exc:
            size = self.results_tar.stat().st_size if self.results_tar.exists() else 0
            reason = f"cannot read results tar ({size} bytes): {exc}"
            if self.guest_error is not None:
                reason += f"; {context}"
            return self._result("results-missing", reason, exit_status=self.serial_status)
        self.say(f"guest powered off; {len(files)} result file(s) in {results}")
        try:
            exit_status = int((results / "exit_status").read_text().strip())
        except (OSError, ValueError) as exc:
            return self._result("results-missing", f"results/exit_status unreadable: {exc}",
                                exit_status=self.serial_status)
        note = ""
        if self.serial_status is not None and exit_status != self.serial_status:
            note = (f" (serial console said status={self.serial_status}, "
                    f"results/exit_status says {exit_status})")
        if exit_status != 0:
            return self._result("job-failed", f"job exited with status {exit_status}{note}",
                                exit_status=exit_status)
        return self._result("ok", note.strip(), exit_status=exit_status)

    # -- sync part: hard shutdown and cleanup ----------------------------------

    def stop_process(self) -> None:
        """SIGTERM, then SIGKILL the QEMU process group; always reap QEMU."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        pgid = proc.pid  # start_new_session: QEMU leads its own group

        def wait(timeout: float) -> bool:
            deadline = time.monotonic() + timeout
            while _peek_exit(proc.pid) is None:
                if time.monotonic() > deadline:
                    return False
                time.sleep(POLL_S)
            return True

        if _peek_exit(proc.pid) is None:
            self.say(f"sending SIGTERM to QEMU (pid {proc.pid})")
            _killpg(pgid, signal.SIGTERM)
            if not wait(TERM_WAIT_S):
                self.say(f"sending SIGKILL to QEMU (pid {proc.pid})")
                _killpg(pgid, signal.SIGKILL)
                if not wait(KILL_WAIT_S):
                    logger.error("QEMU pid %d survived SIGKILL for %s s; not reaping it",
                                 proc.pid, KILL_WAIT_S)
                    return
        # While QEMU is an unreaped zombie its pgid cannot have been reused:
        # clear the group of any helper it may have left, then reap.
        try:
            zombie = os.waitid(os.P_PID, proc.pid,
                               os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:  # reaped behind our back: the pgid may be reused
            zombie = False
        if zombie:
            _killpg(pgid, signal.SIGKILL)
        proc.wait()

    def close(self) -> None:
        for name in ("_events_f", "_stderr_f"):
            with contextlib.suppress(OSError, AttributeError):
                getattr(self, name).close()
        if hasattr(self, "tmpdir"):
            shutil.rmtree(self.tmpdir, ignore_errors=True)


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _private_tmpdir() -> Path:
    """A 0700 temp dir short enough to hold the QMP unix socket path."""
    tmp = Path(tempfile.mkdtemp(prefix="guestio-"))
    if len(os.fsencode(tmp / "qmp.sock")) > _UNIX_PATH_MAX:
        shutil.rmtree(tmp)
        tmp = Path(tempfile.mkdtemp(prefix="guestio-", dir="/tmp"))
    return tmp


def _clear_outputs(outdir: Path) -> None:
    for name in _OUTPUT_FILES:
        with contextlib.suppress(FileNotFoundError):
            (outdir / name).unlink()
    shutil.rmtree(outdir / "results", ignore_errors=True)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def run_vm(spec: VMSpec, outdir: Path | str, boot_timeout_s: float, job_timeout_s: float,
           log: Callable[[str], None] | None = None, hooks: Iterable[Hooks] = (),
           check: bool = False, label: str | None = None) -> RunResult:
    """Boot *spec*, run its job, collect results into *outdir*: :class:`Machine` in one call.

    Raises FileNotFoundError/VMSpecError for a bad spec (before anything
    starts), VMRunError with *check* when the run does not end "ok".
    """
    with Machine(spec, outdir, boot_timeout_s=boot_timeout_s, job_timeout_s=job_timeout_s,
                 log=log, hooks=hooks, label=label) as machine:
        return machine.run(check=check)


def serial_tail(path: Path, lines: int = 8) -> list[str]:
    """The last non-empty serial lines, without terminal escapes."""
    out = [_ANSI_RE.sub("", ln).strip() for ln in _tail(path, 8000).splitlines()]
    return [ln for ln in out if ln][-lines:] or ["(none)"]


def _copy_sparse(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".partial")
    try:
        subprocess.run(["cp", "--sparse=always", "--", os.fspath(src), os.fspath(tmp)],
                       check=True, capture_output=True, text=True)
        os.replace(tmp, dest)
    except subprocess.CalledProcessError as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise OSError(f"cannot copy disk image {src} to {dest}: {exc.stderr.strip()}") from None
