"""The VM lifecycle: one QEMU process from launch to reap, and how its job ended.

The contract with the guest (see the guest image): its /init prints
``GUESTIO: init started`` on the serial console, runs the shell script it
finds in fw_cfg ``opt/guestio/job`` (with the jobs' shared ``lib.sh`` beside it
in ``/guestio/in``), prints ``GUESTIO: job finished status=N``,
writes ``tar -cf - -C /guestio/out .`` into the virtio-serial port
``org.guestio.results`` and powers off.

:class:`Machine` starts QEMU paused (``-S``) with QMP on a private unix socket,
sends ``cont``, follows the serial log, and ends in one of the statuses of
:data:`guestio.vm.result.STATUSES`.  Whatever happens, QEMU (and its process
group) is stopped and reaped, and scratch disk copies are deleted, before the
run returns or raises: QMP ``quit``, then SIGTERM, then SIGKILL.
:class:`~guestio.vm.hooks.Hooks` let a caller act around the run: add QEMU
arguments, start host-side work once QEMU runs (its pid and QMP connection),
follow the guest's job start, named phases and job end, and tidy up after
shutdown.  :func:`run_vm` is the one-call form.  SIGTERM/SIGINT/SIGHUP received
meanwhile are held back until QEMU is gone and are then re-delivered with the
handler that was installed before, so the caller dies (or raises
``KeyboardInterrupt``) as it would have.

The design follows QEMU's python/qemu/machine (launch with -S, Python is the
QMP server, escalating shutdown), reduced to what this pipeline needs; as
there, this file holds the lifecycle and its helpers live beside it:
:mod:`~guestio.vm.spec` (what to run), :mod:`~guestio.vm.qemu_argv` (its
command line), :mod:`~guestio.vm.console` (the serial log),
:mod:`~guestio.vm.guest_results` (the results tar), :mod:`~guestio.vm.result`
(how it ended), :mod:`~guestio.vm.signals`, :mod:`~guestio.vm.process` and
:mod:`~guestio.vm.scratch`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from qemu.qmp import EventListener, QMPClient, Runstate

from guestio.util import write_json_atomic
from guestio.vm.console import (ANSI_ESCAPES, GUEST_ERROR_MARKER, INIT_MARKER, JOB_FINISHED_RE, JOB_STARTED_MARKER,
                                PANIC_RE, PHASE_RE, SerialFollower, last_serial_line, tail_text)
from guestio.vm.guest_results import UnsafeTar, extract_results
from guestio.vm.hooks import Hooks
from guestio.vm.process import pdeathsig_preexec, peek_exit, stop_group
from guestio.vm.qemu_argv import build_qemu_argv
from guestio.vm.result import RunResult, VMRunError
from guestio.vm.scratch import copy_sparse, private_tmpdir
from guestio.vm.signals import Interrupted, SignalGuard
from guestio.vm.spec import VMSpec

__all__ = ["Machine", "run_vm"]

logger = logging.getLogger(__name__)

# Timing knobs (seconds).  Module-level so that tests/callers can adjust them.
POLL_S = 0.1                # serial/process polling period
QMP_CONNECT_TIMEOUT_S = 30  # QEMU start until its QMP connection is accepted
QMP_COMMAND_TIMEOUT_S = 5   # any single QMP command
POWEROFF_GRACE_S = 30       # "job finished" until QEMU has exited
QUIT_WAIT_S = 5             # QMP quit -> wait
TERM_WAIT_S = 5             # SIGTERM  -> wait
KILL_WAIT_S = 30            # SIGKILL  -> wait (only a D-state process outlives this)
PROGRESS_EVERY_S = 30       # "still booting"/"job running" progress lines

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
        self.guard = SignalGuard().__enter__()
        self._entered = True
        try:
            self._events_f = open(self.outdir / "qmp-events.jsonl", "w")
            self._stderr_f = open(self.stderr_log, "wb")
            self.tmpdir = private_tmpdir()
            self.qmp_socket = self.tmpdir / "qmp.sock"
            self.results_tar = self.tmpdir / "results.tar"
            for disk in self.spec.disks:
                if disk.copy_of is not None:
                    self._copies.append(Path(disk.path))
                    copy_sparse(Path(disk.copy_of), Path(disk.path))
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
        write_json_atomic(self.outdir / "qemu-cmdline.json", self.argv)
        result: RunResult | None = None
        extra_status: tuple[str, str] | None = None
        try:
            try:
                result = asyncio.run(self._main())
            finally:
                self.stop_process()
        except Interrupted as exc:
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
            write_json_atomic(self.outdir / "run.json", {"result": result.to_json(),
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
        return peek_exit(self.proc.pid)

    def _check_signal(self) -> None:
        if self.guard.signum is not None:
            raise Interrupted(self.guard.signum)

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
        tail = tail_text(self.stderr_log)
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
                preexec_fn=pdeathsig_preexec(os.getpid()))
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
        follower = SerialFollower(self.serial_log)
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
                        self.guest_error = ANSI_ESCAPES.sub("", line).strip()
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
            files = extract_results(self.results_tar, results)
        except (tarfile.TarError, UnsafeTar, OSError) as exc:
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
        stop_group(self.proc, self.say, term_wait_s=TERM_WAIT_S, kill_wait_s=KILL_WAIT_S, poll_s=POLL_S)

    def close(self) -> None:
        for name in ("_events_f", "_stderr_f"):
            with contextlib.suppress(OSError, AttributeError):
                getattr(self, name).close()
        if hasattr(self, "tmpdir"):
            shutil.rmtree(self.tmpdir, ignore_errors=True)


def _clear_outputs(outdir: Path) -> None:
    for name in _OUTPUT_FILES:
        with contextlib.suppress(FileNotFoundError):
            (outdir / name).unlink()
    shutil.rmtree(outdir / "results", ignore_errors=True)


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
