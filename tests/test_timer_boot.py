"""The pit-scale QEMU in real TCG boots: a guest that believes HZ=1000 takes about 100 timer
interrupts per second of wall time with period-scale 10, measured as every run measures it
(guestio.workloads.tick), and about 1000 without; its clock stays right, its jiffies run slow.

Slow tier (``boot``, ``build``): builds the pit-scale QEMU variant through the pipeline into
the tests' results directory (ccache: about a minute after the stock build), two boots of
about 20 s each.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import TEST_RESULTS, build_or_fail, results_path
from guestio.build import qemu
from guestio.vm import VMSpec, run_vm
from guestio.workloads import cpuload, tick

pytestmark = [pytest.mark.boot, pytest.mark.build]


@pytest.fixture(scope="session")
def pit_qemu() -> dict:
    """The pit-scale QEMU variant, built by the pipeline's own rule."""
    build_or_fail("QEMU pit-scale", results_path("qemu", "pit-scale", "build.json"))
    return qemu.load_build(TEST_RESULTS / "qemu" / "pit-scale" / "build.json")


def _tick_run(build, kernel, initrd, append, tmp_path: Path, scale: int, events: int = 4000):
    params = cpuload.write_params(tmp_path / "params", events, 2000)
    spec = VMSpec(kernel=kernel, initrd=initrd,
                  append=f"{append} clocksource=acpi_pm {tick.kernel_params('pit')}", accel="tcg",
                  memory_mib=256, job=cpuload.JOB_SCRIPT, inputs={"params": params},
                  qemu=build["binary"], firmware_dir=build["firmware_dir"])
    hooks = tick.TickHooks(pit_scale=scale)
    result = run_vm(spec, tmp_path / "run", boot_timeout_s=120, job_timeout_s=300, hooks=[hooks], check=True)
    m = tick.measure(tmp_path / "run" / "results", hooks, hz=1000, pit_scale=scale, tolerance=0.4, check=False)
    return result, m


def test_pit_scale_10_gives_a_tenth_of_the_ticks(pit_qemu, guest_kernel, guest_initrd, guest_append, tmp_path):
    assert pit_qemu["layers"] == ["pit-scale"]
    _, scaled = _tick_run(pit_qemu, guest_kernel, guest_initrd, guest_append, tmp_path / "x10", 10)
    print("period-scale 10:", scaled.describe())
    assert scaled.clockevent == "pit" and scaled.hz == 1000
    # About 100 interrupts per second of wall time (93-101 Hz measured on 2 shared cores).
    assert 75 <= scaled.rate_hz <= 115, scaled.describe()
    assert scaled.ok
    # The guest's clock (acpi_pm) keeps wall time; its tick-accounted time runs at a tenth.
    assert scaled.guest_clock_s / scaled.wall_s == pytest.approx(1.0, abs=0.1)
    assert 0.06 <= scaled.guest_tick_s / scaled.wall_s <= 0.13

    _, plain = _tick_run(pit_qemu, guest_kernel, guest_initrd, guest_append, tmp_path / "x1", 1)
    print("period-scale 1:", plain.describe())
    # Unscaled the same binary ticks at HZ (TCG loses some ticks on a loaded host: 700-970 Hz seen).
    assert plain.rate_hz >= 550 and plain.rate_hz / scaled.rate_hz >= 5.5, (plain.describe(), scaled.describe())
    assert plain.guest_tick_s / plain.wall_s >= 0.55


def test_pit_scale_property_rejects_zero(pit_qemu, tmp_path):
    done = subprocess.run([*qemu.argv_prefix(pit_qemu), "-nodefaults", "-display", "none", "-S",
                           "-machine", "pc,accel=tcg", "-global", "isa-pit.period-scale=0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "period-scale must be 1 to 1000, not 0" in done.stderr
