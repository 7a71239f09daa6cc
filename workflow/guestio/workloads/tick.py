"""The guest's tick: where it comes from, how fast it runs, measured in every VM run.

Section 3.1.2 of the paper lowers a guest's timer interrupt rate in two ways: in
the guest's configuration (HZ 1000 -> 100, the ``hz100`` kernel variant), and
transparently, by the VMM slowing the PIT's channel 0 down while the guest still
believes it runs at HZ=1000 (the ``pit-scale`` QEMU layer, ``-global
isa-pit.period-scale=N``).  The second route needs the guest's periodic tick to
come from the PIT, which a 6.1 x86_64 guest does not do by itself.

How a 6.1 x86_64 guest ticks on the PIT (:data:`PIT_KERNEL_PARAMS`)
---------------------------------------------------------------------
Read from the 6.1 source (arch/x86/kernel/apic/apic.c, apic/io_apic.c, i8253.c,
hpet.c) and checked by booting the pipeline's guests under TCG:

* ``CONFIG_HZ_PERIODIC=y`` (the ``base`` layer): no NO_HZ, the tick never stops,
  so ``nohz=off`` is not needed.  ``CONFIG_SMP`` is off (one CPU).
* ``nolapic_timer``: the local APIC timer is not registered as a clock event
  device (without it the tick comes from the LAPIC: "LOC" in /proc/interrupts,
  IRQ 0 stands still after boot).
* ``hpet=disable``: hpet_time_init() then sets up the PIT (``pit_timer_init``) as
  the global clock event device instead of the HPET; the tick device is "pit" in
  periodic mode (channel 0 in mode 2, rate generator, reload 1193 at HZ=1000),
  and every tick is IRQ 0 through the IO-APIC ("IO-APIC 2-edge timer").
* ``lapic=notscdeadline``: apic_needs_pit() returns false -- so the PIT is not
  even initialised, ``nolapic_timer`` or not -- when the CPU has ARAT *and*
  TSC-deadline (KVM with ``-cpu host``).  Clearing TSC-deadline in the guest makes
  the decision fall through to ``disable_apic_timer``, whatever CPU model the VMM
  offers; this is the guest-side equivalent of ``-cpu ...,-tsc-deadline``.  (ARAT
  alone does not matter once TSC-deadline is gone.)  QEMU's default TCG CPU has
  neither; the parameter is there for KVM hosts.
* ``no_timer_check``: check_timer() -> timer_irq_works() waits 40e9/HZ TSC cycles
  (16 ms at 2.4 GHz) and wants more than 4 jiffies meanwhile; at a tenth of the
  rate (pit-scale 10) it sees one or two and declares the IO-APIC timer broken.
* The clocksource stays ``acpi_pm`` (vm.clocksource): time of day is read from
  the ACPI PM timer, not counted in ticks, so it stays right when the PIT is
  slowed down; only jiffies (and what is measured in them) run slow.

Under KVM the PIT must be QEMU's, not KVM's in-kernel one, for ``period-scale``
to reach it: ``-machine kernel_irqchip=split`` (:class:`TickHooks` adds it to
every run under KVM, both sides of each comparison alike).

The measurement (:func:`measure`)
---------------------------------
A guest job marks the two ends of its benchmark with :data:`MARK_BEFORE_SH` /
:data:`MARK_AFTER_SH`: the console line ``GUESTIO: phase benchmark`` (the phase
the job already is in, so exit tables keep their phases) and a snapshot of
/proc/interrupts, /proc/uptime and the first line of /proc/stat
(``interrupts-before.txt``, ``uptime-before.txt``, ``stat-before.txt``, the same
``-after``) plus the clock event device (``clockevent.txt``).  :class:`TickWindow`
takes the host's monotonic time at each mark.  Then

* ``rate_hz`` = timer interrupts (IRQ 0 with vm.tick ``pit``) / host wall seconds;
* ``guest_clock_s`` = the guest's /proc/uptime over the window (its clocksource);
* ``guest_tick_s`` = the guest's tick-based CPU time over the window (/proc/stat,
  TICK_CPU_ACCOUNTING: each tick accounts 1/HZ s): "jiffies time".

Intended rate: HZ of the guest kernel / the PIT scale of the run's QEMU.  A run
whose measured rate is off by more than the tolerance (config ``timer.tolerance``)
raises :class:`TickRateError`: its results are not what its condition says.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

from guestio.vm import Hooks

__all__ = [
    "MARK_PHASE", "MARK_BEFORE_SH", "MARK_AFTER_SH", "PIT_KERNEL_PARAMS", "TICK_SOURCES",
    "TickError", "TickRateError", "TickWindow", "TickHooks", "TickMeasurement",
    "kernel_params", "kernel_hz", "pit_scale_of", "intended_rate", "settings", "trigger", "hooks_for", "measure_run",
    "timer_interrupts",
    "read_uptime", "read_tick_seconds", "measure", "check_rate",
]

#: The phase name a job prints at both ends of its tick window ("GUESTIO: phase benchmark").
MARK_PHASE = "benchmark"
#: Kernel parameters that make a 6.1 x86_64 guest tick periodically on the PIT (see above).
PIT_KERNEL_PARAMS = "nolapic_timer hpet=disable lapic=notscdeadline no_timer_check"
#: vm.tick -> (kernel parameters, the /proc/interrupts line that is the tick, clock event device)
TICK_SOURCES = {
    "pit": (PIT_KERNEL_PARAMS, "0", "pit"),
    # The kernel's own choice (the local APIC timer here): no PIT scaling possible.
    "lapic": ("", "LOC", "lapic"),
}
#: The schema's defaults of the timer section (a config without it: its defaults)
TIMER_DEFAULTS = {"pit_scale": 10, "tolerance": 0.8}
#: USER_HZ of x86 (the unit of /proc/stat)
USER_HZ = 100

# The shell lines of a job, at the ends of its benchmark ($OUT: the job's output dir).
MARK_BEFORE_SH = f"""\
echo "GUESTIO: phase {MARK_PHASE}" >/dev/kmsg
cat /sys/devices/system/clockevents/clockevent0/current_device >"$OUT/clockevent.txt" 2>/dev/null
cat /proc/interrupts >"$OUT/interrupts-before.txt"
cat /proc/uptime >"$OUT/uptime-before.txt"
head -n 1 /proc/stat >"$OUT/stat-before.txt"
"""
MARK_AFTER_SH = f"""\
cat /proc/interrupts >"$OUT/interrupts-after.txt"
cat /proc/uptime >"$OUT/uptime-after.txt"
head -n 1 /proc/stat >"$OUT/stat-after.txt"
echo "GUESTIO: phase {MARK_PHASE}" >/dev/kmsg
"""


class TickError(RuntimeError):
    """The tick of a run could not be measured (missing marks or snapshots)."""


class TickRateError(TickError):
    """A run's measured tick rate is not the one its condition intends."""


