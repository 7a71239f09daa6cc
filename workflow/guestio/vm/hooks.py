"""What a caller does around one VM run: :class:`Hooks`, whose methods the lifecycle calls."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from guestio.vm.machine import Machine
    from guestio.vm.result import RunResult


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
