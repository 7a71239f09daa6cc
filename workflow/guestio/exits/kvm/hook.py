"""The VM lifecycle hook that records a run's KVM exits for its measured window only."""

from __future__ import annotations

from pathlib import Path

from guestio.exits.kvm.recorder import KvmTracer
from guestio.vm.hooks import Hooks


class KvmExitTracer(Hooks):
    """Records KVM exits of one VM run for the measured window only (a VM lifecycle hook).

    After launch it finds QEMU's vCPU threads and sets up a tracefs instance
    filtered to them; tracing runs from the guest's "job started" to its "job
    finished" (each "GUESTIO: phase NAME" becomes a trace_marker phase), and the
    window is saved to OUTDIR/kvm-trace (:func:`parse_trace_dir` reads it).
    After shutdown the instance is torn down, whatever happened.  Boundaries come
    from the serial log, so they are exact to within the lifecycle's poll period.
    """

    def __init__(self, *, root: Path | str | None = None, buffer_size_kb: int | None = 65536,
                 instance: str | None = None):
        self.root, self.buffer_size_kb = root, buffer_size_kb
        self.instance = instance
        self.tracer: KvmTracer | None = None
        self.saved: dict | None = None
        self.outdir: Path | None = None

    def after_launch(self, machine) -> None:
        if machine.spec.accel != "kvm":
            raise ValueError(f"KVM exit tracing needs accel kvm, not {machine.spec.accel!r}")
        self.outdir = machine.outdir / "kvm-trace"
        pids = KvmTracer.vcpu_threads(machine.pid) or [machine.pid]
        self.tracer = KvmTracer(pids, root=self.root, buffer_size_kb=self.buffer_size_kb,
                                instance=self.instance or f"guestio-{machine.pid}")
        self.tracer.setup()
        machine.say(f"KVM exits: tracing vCPU threads {pids} in {self.tracer.base}")

    def job_started(self, machine) -> None:
        self.tracer.start()
        self.tracer.mark("benchmark")

    def phase(self, machine, name: str) -> None:
        self.tracer.mark(name)

    def job_finished(self, machine, status: int) -> None:
        self.tracer.stop()
        self.saved = self.tracer.save(self.outdir)
        machine.say(f"KVM exits: window saved to {self.outdir} (overrun {self.saved['overrun']})")

    def after_shutdown(self, machine, result) -> None:
        if self.tracer is not None:
            try:
                self.tracer.stop()
            finally:
                self.tracer.teardown()
