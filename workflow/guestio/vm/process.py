"""The QEMU child process: dies with its parent, is polled without being reaped, killed as a group."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import time
from typing import Callable

logger = logging.getLogger(__name__)


def pdeathsig_preexec(parent_pid: int) -> Callable[[], None]:
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


def peek_exit(pid: int) -> int | None:
    """Returncode of *pid* if it has exited, without reaping it (WNOWAIT).

    Leaving the zombie in place keeps the pid and process group id from being
    reused until we killpg() the group and reap it in stop_group().
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


def killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_group(proc: subprocess.Popen | None, say: Callable[[str], None], *, term_wait_s: float,
               kill_wait_s: float, poll_s: float) -> None:
    """SIGTERM, then SIGKILL the process group *proc* leads; always reap *proc*."""
    if proc is None or proc.returncode is not None:
        return
    pgid = proc.pid  # start_new_session: QEMU leads its own group

    def wait(timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while peek_exit(proc.pid) is None:
            if time.monotonic() > deadline:
                return False
            time.sleep(poll_s)
        return True

    if peek_exit(proc.pid) is None:
        say(f"sending SIGTERM to QEMU (pid {proc.pid})")
        killpg(pgid, signal.SIGTERM)
        if not wait(term_wait_s):
            say(f"sending SIGKILL to QEMU (pid {proc.pid})")
            killpg(pgid, signal.SIGKILL)
            if not wait(kill_wait_s):
                logger.error("QEMU pid %d survived SIGKILL for %s s; not reaping it",
                             proc.pid, kill_wait_s)
                return
    # While QEMU is an unreaped zombie its pgid cannot have been reused:
    # clear the group of any helper it may have left, then reap.
    try:
        zombie = os.waitid(os.P_PID, proc.pid,
                           os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # reaped behind our back: the pgid may be reused
        zombie = False
    if zombie:
        killpg(pgid, signal.SIGKILL)
    proc.wait()