def kernel_params(tick: str) -> str:
    """The kernel command-line parameters of vm.tick *tick* ("" for none)."""
    try:
        return TICK_SOURCES[tick][0]
    except KeyError:
        raise ValueError(f"vm.tick must be one of {', '.join(TICK_SOURCES)}, not {tick!r}") from None


def kernel_hz(kconfig: Path | str) -> int:
    """CONFIG_HZ of a built kernel's .config."""
    m = re.search(r"^CONFIG_HZ=(\d+)$", Path(kconfig).read_text(), re.M)
    if not m:
        raise TickError(f"{kconfig}: no CONFIG_HZ line")
    return int(m.group(1))


def pit_scale_of(qemu_config: dict, timer_config: dict, qemu_variant: str) -> int:
    """The PIT period scale a QEMU variant's runs get: timer.pit_scale if the variant has
    the pit-scale layer, else 1 (and 1 on a QEMU that cannot scale)."""
    layers = qemu_config["variants"][qemu_variant]
    return int(timer_config["pit_scale"]) if "pit-scale" in layers else 1


def intended_rate(hz: int, pit_scale: int) -> float:
    return hz / pit_scale


def trigger(config: dict, qemu_variant: str) -> dict:
    """What of the tick changes a run's results (a rule's params, so a rerun trigger): not the
    tolerance, which only decides whether a run passes."""
    s = settings(config, qemu_variant)
    return {"tick": s["tick"], "pit_scale": s["pit_scale"]}


