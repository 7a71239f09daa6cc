"""Records kvm exit events for one QEMU process through tracefs (a real KVM host).

Sets up a tracefs instance, filters the QEMU process's vCPU threads with
``set_event_pid``, sizes ``buffer_size_kb``, starts and stops around the
measured window, saves ``trace``, the ``format`` files and
``per_cpu/cpu*/stats``.  It needs root and a kernel with KVM; it is only
unit-tested against a fake tracefs directory.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Iterable, Sequence

from guestio.exits.kvm.trace_reader import read_cpu_stats


REQUIRED_EVENTS = ("kvm/kvm_exit", "kvm/kvm_entry")
DEFAULT_EVENTS = REQUIRED_EVENTS + ("kvm/kvm_pio", "kvm/kvm_mmio", "kvm/kvm_fast_mmio", "kvm/kvm_msr",
                                    "kvm/kvm_hypercall")
_VCPU_COMM = re.compile(r"^CPU \d+/KVM$")


class KvmTracer:
    """Record kvm exit events for one QEMU process through tracefs.

    Usage (root, on a KVM host)::

        tracer = KvmTracer(KvmTracer.vcpu_threads(qemu_pid), buffer_size_kb=KvmTracer.buffer_kb_for(...))
        tracer.setup(); tracer.start(); tracer.mark("benchmark")
        ...                       # the measured window
        tracer.stop(); tracer.save(outdir); tracer.teardown()

    ``root`` is the tracefs mount (a fake directory in tests).  With ``instance``
    the events go to ``instances/<instance>`` so that the global buffer is left
    alone.
    """

    def __init__(self, pids: Iterable[int] = (), *, root: Path | str | None = None,
                 instance: str | None = "guestio", buffer_size_kb: int | None = None,
                 clock: str | None = "mono", events: Sequence[str] = DEFAULT_EVENTS):
        self.pids = [int(p) for p in pids]
        self.root = Path(root) if root is not None else self.default_root()
        self.instance = instance
        self.buffer_size_kb = buffer_size_kb
        self.clock = clock
        self.events = list(events)
        self.enabled: list[str] = []
        self.skipped: list[str] = []
        self._created_instance = False
        self.clock_used: str | None = None

    @staticmethod
    def default_root() -> Path:
        for p in (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing")):
            if (p / "trace").exists():
                return p
        return Path("/sys/kernel/tracing")

    @property
    def base(self) -> Path:
        return self.root / "instances" / self.instance if self.instance else self.root

    @staticmethod
    def vcpu_threads(qemu_pid: int, proc: Path | str = "/proc") -> list[int]:
        """Thread ids of QEMU's vCPU threads (named 'CPU <n>/KVM')."""
        tids = []
        for t in sorted(Path(proc, str(qemu_pid), "task").iterdir(), key=lambda p: int(p.name)):
            try:
                comm = (t / "comm").read_text().strip()
            except OSError:
                continue
            if _VCPU_COMM.match(comm):
                tids.append(int(t.name))
        return tids

    @staticmethod
    def buffer_kb_for(exits_per_second: float, seconds: float, cpus: int,
                      bytes_per_exit: int = 200, headroom: float = 2.0) -> int:
        """Per-CPU ``buffer_size_kb`` to hold a window without overwriting.

        ~200 bytes per exit: kvm_exit (~80 B with its header), kvm_entry (~40 B)
        and one I/O event (~40 B), rounded up.  All vCPU threads may run on one
        CPU, so the whole window is sized per CPU: ``cpus`` only bounds memory.
        """
        total = exits_per_second * seconds * bytes_per_exit * headroom
        return max(1024, int(math.ceil(total / 1024)))

    # -- tracefs I/O -------------------------------------------------------------------------
    def _write(self, rel: str, text: str) -> None:
        p = self.base / rel
        with open(p, "w") as f:
            f.write(text)

    def _read(self, rel: str) -> str:
        return (self.base / rel).read_text()

    def setup(self) -> None:
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: tracefs is not mounted (mount -t tracefs nodev {self.root})")
        if self.instance and not self.base.exists():
            self.base.mkdir()  # on tracefs, mkdir creates a new trace instance
            self._created_instance = True
        self._write("tracing_on", "0")
        self._write("trace", "")  # opening 'trace' for writing with O_TRUNC clears the buffer
        if self.buffer_size_kb:
            self._write("buffer_size_kb", str(int(self.buffer_size_kb)))
        if self.clock:
            available = self._read("trace_clock").replace("[", " ").replace("]", " ").split()
            clock = self.clock if self.clock in available else ("global" if "global" in available else None)
            if clock:
                self._write("trace_clock", clock)
            self.clock_used = clock
        # Our own pid too: it raises no kvm events, and it keeps trace_marker phase lines
        # visible should a kernel filter them by pid as well.
        pids = self.pids + ([os.getpid()] if self.pids and os.getpid() not in self.pids else [])
        self._write("set_event_pid", " ".join(str(p) for p in pids))
        self.enabled, self.skipped = [], []
        for ev in self.events:
            enable = self.base / "events" / ev / "enable"
            if not enable.exists():
                if ev in REQUIRED_EVENTS:
                    raise FileNotFoundError(f"{enable}: tracepoint {ev} not found (is the kvm module loaded?)")
                self.skipped.append(ev)
                continue
            self._write(f"events/{ev}/enable", "1")
            self.enabled.append(ev)

    def start(self) -> None:
        self._write("tracing_on", "1")

    def mark(self, phase: str) -> None:
        """Start a named phase; the parser attributes later exits to it."""
        if not re.fullmatch(r"[\w.\-]+", phase):
            raise ValueError(f"phase name {phase!r}: use letters, digits, '_', '.', '-'")
        with open(self.base / "trace_marker", "w") as f:
            f.write(f"guestio phase={phase}\n")

    def stop(self) -> None:
        self._write("tracing_on", "0")

    def overruns(self) -> dict[str, dict[str, float]]:
        return read_cpu_stats(self.base)

    def save(self, outdir: Path | str) -> dict:
        """Write ``trace``, the event ``format`` files, per-CPU stats and meta.json to outdir."""
        out = Path(outdir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "trace").write_text(self._read("trace"))
        for ev in self.enabled:
            src = self.base / "events" / ev / "format"
            if src.is_file():
                dst = out / "events" / ev / "format"
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.write_text(src.read_text())
        stats = self.overruns()
        for cpu, _ in stats.items():
            dst = out / "per_cpu" / f"cpu{cpu}" / "stats"
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text((self.base / "per_cpu" / f"cpu{cpu}" / "stats").read_text())
        meta = {"pids": self.pids, "instance": self.instance, "buffer_size_kb": self.buffer_size_kb,
                "clock": self.clock_used, "events": self.enabled, "events_missing": self.skipped,
                "overrun": sum(int(v.get("overrun", 0)) for v in stats.values()),
                "kernel": os.uname().release}
        (out / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return meta

    def teardown(self) -> None:
        for ev in self.enabled:
            try:
                self._write(f"events/{ev}/enable", "0")
            except OSError:
                pass
        try:
            self._write("set_event_pid", "")
        except OSError:
            pass
        if self._created_instance:
            try:
                self.base.rmdir()
            except OSError:
                pass
            self._created_instance = False

    def __enter__(self) -> "KvmTracer":
        self.setup()
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        self.teardown()
