"""Tests for the exitcount TCG plugin (workflow/plugin) and guestio.exits.tcg.

* The x86 decoder of the plugin is tested through its stand-alone build
  (``exitcount-decode``: the same decode_insn() compiled without QEMU), and so is the
  decision which instructions get the MMIO check (``exitcount-decode -m``: decode_mem,
  decode_flush, may_touch_mmio).
* The sequence-log attribution and the exits rows are tested on synthetic input.
* ``boot``: a real TCG boot of the baseline kernel (clocksource=acpi_pm) with the plugin and
  QEMU's memory_region_ops_* trace, running a short dd job on an IDE data disk: acpi_pm_read
  reads port 0x608, libata's SFF/BMDMA functions show up with their callers, and the
  plugin's per-port / per-MMIO-address counts equal QEMU's own trace events exactly.
* ``boot`` again with the self-check build (-DEXITCOUNT_SELFCHECK): the plugin's RAM-page
  cache and its cached shadow-stack lookups never disagree with what they stand in for.
"""

from __future__ import annotations

import re
import subprocess
import textwrap
from pathlib import Path

import pytest

from guestio.build.plugin import PLUGIN_DIR
from guestio.exits.schema import COLUMNS as EXIT_COLUMNS
from guestio.exits.tcg.cross_check import cross_check
from guestio.exits.tcg.exit_rows import to_exits, to_exits_frame
from guestio.exits.tcg.plugin import run_with_plugin
from guestio.exits.tcg.plugin_csv import PluginRow, phase_instructions, read_plugin_csv
from guestio.exits.tcg.sequence import learn_pio_ports, parse_sequence

from conftest import PLUGIN_BUILD, qemu_trace_event

REPO = Path(__file__).resolve().parents[1]
BUILD = PLUGIN_BUILD


# --------------------------------------------------------------------------------------------
# decoder