def settings(config: dict, qemu_variant: str) -> dict:
    """What a VM run on *qemu_variant* needs to know of its tick: vm.tick, its PIT scale, the tolerance."""
    tick = config["vm"].get("tick", "pit")
    kernel_params(tick)
    timer = {**TIMER_DEFAULTS, **config.get("timer", {})}
    return {"tick": tick, "pit_scale": pit_scale_of(config["qemu"], timer, qemu_variant),
            "tolerance": float(timer["tolerance"])}


def hooks_for(settings: dict, accel: str) -> "TickHooks":
    return TickHooks(pit_scale=settings["pit_scale"], accel=accel, tick=settings["tick"])


def measure_run(results_dir: Path | str, hooks: "TickHooks", settings: dict, kconfig: Path | str,
                where: str = "") -> "TickMeasurement":
    """measure() with a run's settings and its kernel's HZ; raises TickRateError when off."""
    return measure(results_dir, hooks, hz=kernel_hz(kconfig), pit_scale=settings["pit_scale"],
                   tick=settings["tick"], tolerance=settings["tolerance"], where=where)


class TickWindow(Hooks):
    """Host monotonic times of the guest's tick marks (``GUESTIO: phase benchmark``)."""

    def __init__(self) -> None:
        self.marks: list[float] = []

    def phase(self, machine, name: str) -> None:
        if name == MARK_PHASE:
            self.marks.append(time.monotonic())

    @property
    def wall_s(self) -> float:
        if len(self.marks) < 2:
            raise TickError(f"the job printed {len(self.marks)} tick mark(s) "
                            f"('GUESTIO: phase {MARK_PHASE}'), needs one before and one after its benchmark")
        return self.marks[-1] - self.marks[0]


class TickHooks(TickWindow):
    """Everything the tick needs from a run: its window, the PIT scale, QEMU's own PIT under KVM.

    ``pit_scale`` > 1 adds ``-global isa-pit.period-scale=N`` (the pit-scale QEMU layer);
    under KVM with vm.tick ``pit`` every run gets ``-machine kernel_irqchip=split`` so that
    the PIT is QEMU's (KVM's in-kernel PIT has no such property).
    """

    def __init__(self, *, pit_scale: int = 1, accel: str = "tcg", tick: str = "pit") -> None:
        super().__init__()
        if pit_scale < 1:
            raise ValueError(f"PIT scale must be >= 1, not {pit_scale}")
        if pit_scale > 1 and tick != "pit":
            raise ValueError(f"a PIT scale ({pit_scale}) needs vm.tick: pit, not {tick!r}")
        self.pit_scale, self.accel, self.tick = pit_scale, accel, tick

    def qemu_args(self, machine) -> list[str]:
        args = []
        if self.accel == "kvm" and self.tick == "pit":
            args += ["-machine", "kernel_irqchip=split"]
        if self.pit_scale > 1:
            args += ["-global", f"isa-pit.period-scale={self.pit_scale}"]
        return args


# --------------------------------------------------------------------------------------------
# Snapshots


def timer_interrupts(text: str, line: str) -> int:
    """The count of /proc/interrupts line *line* ("0" for IRQ 0, "LOC", ...), all CPUs summed."""
    lines = text.splitlines()
    if not lines:
        raise TickError("empty /proc/interrupts snapshot")
    ncpu = len(lines[0].split())
    for ln in lines[1:]:
        name, _, rest = ln.partition(":")
        if name.strip() == line:
            fields = rest.split()
            if len(fields) < ncpu or not all(f.isdigit() for f in fields[:ncpu]):
                raise TickError(f"/proc/interrupts line {line!r} has no {ncpu} counts: {ln!r}")
            return sum(int(f) for f in fields[:ncpu])
    raise TickError(f"/proc/interrupts has no line {line!r}")


