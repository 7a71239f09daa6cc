"""Long children: ``subprocess.run`` for a child that must not outlive an interruption of its job.

The child leads its own process group and gets ``PR_SET_PDEATHSIG`` (SIGTERM); when the caller is
interrupted (:func:`guestio.lifetime.die_with_snakemake` turns signals into exceptions) the whole
group gets SIGTERM, then SIGKILL, and is reaped before the exception goes on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from typing import Callable, Sequence

from guestio.lifetime import HANDLED_SIGNALS, TERM_GRACE_S, prctl

_PR_SET_PDEATHSIG = 1


def _child_setup(parent: int) -> Callable[[], None]:
    def setup() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl
            os._exit(1)
    return setup


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def run(argv: Sequence[str], *, grace_s: float = TERM_GRACE_S,
        preexec_fn: Callable[[], None] | None = None, timeout: float | None = None,
        capture_output: bool = False, check: bool = False, input=None,
        **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run`` for a long child that must not outlive an interruption.

    The child leads its own process group and gets SIGTERM if this process
    dies.  If the wait is interrupted (a signal turned into an exception by
    :func:`die_with_snakemake`, KeyboardInterrupt, a timeout), the child's
    whole group gets SIGTERM, then SIGKILL after *grace_s*, and is reaped
    before the exception propagates (subprocess.TimeoutExpired for a timeout).
    *preexec_fn* runs in the child after that set-up.  *capture_output*,
    *check* and *input* are those of subprocess.run.
    """
    parent = os.getpid()
    setup = _child_setup(parent)

    def child() -> None:
        setup()
        if preexec_fn is not None:
            preexec_fn()

    if capture_output:
        kwargs["stdout"] = kwargs["stderr"] = subprocess.PIPE
    if input is not None:
        kwargs["stdin"] = subprocess.PIPE
    proc = subprocess.Popen(argv, process_group=0, preexec_fn=child, **kwargs)
    try:
        stdout, stderr = proc.communicate(input, timeout=timeout)
    except BaseException:
        _stop_group(proc, grace_s)
        raise
    done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    if check:
        done.check_returncode()
    return done


def _stop_group(proc: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM the child's group, SIGKILL it after grace_s, reap the child; never raises."""
    pgid = proc.pid
    # Further signals while we tidy up must not cut the tidying short.
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS) \
        if threading.current_thread() is threading.main_thread() else None
    try:
        _killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        _killpg(pgid, signal.SIGKILL)
        proc.wait()
        for f in (proc.stdout, proc.stderr, proc.stdin):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
    finally:
        if blocked is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