# (hex bytes [+ " 16" = code below 1 MiB], "kind detail size port rep")
DECODE_CASES = [
    # port I/O, imm8 forms: the port is in the instruction
    ("e4 71", "pio_in in_imm8 1 113 0"),
    ("e5 40", "pio_in in_imm8 4 64 0"),
    ("66 e5 40", "pio_in in_imm8 2 64 0"),
    ("e6 80", "pio_out out_imm8 1 128 0"),
    ("e7 70", "pio_out out_imm8 4 112 0"),
    ("66 e7 70", "pio_out out_imm8 2 112 0"),
    # DX forms: port unknown (-1)
    ("ec", "pio_in in_dx 1 -1 0"),
    ("ed", "pio_in in_dx 4 -1 0"),
    ("66 ed", "pio_in in_dx 2 -1 0"),
    ("ee", "pio_out out_dx 1 -1 0"),
    ("ef", "pio_out out_dx 4 -1 0"),
    ("66 ef", "pio_out out_dx 2 -1 0"),
    # segment override / lock / address-size prefixes do not matter
    ("2e 66 ef", "pio_out out_dx 2 -1 0"),
    ("64 67 ec", "pio_in in_dx 1 -1 0"),
    # string forms, REP (f3 and f2), REX (ignored: no 64-bit port I/O)
    ("6c", "pio_in ins 1 -1 0"),
    ("f3 6c", "pio_in rep_ins 1 -1 1"),
    ("f3 66 6d", "pio_in rep_ins 2 -1 1"),
    ("66 f3 6d", "pio_in rep_ins 2 -1 1"),
    ("f3 6d", "pio_in rep_ins 4 -1 1"),
    ("f2 6e", "pio_out rep_outs 1 -1 1"),
    ("f3 48 6f", "pio_out rep_outs 4 -1 1"),
    ("48 6d", "pio_in ins 4 -1 0"),
    ("26 6f", "pio_out outs 4 -1 0"),
    # code below 1 MiB may be 16-bit: the word/dword size is unknown, bytes are bytes
    ("ed 16", "pio_in in_dx 0 -1 0"),
    ("66 ed 16", "pio_in in_dx 0 -1 0"),
    ("ec 16", "pio_in in_dx 1 -1 0"),
    ("e6 80 16", "pio_out out_imm8 1 128 0"),
    # a lone 0x40-0x4f is INC/DEC (32-bit), not a REX prefix of nothing
    ("40", "none - 0 -1 0"),
    ("48", "none - 0 -1 0"),
    # other exits
    ("f4", "hlt - 0 -1 0"),
    ("0f a2", "cpuid - 0 -1 0"),
    ("0f 32", "msr_read - 0 -1 0"),
    ("0f 30", "msr_write - 0 -1 0"),
    ("0f 01 c1", "hypercall vmcall 0 -1 0"),
    ("0f 01 d9", "hypercall vmmcall 0 -1 0"),
    ("0f 01 d1", "other xsetbv 0 -1 0"),
    ("0f 09", "other wbinvd 0 -1 0"),
    ("0f 08", "other invd 0 -1 0"),
    ("0f 01 c8", "other monitor 0 -1 0"),
    ("0f 01 c9", "other mwait 0 -1 0"),
    # calls and returns (shadow stack)
    ("e8 00 00 00 00", "call - 0 -1 0"),
    ("ff d0", "call - 0 -1 0"),                  # call *%rax
    ("41 ff d3", "call - 0 -1 0"),               # call *%r11
    ("ff 15 10 00 00 00", "call - 0 -1 0"),      # call *0x10(%rip)
    ("3e ff d0", "call - 0 -1 0"),               # notrack call
    ("c3", "ret - 0 -1 0"),
    ("f3 c3", "ret - 0 -1 0"),                   # rep ret
    ("c2 08 00", "ret - 0 -1 0"),
    ("48 cf", "iret - 0 -1 0"),                  # iretq
    ("cf", "iret - 0 -1 0"),
    # not of interest
    ("ff e0", "none - 0 -1 0"),                  # jmp *%rax
    ("ff 30", "none - 0 -1 0"),                  # push (%rax)
    ("0f 01 f8", "none - 0 -1 0"),               # swapgs
    ("0f 31", "none - 0 -1 0"),                  # rdtsc: no exit with KVM's defaults
    ("90", "none - 0 -1 0"),
    ("66", "none - 0 -1 0"),                     # prefixes only
    ("8b 05 00 00 00 00", "none - 0 -1 0"),      # mov (an MMIO load is found at run time)
]


