"""Guest VMs: one lifecycle for every QEMU run, the accelerator probe, VM runs as pipeline jobs.

The names a caller needs, importable from here (``from guestio.vm import VMSpec, run_vm``):

- what to run: :class:`VMSpec`, :class:`DiskSpec`, :class:`NicSpec` (:mod:`.spec`);
- running it: :class:`Machine`, :func:`run_vm` (:mod:`.machine`), acting around it with
  :class:`Hooks` (:mod:`.hooks`);
- how it ended: :class:`RunResult`, :func:`load_run`, :class:`VMRunError` (:mod:`.result`).

The lifecycle's helpers have a file each (:mod:`.qemu_argv`, :mod:`.console`,
:mod:`.guest_results`, :mod:`.signals`, :mod:`.process`, :mod:`.scratch`); the accelerator
probe is :mod:`.accel`, VM runs as pipeline jobs :mod:`.jobs`.
"""

from guestio.vm.console import last_serial_line, serial_tail
from guestio.vm.hooks import Hooks
from guestio.vm.machine import Machine, run_vm
from guestio.vm.qemu_argv import build_qemu_argv
from guestio.vm.result import STATUSES, RunResult, VMRunError, load_run
from guestio.vm.spec import JOB_LIB, QEMU_BINARY, DiskSpec, NicSpec, VMSpec, VMSpecError

__all__ = [
    "DiskSpec", "NicSpec", "VMSpec", "VMSpecError", "JOB_LIB", "QEMU_BINARY",
    "Hooks", "Machine", "run_vm", "build_qemu_argv",
    "RunResult", "VMRunError", "STATUSES", "load_run",
    "last_serial_line", "serial_tail",
]
