"""SIGTERM/SIGINT/SIGHUP during a VM run: held back until QEMU is gone, then re-delivered."""

from __future__ import annotations

import signal
import threading
from typing import Any


class Interrupted(BaseException):
    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class SignalGuard:
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

    def __enter__(self) -> SignalGuard:
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
