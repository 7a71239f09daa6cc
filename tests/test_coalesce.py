"""Modification 1 (Table 4): libata's taskfile writes merged into one doorbell write.

* fast: the exit cross-check keeps the doorbell's replays apart from guest instructions
  (synthetic sequence log).
* ``build``: the coalesce QEMU (workflow/qemu/layers/coalesce), driven through QEMU's qtest
  accelerator: a batch is replayed in order into the I/O space and the values of its reads
  written back; bad batches (too long, outside guest RAM, in ROM, a bad entry, aimed at the
  doorbell itself) are refused whole, counted, and QEMU goes on.
* ``boot``: the coalesce kernel (workflow/kernel/layers/coalesce)
  - on the stock QEMU: finds no device, says so, keeps the stock path, and the disk works;
  - on the coalesce QEMU: says it merges, a guest writes and reads a data disk correctly
    (checksums in the guest and of the image on the host), the device replayed batches and
    refused none;
  - under the exit plugin: the exit table has the doorbell where the taskfile writes were.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import subprocess
import textwrap
from pathlib import Path

import pytest

from conftest import TEST_RESULTS, build_or_fail, qemu_trace_event, results_path
from guestio.build import qemu
from guestio.exits.tcg.cross_check import cross_check
from guestio.exits.tcg.plugin import ExitCounter
from guestio.exits.tcg.plugin_csv import PluginRow
from guestio.exits.tcg.sequence import parse_sequence
from guestio.vm import DiskSpec, Hooks, VMSpec, run_vm

DOORBELL = 0x530
SIGNATURE = 0x434F4947
COUNTERS = ("batches", "accesses", "refused", "refused-length", "refused-address", "refused-entry")


# --------------------------------------------------------------------------------------------
# fast: the cross-check and the doorbell's replays

_ev = qemu_trace_event


def test_replays_of_the_doorbell_are_not_guest_accesses(tmp_path):
    log = tmp_path / "qemu.log"
    log.write_text("\n".join([
        "exitcount: P ffffffff81000010 in 4 - 0 0",             # probe: inl 0x530 (a plain read)
        _ev("read", DOORBELL, 4, "guestio-coalesce", value=SIGNATURE),
        "exitcount: P ffffffff81000020 out 4 - 0 ffffffff81000100",   # the doorbell
        _ev("write", DOORBELL, 4, "guestio-coalesce", value=0x1000),
        _ev("write", 0x1f6, 1, "ide"), _ev("read", 0x3f6, 1, "ide"),   # ... replayed
        _ev("write", 0x1f2, 1, "ide"), _ev("read", 0x1f7, 1, "ide"),
        "exitcount: P ffffffff81000030 in 1 - 0 0",             # a stock read after it
        _ev("read", 0x1f7, 1, "ide"),
        "",
    ]))
    seq = parse_sequence(log)
    assert seq.problems == [] and seq.orphan_events == []
    assert [(r.port, len(r.events)) for r in seq.records] == [(DOORBELL, 1), (DOORBELL, 1), (0x1f7, 1)]
    assert [(e.addr, e.write) for e in seq.replayed_events] == [(0x1f6, True), (0x3f6, False),
                                                                (0x1f2, True), (0x1f7, False)]
    rows = [PluginRow("boot", 0xffffffff81000010, "pio_in", "in_dx", None, 4, None, "", 1, 1),
            PluginRow("boot", 0xffffffff81000020, "pio_out", "out_dx", None, 4, 0xffffffff81000100, "", 1, 1),
            PluginRow("boot", 0xffffffff81000030, "pio_in", "in_dx", None, 1, None, "", 1, 1)]
    check = cross_check(rows, seq)
    assert check.ok, check.problems
    assert check.pio_qemu == {DOORBELL: 2, 0x1f7: 1}       # what the guest executed
    assert check.replayed == {0x1f6: 1, 0x3f6: 1, 0x1f2: 1, 0x1f7: 1}
    assert "replayed by the coalesce doorbell" in check.summary()


def test_without_a_doorbell_every_port_event_is_the_guests(tmp_path):
    log = tmp_path / "qemu.log"
    log.write_text("\n".join([
        "exitcount: P ffffffff81000020 out 4 - 0 0",
        _ev("write", DOORBELL, 4, "unassigned"),                # stock QEMU: nothing there
        "exitcount: P ffffffff81000030 out 1 - 0 0",
        _ev("write", 0x1f6, 1, "ide"),
        "",
    ]))
    seq = parse_sequence(log)
    assert seq.problems == [] and seq.replayed_events == []


# --------------------------------------------------------------------------------------------
# build: the device, through qtest

@pytest.fixture(scope="session")
def coalesce_qemu() -> dict:
    """The coalesce QEMU variant, built by the pipeline's own rule."""
    build_or_fail("QEMU coalesce", results_path("qemu", "coalesce", "build.json"))
    return qemu.load_build(TEST_RESULTS / "qemu" / "coalesce" / "build.json")