def test_decoder(plugin_so):
    decoder = BUILD / "exitcount-decode"
    inp = "".join(f"{bytes_}\n" for bytes_, _ in DECODE_CASES)
    out = subprocess.run([str(decoder)], input=inp, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert len(out) == len(DECODE_CASES)
    wrong = [(b, want, got) for (b, want), got in zip(DECODE_CASES, out) if want != got]
    assert wrong == []


# Which instructions get a memory callback (the MMIO check): "hex bytes [m16|m32|m64] [@pc]"
# -> "class [address index] [flush] watch|skip" (exitcount-decode -m: decode_mem, decode_flush,
# may_touch_mmio).  Default pc: kernel text (64-bit code).  A "skip" that is wrong loses MMIO
# accesses (the boot test's cross-check would catch it); a "watch" that could be "skip" only
# costs time.
MEM_CASES = [
    # the stack: implicit, or rsp-based (not r12-based: REX.B)
    ("50", "stack skip"),                             # push %rax
    ("41 5c", "stack skip"),                          # pop %r12
    ("6a 00", "stack skip"),                          # push $0
    ("9c", "stack skip"),                             # pushf
    ("c9", "stack skip"),                             # leave
    ("ff d0", "stack skip"),                          # call *%rax
    ("48 8b 04 24", "rsp skip"),                      # mov (%rsp),%rax
    ("48 89 44 24 08", "rsp skip"),                   # mov %rax,0x8(%rsp)
    ("48 8b 44 cc 10", "rsp skip"),                   # mov 0x10(%rsp,%rcx,8),%rax
    ("ff 34 24", "rsp skip"),                         # push (%rsp)
    ("c5 f9 6f 04 24", "rsp skip"),                   # vmovdqa (%rsp),%xmm0 (VEX)
    ("49 8b 04 24", "reg watch"),                     # mov (%r12),%rax
    ("c4 c2 79 00 04 24", "reg watch"),               # vpshufb (%r12),... (VEX.B)
    # rip-relative: only in 64-bit code (a REX, or pc >= 4 GiB); absolute disp32 in 32-bit code
    ("48 8b 05 10 00 00 00", "rip skip"),
    ("8b 05 10 00 00 00 @401000", "reg watch"),       # 32- or 64-bit: cannot tell
    ("48 8b 05 10 00 00 00 @401000", "rip skip"),     # REX: 64-bit
    ("8b 05 10 00 00 00 @7f0000001000", "rip skip"),  # above 4 GiB: 64-bit
    # segment-based: per-CPU data in the kernel, anything in user space
    ("65 48 8b 04 25 28 00 00 00", "gs skip"),
    ("65 48 8b 04 25 28 00 00 00 @401000", "gs watch"),
    ("64 48 8b 04 25 28 00 00 00", "fs watch"),
    # absolute addresses: the kernel image and modules, not the fixmap (local APIC)
    ("89 3c 25 00 10 00 82", "abs ffffffff82001000 0 skip"),
    ("8b 04 c5 00 10 00 82", "abs ffffffff82001000 1 skip"),
    ("8b 04 25 b0 c0 5f ff", "abs ffffffffff5fc0b0 0 watch"),  # native_apic_mem_read
    ("8b 04 25 00 00 0b 00", "abs b0000 0 watch"),
    # register-based, strings, moffs, XLAT: may be MMIO
    ("8b 07", "reg watch"),                           # readl: mov (%rdi),%eax
    ("89 37", "reg watch"),                           # writel
    ("48 8b 45 f8", "reg watch"),                     # rbp-based
    ("f3 a4", "string watch"),                        # rep movsb (memcpy_toio)
    ("f3 48 ab", "string watch"),                     # rep stosq
    ("a1 b0 c0 5f ff ff ff ff ff", "reg watch"),      # movabs moffs
    ("d7", "reg watch"),                              # xlat
    ("f0 48 0f b1 17", "reg watch"),                  # lock cmpxchg %rdx,(%rdi)
    # implicit or odd addresses behind a ModRM
    ("66 0f f7 c1", "reg watch"),                     # maskmovdqu: stores at %rdi
    ("0f f7 c1", "reg watch"),                        # maskmovq
    ("66 0f 38 f8 04 24", "reg watch"),               # movdir64b: stores at ModRM.reg
    ("c4 e2 79 90 04 24", "reg watch"),               # vpgatherdd: vector index
    ("0f 1b 04 24", "reg watch"),                     # bndstx: bound table
    ("0f 01 fc", "reg watch"),                        # clzero: %rax
    ("0f 01 d8", "reg flush watch"),                  # vmrun: %rax
    # no data access
    ("48 8d 44 24 08", "none skip"),                  # lea
    ("48 89 c7", "none skip"),                        # mov %rax,%rdi
    ("c5 f8 77", "none skip"),                        # vzeroupper
    ("0f a2", "none skip"),                           # cpuid
    ("0f 01 f8", "none skip"),                        # swapgs
    ("8e d8", "none skip"),                           # mov %eax,%ds (GDT: system RAM)
    # 16-bit code (below 1 MiB) and 0x67: other addressing, not decoded
    ("8b 44 24 04 @f0000", "reg watch"),
    ("50 @f0000", "stack skip"),
    ("8b 44 24 04 m32", "rsp skip"),
    ("67 8b 04 24", "reg watch"),
    ("3e 8b 44 24 04 m32", "reg watch"),              # ds: override in 32-bit code
    ("3e 48 8b 44 24 04", "rsp skip"),                # ignored in 64-bit code
    # not decoded at all
    ("62 f1 7c 48 28 04 24", "unknown watch"),        # EVEX
    ("c4 04 24 @401000", "unknown watch"),            # LES (32-bit) or VEX (64-bit)?
    ("0f 04", "unknown watch"),                       # undefined opcode
    # may change QEMU's translation: the RAM-page cache is forgotten
    ("0f 22 d8", "none flush skip"),                  # mov %rax,%cr3
    ("0f 22 e0", "none flush skip"),                  # mov %rax,%cr4
    ("0f 23 f8", "none flush skip"),                  # mov %rax,%dr7
    ("0f 01 3b", "reg flush watch"),                  # invlpg (%rbx)
    ("66 0f 38 82 04 24", "rsp flush skip"),          # invpcid (%rsp),%rax
    ("0f 01 f0", "none flush skip"),                  # lmsw %ax
    ("0f aa", "none flush skip"),                     # rsm
    ("0f 01 ef", "none flush skip"),                  # wrpkru
    ("0f ae 2f", "reg flush watch"),                  # xrstor (%rdi)
    ("48 0f c7 1f", "reg flush watch"),               # xrstors64 (%rdi)
    ("48 cf", "stack flush skip"),                    # iretq
    ("cd 80", "stack flush skip"),                    # int $0x80
    ("ff 2c 24", "rsp flush skip"),                   # ljmp *(%rsp)
    ("ca 08 00", "stack flush skip"),                 # lret $8
    ("0f 20 d8", "none skip"),                        # mov %cr3,%rax: a read
    ("0f 01 10", "reg watch"),                        # lgdt (%rax)
]


def test_memory_operand_classes(plugin_so):
    decoder = BUILD / "exitcount-decode"
    inp = "".join(f"{bytes_}\n" for bytes_, _ in MEM_CASES)
    out = subprocess.run([str(decoder), "-m"], input=inp, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert len(out) == len(MEM_CASES)
    wrong = [(b, want, got) for (b, want), got in zip(MEM_CASES, out) if want != got]
    assert wrong == []


def test_plugin_refuses_bad_arguments(plugin_so, tmp_path):
    """QEMU does not start with an unknown plugin argument or without out=."""
    for args in (f"{plugin_so},bogus=1", f"{plugin_so}"):
        r = subprocess.run(["qemu-system-x86_64", "-nodefaults", "-display", "none",
                            "-machine", "pc,accel=tcg", "-plugin", args, "-S",
                            "-monitor", "none"],
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert r.returncode != 0
        assert "exitcount:" in r.stderr


# --------------------------------------------------------------------------------------------
# sequence log attribution (synthetic)

_ev = qemu_trace_event


def test_parse_sequence_attributes_events(tmp_path):
    log = tmp_path / "qemu.log"
    log.write_text("\n".join([
        _ev("write", 0x3f8, 1, "serial", cpu=-1),              # main loop thread: ignored
        "exitcount: P ffffffff81000010 in 4 - 0 ffffffff81000100",
        "1234@1700000000.000001:" + _ev("read", 0x608, 4, "acpi-tmr"),
        _ev("read", 0xfee00030, 4, "apic-msr"),                # an MMIO access...
        "exitcount: M ffffffff81000020 r 4 fee00030 0",        # ...recorded after it
        "exitcount: phase benchmark",
        "exitcount: P ffffffff81000030 out 1 80 0 0",          # imm8 port 0x80
        _ev("write", 0x80, 1, "ioport80"),
        "exitcount: P ffffffff81000040 out 4 - 0 0",           # outl to a 1-byte region: split
        _ev("write", 0x1f0, 2, "ide"), _ev("write", 0x1f2, 2, "ide"),
        "exitcount: P ffffffff81000050 in 2 - 1 0",            # rep insw, ECX = 0: no access
        "exitcount: M ffffffff81000060 w 8 fed000f0 0",        # 8-byte MMIO split in two
        "exitcount: P ffffffff81000070 in 1 - 0 0",
        _ev("read", 0x1f7, 1, "ide"),
        _ev("write", 0xfed000f0, 4, "hpet"), _ev("write", 0xfed000f4, 4, "hpet"),
        "exitcount: M ffffffff81000060 w 8 fed000f0 0",
        "exitcount: M ffffffff81000080 r 4 fec00000 0",        # no region: no event
        "",
    ]))
    seq = parse_sequence(log)
    assert seq.problems == []
    assert seq.foreign_events == 1 and seq.orphan_events == []
    assert seq.phases == ["boot", "benchmark"]
    kinds = [(r.kind, r.phase, hex(r.pc), r.port if r.events else None, len(r.events))
             for r in seq.records]
    assert kinds == [
        ("P", "boot", "0xffffffff81000010", 0x608, 1),
        ("M", "boot", "0xffffffff81000020", 0xfee00030, 1),
        ("P", "benchmark", "0xffffffff81000030", 0x80, 1),
        ("P", "benchmark", "0xffffffff81000040", 0x1f0, 2),
        ("P", "benchmark", "0xffffffff81000050", None, 0),
        ("M", "benchmark", "0xffffffff81000060", None, 0),
        ("P", "benchmark", "0xffffffff81000070", 0x1f7, 1),
        ("M", "benchmark", "0xffffffff81000060", 0xfed000f0, 2),
        ("M", "benchmark", "0xffffffff81000080", None, 0),
    ]
    assert seq.records[0].caller_site == 0xffffffff81000100
    assert seq.records[2].caller_site is None
    assert learn_pio_ports(seq) == {0xffffffff81000010: {0x608: 1},
                                             0xffffffff81000030: {0x80: 1},
                                             0xffffffff81000040: {0x1f0: 1},
                                             0xffffffff81000070: {0x1f7: 1}}


def test_parse_sequence_reports_inconsistencies(tmp_path):
    log = tmp_path / "qemu.log"
    log.write_text("\n".join([
        _ev("read", 0x61, 1, "pcspk"),                         # before any record: orphan
        "exitcount: P ffffffff81000010 out 1 70 0 0",          # imm8 0x70 ...
        _ev("write", 0x71, 1, "rtc"),                          # ... but QEMU saw 0x71
        "exitcount: P ffffffff81000020 in 1 - 0 0",
        _ev("write", 0x3f8, 1, "serial"),                      # direction
        "exitcount: P ffffffff81000030 in 4 - 0 0",
        _ev("read", 0x1f0, 2, "ide"),                          # size
        "exitcount: P ffffffff81000040 in 1 - 0 0",            # no event at all
        "",
    ]))
    seq = parse_sequence(log)
    text = "\n".join(seq.problems)
    assert len(seq.orphan_events) == 1
    assert "port mismatch at pc 0xffffffff81000010" in text
    assert "direction mismatch at pc 0xffffffff81000020" in text
    assert "size mismatch at pc 0xffffffff81000030" in text
    assert "pc 0xffffffff81000040 (boot) has no trace event" in text
    rows = [PluginRow("boot", 0xffffffff81000010, "pio_out", "out_imm8", 0x70, 1, None, "", 1, 1)]
    check = cross_check(rows, seq)
    assert not check.ok


def _symbols(tmp_path) -> Path:
    p = tmp_path / "System.map"
    p.write_text(textwrap.dedent("""\
        ffffffff81000000 T _stext
        ffffffff81000000 T acpi_pm_read
        ffffffff81000100 T clocksource_watchdog
        ffffffff81000200 T ioread8
        ffffffff81000300 T ata_bmdma_status
        ffffffff81000400 t ata_sff_dev_select
        ffffffff81000500 T _etext
        """))
    return p


def test_to_exits(tmp_path):
    rows = [
        PluginRow("boot", None, "insns", "", None, 0, None, "", 1000, 10),
        PluginRow("benchmark", 0xffffffff81000004, "pio_in", "in_dx", None, 4,
                  0xffffffff81000123, "", 6, 6),
        PluginRow("benchmark", 0xffffffff81000204, "pio_in", "in_dx", None, 1,
                  0xffffffff81000310, "", 3, 3),
        PluginRow("benchmark", 0xffffffff81000204, "pio_in", "in_dx", None, 1,
                  0xffffffff81000410, "", 1, 1),
        PluginRow("benchmark", 0x401000, "cpuid", "", None, 0, None, "", 2, 2),
    ]
    smap = _symbols(tmp_path)
    ports = {0xffffffff81000004: {0x608: 9}, 0xffffffff81000204: {0x1f7: 2, 0xc002: 5}}
    ex = to_exits(rows, smap, workload="dd", variant="baseline", pio_ports=ports,
                  extra_columns=True)
    assert [r["function"] for r in ex] == ["acpi_pm_read", "ioread8", "", "ioread8"]
    assert [r["space"] for r in ex] == ["kernel", "kernel", "user", "kernel"]
    top = ex[0]
    assert set(EXIT_COLUMNS) <= set(top)
    assert top["accelerator"] == "tcg-modelled" and top["workload"] == "dd"
    assert top["offset"] == 4 and top["caller"] == "clocksource_watchdog"
    assert top["port_or_address"] == "0x608"           # the only port that pc used
    assert top["count"] == 6 and top["count_share"] == pytest.approx(6 / 12)
    assert top["handling_ns"] is None and top["time_share"] is None
    io8 = [r for r in ex if r["function"] == "ioread8"]
    assert {r["caller"] for r in io8} == {"ata_bmdma_status", "ata_sff_dev_select"}
    assert all(r["port_or_address"] == "" for r in io8)  # several ports: unknown
    # exact split from the same run's sequence: {(phase, pc, caller_site): {port: n}}
    exact = {("benchmark", 0xffffffff81000004, 0xffffffff81000123): {0x608: 6},
             ("benchmark", 0xffffffff81000204, 0xffffffff81000310): {0xc002: 3},
             ("benchmark", 0xffffffff81000204, 0xffffffff81000410): {0x1f7: 1}}
    ex = to_exits(rows, smap, workload="dd", variant="baseline", pio_ports=exact)
    got = {(r["function"], r["caller"], r["port_or_address"]): r["count"] for r in ex}
    assert got == {("acpi_pm_read", "clocksource_watchdog", "0x608"): 6,
                   ("ioread8", "ata_bmdma_status", "0xc002"): 3,
                   ("ioread8", "ata_sff_dev_select", "0x1f7"): 1,
                   ("", "", ""): 2}
    # the same as a validated guestio.exits.schema frame
    df = to_exits_frame(rows, smap, workload="dd", variant="baseline", pio_ports=exact)
    assert list(df.columns) == EXIT_COLUMNS
    assert set(df["accelerator"]) == {"tcg-modelled"} and df["handling_ns"].isna().all()
    assert df["count_share"].sum() == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------
# a real boot

DISK_JOB = """\
# exitcount test job: a few MiB written to and read from the raw IDE disk.
set -e
echo "GUESTIO: phase disk-write" >/dev/kmsg
dd if=/dev/zero of=/dev/sda bs=64k count=64 conv=fsync
echo 3 >/proc/sys/vm/drop_caches
echo "GUESTIO: phase disk-read" >/dev/kmsg
dd if=/dev/sda of=/dev/null bs=64k count=64
cat /sys/devices/system/clocksource/clocksource0/current_clocksource
"""


def disk_job_spec(tmp_path: Path, kernel: Path, initrd: Path, append: str):
    from guestio.build.disk import make_data_disk
    from guestio.vm import DiskSpec, VMSpec
    job = tmp_path / "job.sh"
    job.write_text(DISK_JOB)
    disk = make_data_disk(tmp_path / "disk.img", 16, fs="none")
    return VMSpec(kernel=kernel, initrd=initrd, accel="tcg", job=job, memory_mib=256,
                  append=f"{append} clocksource=acpi_pm",
                  disks=[DiskSpec(disk, "ide", cache="unsafe")])


@pytest.mark.boot
def test_disk_job_with_plugin_and_trace(plugin_so, guest_kernel, guest_initrd, guest_append,
                                        tmp_path):
    spec = disk_job_spec(tmp_path, guest_kernel, guest_initrd, guest_append)
    run = run_with_plugin(spec, tmp_path / "out", plugin_so, trace=True,
                                   boot_timeout_s=600, job_timeout_s=600)
    assert run.result.ok, run.result
    job_log = (run.outdir / "results" / "job.log").read_text()
    assert "acpi_pm" in job_log

    rows = read_plugin_csv(run.csv)
    insns = phase_instructions(rows)
    for phase in ("boot", "init", "benchmark", "disk-write", "disk-read", "shutdown"):
        assert insns.get(phase, 0) > 0, (phase, insns)

    seq = parse_sequence(run.log)
    check = cross_check(rows, seq)
    assert check.ok, check.summary()
    assert check.pio_plugin == check.pio_qemu and check.pio_qemu.get(0x608, 0) > 0
    assert check.mmio_regions.get("apic-msi", 0) > 0   # the local APIC (QEMU names its region
    # "apic-msi": LAPIC MMIO and MSI share it) is MMIO under TCG

    smap = Path(guest_kernel).with_name("System.map")
    ex = to_exits(rows, smap, workload="dd", variant="baseline", pio_ports=seq.pio_by_site)
    pm = [r for r in ex if r["function"] == "acpi_pm_read"]
    assert pm and all(r["exit_kind"] == "pio_in" and r["port_or_address"] == "0x608"
                      for r in pm)
    assert all(r["caller"] for r in pm if r["phase"] in ("disk-write", "disk-read"))

    io = [r for r in ex if r["phase"] in ("disk-write", "disk-read")]
    ata = [r for r in io if r["caller"].startswith(("ata_sff_", "ata_bmdma_"))
           or r["function"].startswith(("ata_sff_", "ata_bmdma_"))]
    assert {r["caller"] for r in ata} & {"ata_bmdma_status", "ata_bmdma_setup",
                                         "ata_sff_dev_select", "ata_sff_tf_load"}, ata[:10]
    # the IDE ports (primary channel 0x1f0-0x1f7 / 0x3f6, BMDMA in the PIIX's BAR4) are there
    ports = {int(r["port_or_address"], 16) for r in ata if r["port_or_address"]}
    assert ports & set(range(0x1f0, 0x1f8)), sorted(map(hex, ports))


@pytest.fixture(scope="session")
def selfcheck_so(plugin_so, tmp_path_factory) -> Path:
    """The plugin built with -DEXITCOUNT_SELFCHECK (every RAM-cache hit and cached stack
    lookup redone and compared), with the header the normal build used."""
    out = tmp_path_factory.mktemp("selfcheck")
    cflags = "-O2 -g -Wall -Wextra -Wno-unused-parameter -DEXITCOUNT_SELFCHECK"
    try:
        subprocess.run(["make", "-s", "-C", str(PLUGIN_DIR), f"BUILD={out}",
                        f"HDR_DIR={BUILD / 'include'}", f"CFLAGS={cflags}",
                        "plugin"], check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"building the self-check plugin failed: {exc.stdout}\n{exc.stderr}")
    return out / "libexitcount.so"


@pytest.mark.boot
def test_caches_agree_with_qemu(selfcheck_so, guest_kernel, guest_initrd, guest_append,
                                tmp_path):
    """A boot and the disk job: every hit of the plugin's RAM-page cache (which skips
    qemu_plugin_get_hwaddr) is what QEMU's TLB says, every cached shadow-stack lookup is what
    the stack table says."""
    spec = disk_job_spec(tmp_path, guest_kernel, guest_initrd, guest_append)
    run = run_with_plugin(spec, tmp_path / "out", selfcheck_so, boot_timeout_s=600,
                                   job_timeout_s=600)
    assert run.result.ok, run.result
    stderr = (run.outdir / "qemu-stderr.log").read_text()
    m = re.search(r"exitcount: selfcheck: (\d+) RAM-cache hits, (\d+) wrong; (\d+) cached stack "
                  r"lookups, (\d+) wrong", stderr)
    assert m, stderr[-2000:]
    hits, wrong, lookups, stack_wrong = map(int, m.groups())
    assert hits > 10_000_000 and lookups > 1_000_000, m.group(0)
    assert wrong == 0 and stack_wrong == 0, stderr[-2000:]