def read_uptime(text: str) -> float:
    """Seconds since boot from /proc/uptime (the guest's clocksource)."""
    try:
        return float(text.split()[0])
    except (IndexError, ValueError):
        raise TickError(f"not a /proc/uptime line: {text!r}") from None


def read_tick_seconds(text: str) -> float:
    """Tick-accounted CPU seconds of all states from the first /proc/stat line ("cpu ...")."""
    fields = text.split()
    if not fields or fields[0] != "cpu" or not all(f.isdigit() for f in fields[1:]) or len(fields) < 5:
        raise TickError(f"not the first /proc/stat line: {text!r}")
    # user nice system idle iowait irq softirq steal [guest guest_nice: already in user/nice]
    return sum(int(f) for f in fields[1:9]) / USER_HZ


@dataclass(frozen=True)
class TickMeasurement:
    tick: str               # vm.tick: where the tick comes from
    interrupt_line: str     # the /proc/interrupts line counted
    clockevent: str         # the guest's clock event device ("" if unknown)
    hz: int                 # CONFIG_HZ: what the guest believes
    pit_scale: int          # what the VMM did to the PIT
    intended_hz: float      # hz / pit_scale
    interrupts: int         # timer interrupts in the window
    wall_s: float           # host wall time of the window
    guest_clock_s: float    # the guest's clock (clocksource) over the window
    guest_tick_s: float     # tick-accounted time over the window ("jiffies time")
    rate_hz: float          # interrupts / wall_s
    tolerance: float
    ok: bool

    @property
    def ratio(self) -> float:
        return self.rate_hz / self.intended_hz

    def to_json(self) -> dict:
        return {**asdict(self), "ratio": self.ratio,
                "guest_clock_per_wall": self.guest_clock_s / self.wall_s if self.wall_s else None,
                "guest_tick_per_wall": self.guest_tick_s / self.wall_s if self.wall_s else None}

    def measurements(self) -> list:
        """Rows for the run's long-form table (guestio.analysis.measurements.Measurement)."""
        from guestio.analysis.measurements import Measurement

        return [Measurement("timer_interrupt_rate", round(self.rate_hz, 3), "Hz"),
                Measurement("timer_intended_rate", self.intended_hz, "Hz"),
                Measurement("guest_clock_per_wall", round(self.guest_clock_s / self.wall_s, 5), "ratio"),
                Measurement("guest_tick_per_wall", round(self.guest_tick_s / self.wall_s, 5), "ratio")]

    def describe(self) -> str:
        return (f"tick {self.rate_hz:.1f} Hz of wall time ({self.interrupts} {self.tick} interrupts in "
                f"{self.wall_s:.2f} s; intended {self.intended_hz:g} Hz = HZ {self.hz} / PIT scale "
                f"{self.pit_scale}; guest clock {self.guest_clock_s:.2f} s, tick time {self.guest_tick_s:.2f} s)")


def check_rate(m: TickMeasurement, where: str = "") -> None:
    """Raise TickRateError unless the measured rate is within tolerance of the intended one."""
    if not m.ok:
        raise TickRateError(
            f"{where + ': ' if where else ''}timer tick {m.rate_hz:.1f} Hz is not within "
            f"{m.tolerance:.0%} of the intended {m.intended_hz:g} Hz (HZ {m.hz} / PIT scale {m.pit_scale}): "
            f"{m.interrupts} interrupts on /proc/interrupts line {m.interrupt_line!r} in {m.wall_s:.2f} s "
            f"of wall time, clock event device {m.clockevent or 'unknown'!r}; the run does not have "
            "the tick its condition says (kernel parameters: vm.tick; PIT scale: timer.pit_scale and "
            "the QEMU variant's pit-scale layer)")