def _qtest(build: dict, commands: list[str], *extra: str) -> list[str]:
    """Run qtest commands on a pc machine of *build*; the replies (one per command).

    QEMU is stopped once every command has its reply (qtest does not end at end of input)."""
    proc = subprocess.Popen(
        [*qemu.argv_prefix(build), "-machine", "pc", "-accel", "qtest", "-qtest", "stdio",
         "-display", "none", "-nodefaults", "-m", "64", *extra],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    replies = []
    try:
        proc.stdin.write("".join(c + "\n" for c in commands))
        proc.stdin.flush()
        while len(replies) < len(commands):
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith(("OK", "FAIL", "ERR")):
                replies.append(line.strip())
        alive = proc.poll() is None    # QEMU survived every batch, good or bad
    finally:
        proc.kill()
        proc.wait()
    assert alive and len(replies) == len(commands), replies
    return replies


def _batch(addr: int, entries: list[tuple[int, int, int, int]], count: int | None = None) -> list[str]:
    """qtest writes of a batch at *addr*: count, status ~0, then {dir, size, port, value}."""
    cmds = [f"writel 0x{addr:x} 0x{len(entries) if count is None else count:x}",
            f"writel 0x{addr + 4:x} 0xffffffff"]
    for i, (direction, size, port, value) in enumerate(entries):
        at = addr + 8 + 8 * i
        cmds += [f"writel 0x{at:x} 0x{(port << 16) | (size << 8) | direction:x}",
                 f"writel 0x{at + 4:x} 0x{value:x}"]
    return cmds


def _value(reply: str) -> int:
    return int(reply.split()[1], 16)


@pytest.mark.build
@pytest.mark.boot
def test_device_replays_a_batch_in_order_and_writes_reads_back(coalesce_qemu):
    assert coalesce_qemu["layers"] == ["coalesce"]
    batch = 0x100000
    # CMOS RAM byte 0x0e through the RTC's index/data ports: index, value, index, read back.
    cmds = ["inl 0x530", "inl 0x534",
            *_batch(batch, [(0, 1, 0x70, 0x0e), (0, 1, 0x71, 0x5a), (0, 1, 0x70, 0x0e), (1, 1, 0x71, 0)]),
            f"outl 0x530 0x{batch:x}",
            f"readl 0x{batch + 4:x}", f"readl 0x{batch + 8 + 3 * 8 + 4:x}",
            "outb 0x70 0x0e", "inb 0x71",            # the replayed write really reached the RTC
            "inl 0x538", "inl 0x53c"]
    r = _qtest(coalesce_qemu, cmds)
    assert _value(r[0]) == SIGNATURE and _value(r[1]) == 64
    status, read_back = _value(r[-6]), _value(r[-5])
    assert status == 0 and read_back == 0x5a
    assert _value(r[-3]) == 0x5a
    assert (_value(r[-2]), _value(r[-1])) == (1, 0)


@pytest.mark.build
@pytest.mark.boot
def test_device_refuses_bad_batches_counts_them_and_goes_on(coalesce_qemu):
    batch = 0x100000
    cmds = [
        *_batch(batch, [], count=65),                               # over the limit (64)
        f"outl 0x530 0x{batch:x}", f"readl 0x{batch + 4:x}",
        *_batch(batch, [(0, 1, 0x531, 0)]),                         # aimed at the doorbell
        f"outl 0x530 0x{batch:x}", f"readl 0x{batch + 4:x}",
        *_batch(batch, [(2, 1, 0x70, 0)]),                          # bad direction
        f"outl 0x530 0x{batch:x}",
        *_batch(batch, [(0, 3, 0x70, 0)]),                          # bad size
        f"outl 0x530 0x{batch:x}",
        "outl 0x530 0xfee00000",                                    # the local APIC (MMIO)
        "outl 0x530 0xf0000000",                                    # nothing there
        "outl 0x530 0x000f0000",                                    # the BIOS (ROM)
        f"outl 0x530 0x{64 * 1024 * 1024 - 4:x}",                   # header past the end of RAM
        *_batch(batch, [(1, 1, 0x71, 0)]),                          # and a good one still works
        f"outl 0x530 0x{batch:x}", f"readl 0x{batch + 4:x}",
        "inl 0x538", "inl 0x53c",
    ]
    r = _qtest(coalesce_qemu, cmds)
    status = [_value(x) for x, c in zip(r, cmds) if c == f"readl 0x{batch + 4:x}"]
    assert status == [1, 2, 0]                 # length, entry, ok
    assert (_value(r[-2]), _value(r[-1])) == (1, 8)   # one replayed, eight refused


# --------------------------------------------------------------------------------------------
# boot: the coalesce kernel on both QEMUs

JOB = """\
set -e
OUT=${GUESTIO_OUT:-/guestio/out}
dmesg > "$OUT/dmesg.txt"
dd if=/dev/urandom of=/tmp/pattern bs=1M count=8 2>/dev/null
sha256sum /tmp/pattern | cut -d' ' -f1 > "$OUT/written.sha256"
dd if=/tmp/pattern of=/dev/sda bs=64k oflag=direct conv=fsync 2> "$OUT/dd-write.txt"
echo 3 > /proc/sys/vm/drop_caches
dd if=/dev/sda of=/tmp/readback bs=64k count=128 iflag=direct 2> "$OUT/dd-read.txt"
sha256sum /tmp/readback | cut -d' ' -f1 > "$OUT/read.sha256"
cat /sys/block/sda/stat > "$OUT/sda-stat.txt"
echo "GUESTIO: phase io-done" > /dev/kmsg
sleep 3
"""
PATTERN_BYTES = 8 << 20


@pytest.fixture(scope="session")
def coalesce_kernel() -> Path:
    build_or_fail("the coalesce kernel", results_path("kernels", "coalesce", "bzImage"))
    return TEST_RESULTS / "kernels" / "coalesce" / "bzImage"


@pytest.fixture(scope="session")
def stock_qemu() -> dict:
    build_or_fail("QEMU stock", results_path("qemu", "stock", "build.json"))
    return qemu.load_build(TEST_RESULTS / "qemu" / "stock" / "build.json")


class DeviceCounters(Hooks):
    """The guestio-coalesce device's counters (QOM), read when the job says its I/O is done
    (phase io-done; the guest powers off right after "job finished")."""

    def __init__(self):
        self.values: dict[str, int] = {}

    def phase(self, machine, name):
        if name != "io-done":
            return None

        async def read():
            for name in COUNTERS:
                self.values[name] = await machine.qmp.execute(
                    "qom-get", {"path": "/machine/guestio-coalesce", "property": name})
        return read()


def _disk_run(build, kernel, initrd, append, tmp_path: Path, hooks=()) -> tuple[Path, Path]:
    job = tmp_path / "job.sh"
    job.write_text(JOB)
    disk = tmp_path / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(16 << 20)
    spec = VMSpec(kernel=kernel, initrd=initrd, append=append, accel="tcg", memory_mib=256, job=job,
                  disks=[DiskSpec(path=disk, interface="ide", cache="none")],
                  qemu=build["binary"], firmware_dir=build["firmware_dir"])
    run_vm(spec, tmp_path / "run", boot_timeout_s=180, job_timeout_s=300, hooks=list(hooks), check=True)
    return tmp_path / "run" / "results", disk


def _check_data(results: Path, disk: Path) -> None:
    written = (results / "written.sha256").read_text().strip()
    with open(disk, "rb") as f:
        on_disk = hashlib.sha256(f.read(PATTERN_BYTES)).hexdigest()
    assert on_disk == written, "what the guest wrote is not what the image holds"
    assert (results / "read.sha256").read_text().strip() == written, "the guest read back other data"


def _coalesce_lines(results: Path) -> list[str]:
    return [ln for ln in (results / "dmesg.txt").read_text().splitlines() if "coalesce:" in ln]


@pytest.mark.boot
def test_coalesce_kernel_on_stock_qemu_keeps_the_stock_path(coalesce_kernel, stock_qemu, guest_initrd,
                                                            guest_append, tmp_path):
    results, disk = _disk_run(stock_qemu, coalesce_kernel, guest_initrd, guest_append, tmp_path)
    lines = _coalesce_lines(results)
    print("\n".join(lines))
    assert lines and all("no I/O-coalescing device at port 0x530" in ln and "stock taskfile path" in ln
                         for ln in lines), lines
    _check_data(results, disk)


@pytest.mark.boot
@pytest.mark.build
def test_coalesce_kernel_on_coalesce_qemu_merges_and_the_data_is_right(coalesce_kernel, coalesce_qemu,
                                                                        guest_initrd, guest_append, tmp_path):
    counters = DeviceCounters()
    results, disk = _disk_run(coalesce_qemu, coalesce_kernel, guest_initrd, guest_append, tmp_path,
                              hooks=[counters])
    lines = _coalesce_lines(results)
    print("\n".join(lines), counters.values)
    assert any(re.search(r"port 0: coalesce: taskfile writes merged through the doorbell at port 0x530", ln)
               for ln in lines), lines
    _check_data(results, disk)
    # 128 writes and 128 reads of 64 KiB, each a device select and a taskfile batch at least.
    assert counters.values["batches"] >= 2 * 256
    assert counters.values["accesses"] >= 6 * counters.values["batches"] // 2
    assert counters.values["refused"] == 0
    assert not any("refused" in ln for ln in lines)


@pytest.mark.boot
@pytest.mark.build
def test_coalesce_kernel_off_on_coalesce_qemu_says_so(coalesce_kernel, coalesce_qemu, guest_initrd,
                                                      guest_append, tmp_path):
    counters = DeviceCounters()
    results, disk = _disk_run(coalesce_qemu, coalesce_kernel, guest_initrd, f"{guest_append} libata.coalesce=0",
                              tmp_path, hooks=[counters])
    lines = _coalesce_lines(results)
    assert lines and all("off (libata.coalesce=0)" in ln for ln in lines), lines
    _check_data(results, disk)
    assert counters.values["batches"] == 0


@pytest.mark.boot
@pytest.mark.build
def test_exit_table_has_the_doorbell_in_place_of_the_taskfile_writes(coalesce_kernel, coalesce_qemu, plugin_so,
                                                                      guest_initrd, guest_append, tmp_path):
    from guestio.exits.backends import tcg_sites

    counter = ExitCounter(plugin_so, trace=True)
    results, disk = _disk_run(coalesce_qemu, coalesce_kernel, guest_initrd, guest_append,
                              tmp_path, hooks=[counter])
    _check_data(results, disk)
    table, summary = tcg_sites(counter, results, coalesce_kernel.with_name("System.map"), workload="dd",
                               variant="coalesce", say=print)
    # the cross-check holds with the replays kept apart, and they were many
    assert summary["cross_check"]["ok"] and summary["cross_check"]["replayed_port_accesses"] > 1000
    job = table[table.phase == "benchmark"]
    pio = job[job.exit_kind.isin(["pio_in", "pio_out"])]
    print(pio.sort_values("count", ascending=False).head(12).to_string())
    taskfile = pio[(pio.function == "iowrite8") & pio.caller.isin(["ata_sff_tf_load", "ata_sff_dev_select"])]
    assert taskfile.empty, taskfile
    doorbell = pio[(pio.exit_kind == "pio_out") & (pio.port_or_address == DOORBELL)]
    by_caller = doorbell.groupby("caller")["count"].sum()
    # 256 commands of 64 KiB: one doorbell for the select and one for the taskfile each, at least
    assert by_caller.get("ata_sff_tf_load", 0) >= 256 and by_caller.get("ata_sff_dev_select", 0) >= 256, by_caller
    assert set(doorbell.function) == {"iowrite32"}