def measure(results_dir: Path | str, window: TickWindow, *, hz: int, pit_scale: int = 1,
            tick: str = "pit", tolerance: float = 0.2, check: bool = True,
            where: str = "") -> TickMeasurement:
    """The tick of a finished run from its snapshots (OUTDIR/results) and its window.

    With *check*, a rate not within *tolerance* (relative) of hz / pit_scale, or a clock
    event device other than the one vm.tick *tick* names, raises TickRateError.
    """
    results = Path(results_dir)

    def read(name: str) -> str:
        path = results / name
        if not path.is_file():
            raise TickError(f"{where + ': ' if where else ''}{path} missing: the job must take the tick "
                            "snapshots (guestio.workloads.tick.MARK_BEFORE_SH / MARK_AFTER_SH)")
        return path.read_text()

    _, line, device = TICK_SOURCES[tick]
    count = (timer_interrupts(read("interrupts-after.txt"), line)
             - timer_interrupts(read("interrupts-before.txt"), line))
    wall = window.wall_s
    if wall <= 0:
        raise TickError(f"{where + ': ' if where else ''}tick window of {wall:.3f} s")
    clockevent = (results / "clockevent.txt").read_text().strip() if (results / "clockevent.txt").is_file() else ""
    intended = intended_rate(hz, pit_scale)
    rate = count / wall
    ok = math.isfinite(rate) and abs(rate / intended - 1) <= tolerance and clockevent in ("", device)
    m = TickMeasurement(
        tick=tick, interrupt_line=line, clockevent=clockevent, hz=hz, pit_scale=pit_scale,
        intended_hz=intended, interrupts=count, wall_s=round(wall, 4),
        guest_clock_s=round(read_uptime(read("uptime-after.txt")) - read_uptime(read("uptime-before.txt")), 3),
        guest_tick_s=round(read_tick_seconds(read("stat-after.txt")) - read_tick_seconds(read("stat-before.txt")), 3),
        rate_hz=rate, tolerance=tolerance, ok=ok)
    if check:
        check_rate(m, where)
    return m


def write(path: Path | str, m: TickMeasurement) -> None:
    from guestio.util import write_json_atomic

    write_json_atomic(Path(path), m.to_json())


def load(path: Path | str) -> dict:
    return json.loads(Path(path).read_text())


# --------------------------------------------------------------------------------------------
# Table 1: the paper's timer functions (Linux 2.6.27) and where their work is in 6.1's exits

#: paper function -> (what it was, the 6.1 functions whose exits are its work: a site matches
#: when its guest function or its calling function is one of them)
PAPER_TIMER_FUNCTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "ack_ioapic_irq": (
        "IO-APIC edge ack of the PIT's IRQ 0: in 6.1 the local APIC EOI write of the edge handler",
        ("ack_ioapic_irq", "apic_ack_edge", "apic_ack_irq", "ack_APIC_irq", "apic_eoi", "ioapic_ack_level",
         "handle_edge_irq", "handle_fasteoi_irq")),
    "timer_interrupt": (
        "the IRQ 0 handler (arch/x86/kernel/time.c, still so named): tick_handle_periodic -> "
        "do_timer/update_wall_time, which reads the clocksource (acpi_pm_read) every tick",
        ("timer_interrupt", "tick_handle_periodic", "tick_periodic", "timekeeping_advance", "update_wall_time")),
    "__do_softirq": (
        "softirqs after the tick (timers, RCU, scheduler)",
        ("__do_softirq", "run_timer_softirq", "do_softirq", "__irq_exit_rcu", "irq_exit_rcu")),
    "smp_apic_timer_interrupt": (
        "the local APIC timer's handler (6.1: sysvec_apic_timer_interrupt); absent here by design: the "
        "tick is the PIT's (nolapic_timer), so that the VMM can slow it down",
        ("smp_apic_timer_interrupt", "sysvec_apic_timer_interrupt", "local_apic_timer_interrupt",
         "lapic_next_event", "lapic_next_deadline")),
}


def paper_function_sites(ranked, functions: dict = PAPER_TIMER_FUNCTIONS) -> dict[str, list[int]]:
    """{paper function: ranks of the sites (exits.schema.rank output) doing its work}."""
    out = {}
    for paper_fn, (_, names) in functions.items():
        hits = ranked[ranked["function"].isin(names)
                      | (ranked["caller"].isin(names) if "caller" in ranked.columns else False)]
        out[paper_fn] = sorted(int(r) for r in hits["rank"])
    return out
