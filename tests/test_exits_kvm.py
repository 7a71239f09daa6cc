"""guestio.exits.kvm: tracepoint formats -> regexes, exit/entry pairing, summary, recorder.

The fixtures under tests/data/kvmtrace/ (see the README there) hold the same
two-vCPU scenario printed by a 6.1 kernel and by a newer one whose kvm_exit and
kvm_entry carry more fields; both must give the same exits table.  Every number
below is computed by hand from the fixture's timestamps.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd
import pytest

from guestio.exits import schema as exits
from guestio.exits.kvm import FormatError
from guestio.exits.kvm.exit_kinds import classify_exit
from guestio.exits.kvm.formats import load_formats, parse_format
from guestio.exits.kvm.parser import KvmTraceParser
from guestio.exits.kvm.printfmt import PrintFmt
from guestio.exits.kvm.recorder import DEFAULT_EVENTS, KvmTracer
from guestio.exits.kvm.trace_lines import parse_line
from guestio.exits.kvm.trace_reader import parse_trace, parse_trace_dir
from guestio.exits.symbols import SymbolTable

DATA = Path(__file__).parent / "data" / "kvmtrace"
KERNELS = ["linux-6.1", "linux-6.15"]

# (phase, guest_pc, function, offset, exit_kind, port_or_address, count, handling_ns)
EXPECTED = [
    ("boot", 0xffffffff8125276f, "acpi_pm_read", 0x6, "pio_in", 0x608, 3, 12_000 + 9_000 + 10_000),
    ("boot", 0xffffffff8124b399, "kvm_hypercall2.constprop.0", 0xb, "hypercall", 9, 1, 5_000),
    ("benchmark", 0xffffffff81177d0e, "iowrite8", 0x1c, "pio_out", 0x1f6, 1, 18_000),
    ("benchmark", 0xffffffff81177d0e, "iowrite8", 0x1c, "pio_out", 0x1f7, 2, 15_000),  # 2nd: no entry
    ("benchmark", 0xffffffff81177d0e, "iowrite8", 0x1c, "pio_out", 0x176, 1, 12_000),
    ("benchmark", 0xffffffff81177d94, "iowrite32", 0x1c, "pio_out", 0xc004, 1, 6_000),
    ("benchmark", 0xffffffff81177b2b, "ioread8", 0x18, "pio_in", 0xc002, 3, 6_000 + 6_000),  # one lost
    ("benchmark", 0xffffffff81177f2d, "ioread16_rep", 0x2f, "pio_in", 0x170, 1, 40_000),
    ("benchmark", 0xffffffff8131beea, "native_safe_halt", 0x12, "hlt", None, 2, 850_000 + 300_000),
    ("benchmark", 0xffffffff810278dd, "native_apic_mem_write", 0x2, "mmio_write", 0xfee000b0, 2, 3_000 + 3_000),
    ("benchmark", 0xffffffff810278dd, "native_apic_mem_write", 0x2, "mmio_write", 0xfee00380, 1, 4_000),
    ("benchmark", 0xffffffff81177baf, "ioread32", 0x9, "mmio_read", 0xfebc0008, 1, 20_000),
    ("benchmark", 0xffffffff8130f1e7, "clear_page_erms", 0x7, "interrupt", 0xec, 1, 2_000),
    ("benchmark", 0xffffffff81024551, "lapic_next_deadline", 0x1f, "msr_write", 0x6e0, 1, 3_000),
]


@pytest.fixture(scope="module")
def symbols() -> SymbolTable:
    return SymbolTable.from_system_map(DATA / "System.map")


@pytest.fixture(scope="module", params=KERNELS)
def parsed(request, symbols):
    df, summary = parse_trace_dir(DATA / request.param, workload="bonnie", variant="baseline", phase="boot",
                                  symbols=symbols)
    return request.param, df, summary


def _key(df: pd.DataFrame) -> set:
    return {(r.phase, int(r.guest_pc), r.function, None if pd.isna(r.offset) else int(r.offset), r.exit_kind,
             None if pd.isna(r.port_or_address) else int(r.port_or_address), int(r.count),
             None if math.isnan(r.handling_ns) else int(r.handling_ns))
            for r in df.itertuples()}


# ---- format files -----------------------------------------------------------------------------

@pytest.mark.parametrize("kernel", KERNELS)
def test_format_files_give_fields_and_events(kernel):
    formats = load_formats(DATA / kernel)
    assert {"kvm_exit", "kvm_entry", "kvm_pio", "kvm_mmio", "kvm_msr", "kvm_hypercall"} <= set(formats)
    ex = formats["kvm_exit"]
    assert ex.field_names[:4] == ["common_type", "common_flags", "common_preempt_count", "common_pid"]
    assert {"exit_reason", "guest_rip", "isa", "info1", "info2", "intr_info", "error_code", "vcpu_id"} <= set(
        ex.field_names)
    offsets = {f.name: (f.offset, f.size) for f in ex.fields}
    assert offsets["guest_rip"] == (16, 8)
    if kernel == "linux-6.15":
        assert offsets["requests"] == (64, 8)
        assert "intr_info" in formats["kvm_entry"].field_names
    else:
        assert "requests" not in offsets
        assert "intr_info" not in formats["kvm_entry"].field_names


def test_kvm_exit_layouts_differ_between_kernels():
    old, new = (load_formats(DATA / k)["kvm_exit"] for k in KERNELS)
    assert old.print_fmt != new.print_fmt and new.print_fmt.endswith("requests 0x%016llx")
    body = ("vcpu 1 reason EXTERNAL_INTERRUPT rip 0xffffffff8130f1e7 info1 0x0000000000000000 "
            "info2 0x0000000000000000 intr_info 0x800000ec error_code 0x00000000")
    assert new.printer.match(body) is None  # the new layout needs 'requests'
    a = old.printer.match(body)
    b = new.printer.match(body + " requests 0x0000000000000100")
    for k in ("vcpu_id", "guest_rip", "intr_info", "exit_reason:sym", "exit_reason", "isa"):
        assert a[k] == b[k], k
    assert a["exit_reason:sym"] == "EXTERNAL_INTERRUPT" and a["exit_reason"] == 1 and a["isa"] == 1
    assert b["requests"] == 0x100


def test_print_fmt_decodes_each_event():
    f = load_formats(DATA / "linux-6.1")
    ex = f["kvm_exit"].printer.match(
        "vcpu 0 reason IO_INSTRUCTION rip 0xffffffff8125276f info1 0x000000000608000b info2 0x0000000000000000 "
        "intr_info 0x00000000 error_code 0x00000000")
    assert ex["guest_rip"] == 0xffffffff8125276f and ex["info1"] == 0x0608000b and ex["exit_reason"] == 30
    svm = f["kvm_exit"].printer.match(
        "vcpu 0 reason npf rip 0xffffffff81177baf info1 0x0000000100000004 info2 0x00000000febc0008 "
        "intr_info 0x00000000 error_code 0x00000000")
    assert svm["exit_reason:sym"] == "npf" and svm["exit_reason"] == 0x400 and "isa" not in svm
    failed = f["kvm_exit"].printer.match(
        "vcpu 0 reason INVALID_STATE FAILED_VMENTRY rip 0xfff0 info1 0x0000000000000000 info2 0x0000000000000000 "
        "intr_info 0x00000000 error_code 0x00000000")
    assert failed["exit_reason:sym"] == "INVALID_STATE" and failed["exit_reason:flags"] == "FAILED_VMENTRY"
    pio = f["kvm_pio"].printer.match("pio_read at 0x170 size 2 count 256 val 0x4552 (...)")
    assert pio == {**pio, "rw": 0, "port": 0x170, "size": 2, "count": 256, "val": 0x4552}
    assert f["kvm_pio"].printer.match("pio_write at 0x1f6 size 1 count 1 val 0xe0 ")["rw"] == 1
    assert f["kvm_pio"].printer.match("pio_write at 0x1f6 size 1 count 1 val 0xe0")["rw"] == 1  # stripped
    mm = f["kvm_mmio"].printer.match("mmio unsatisfied-read len 4 gpa 0xfebc0008 val 0x0")
    assert mm["type:sym"] == "unsatisfied-read" and mm["type"] == 0 and mm["gpa"] == 0xfebc0008
    msr = f["kvm_msr"].printer.match("msr_read 1b = 0xfee00900 (#GP)")
    assert msr["write"] == 0 and msr["ecx"] == 0x1b and msr["exception"] == 1
    hc = f["kvm_hypercall"].printer.match("nr 0x9 a0 0x3e2f000 a1 0x0 a2 0x0 a3 0x0")
    assert hc["nr"] == 9 and hc["a0"] == 0x3e2f000
    assert f["kvm_entry"].printer.match("vcpu 1, rip 0xffffffff81024553[immediate exit]")["immediate_exit"] == 1
    assert f["kvm_entry"].printer.match("vcpu 1, rip 0xffffffff81024553")["immediate_exit"] == 0
    assert f["kvm_entry"].printer.match("vcpu 1, rip 0xffffffff81024553 garbage") is None


def test_generic_print_fmt_features():
    text = """name: demo
ID: 42
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int delta;\toffset:8;\tsize:4;\tsigned:1;
\tfield:__data_loc char[] name;\toffset:12;\tsize:4;\tsigned:0;
\tfield:unsigned long ip;\toffset:16;\tsize:8;\tsigned:0;
\tfield:unsigned int mode;\toffset:24;\tsize:4;\tsigned:0;

print fmt: "delta=%d name=%s ip=%pS mode=%#x %s|%s", REC->delta, __get_str(name), (void *)REC->ip, REC->mode, __print_flags(REC->mode, "|", { 1, "R" }, { 2, "W" }, { 4UL, "X" }), !REC->delta ? "zero" : "nonzero"
"""
    fmt = parse_format(text)
    assert fmt.name == "demo" and fmt.id == 42 and fmt.field_names[-2:] == ["ip", "mode"]
    r = fmt.printer.match("delta=-12 name=CPU 0/KVM ip=do_idle+0x1c/0x2a0 mode=0x5 R|X|nonzero")
    assert r["delta"] == -12 and r["name"] == "CPU 0/KVM" and r["ip"] == "do_idle+0x1c/0x2a0"
    assert r["mode"] == 5 and r["mode:flags"] == "R|X" and r["delta:bool"] == 1
    r = fmt.printer.match("delta=0 name= ip=0x0 mode=0 |zero")
    assert r["delta"] == 0 and r["mode"] == 0 and r["delta:bool"] == 0
    with pytest.raises(FormatError, match="conversions"):
        PrintFmt("a %d %d", ["REC->x"])
    with pytest.raises(FormatError, match="print fmt"):
        parse_format("name: x\nID: 1\nformat:\n")


@pytest.mark.parametrize("line,expect", [
    ("       CPU 0/KVM-4121    [000] d..1.  5012.000100: kvm_exit: vcpu 0 reason HLT",
     ("CPU 0/KVM", 4121, 0, None, "5012.000100", "kvm_exit", "vcpu 0 reason HLT")),
    ("       CPU 0/KVM-4121    (   4100) [003] d..1.  5012.000100: kvm_entry: vcpu 0, rip 0x1",
     ("CPU 0/KVM", 4121, 3, 4100, "5012.000100", "kvm_entry", "vcpu 0, rip 0x1")),
    ("           <...>-77      [001]  123.456789: kvm_pio: x",   # irq-info off: no flags column
     ("<...>", 77, 1, None, "123.456789", "kvm_pio", "x")),
    ("   kworker/u4:2-9-12     [001] dN.2. 987654321: kvm_exit: raw counter",
     ("kworker/u4:2-9", 12, 1, None, "987654321", "kvm_exit", "raw counter")),
])
def test_parse_line(line, expect):
    tl = parse_line(line)
    assert (tl.comm, tl.pid, tl.cpu, tl.tgid, tl.ts, tl.event, tl.body) == expect


# ---- attribution ------------------------------------------------------------------------------

def test_expected_sites_counts_and_handling(parsed):
    kernel, df, _ = parsed
    exits.validate(df)
    assert list(df.columns) == exits.COLUMNS
    assert set(df["accelerator"]) == {"kvm"} and set(df["caller"]) == {""}
    assert _key(df) == set(EXPECTED), kernel
    bench = df[df["phase"] == "benchmark"]
    assert bench["count"].sum() == 17 and bench["handling_ns"].sum() == 1_288_000
    assert abs(bench["count_share"].sum() - 1) < 1e-12 and abs(bench["time_share"].sum() - 1) < 1e-12
    hlt = bench[bench["exit_kind"] == "hlt"].iloc[0]
    assert hlt["count_share"] == pytest.approx(2 / 17) and hlt["time_share"] == pytest.approx(1_150_000 / 1_288_000)


def test_both_kernels_give_the_same_table(symbols):
    a, sa = parse_trace_dir(DATA / KERNELS[0], workload="w", variant="v", phase="boot", symbols=symbols)
    b, sb = parse_trace_dir(DATA / KERNELS[1], workload="w", variant="v", phase="boot", symbols=symbols)
    pd.testing.assert_frame_equal(a, b)
    for k in ("exits", "exits_matched", "unmatched_exits", "lost_events", "exits_by_kind", "events_parsed"):
        assert sa[k] == sb[k], k


def test_summary_reports_unmatched_and_lost(parsed):
    kernel, _, s = parsed
    assert s["exits"] == 21 and s["exits_matched"] == 19
    assert s["unmatched_exits"] == 2 and s["unmatched_no_entry"] == 1 and s["unmatched_lost"] == 1
    assert {(e["guest_pc"], e["status"]) for e in s["unmatched_examples"]} == {
        ("0xffffffff81177d0e", "no-entry"), ("0xffffffff81177b2b", "lost")}
    assert s["entries_without_exit"] == 1            # the entry after the LOST marker
    assert s["lost_events"] == 17 and s["lost_markers"] == 1 and s["lost_by_cpu"] == {"0": 17}
    assert (s["entries_in_buffer"], s["entries_written"], s["dropped_by_header"]) == (75, 92, 17)
    assert s["overrun"] == 17 and s["events_lost_lower_bound"] == 17
    assert s["events_unknown_names"] == {"kvm_userspace_exit": 12, "kvm_apic": 3}
    assert s["events_unmatched_format"] == 0 and s["unrecognised_lines"] == 0
    assert s["extra_io_events"] == 1                 # the completing 'mmio read' after 'unsatisfied-read'
    assert s["timestamp_resolution_ns"] == 1000 and s["phases"] == ["boot", "benchmark"]
    assert s["buffer_started_cpus"] == ([1] if kernel == "linux-6.15" else [])
    assert s["exits_by_kind"] == {"pio_in": 7, "pio_out": 5, "hypercall": 1, "mmio_write": 3, "mmio_read": 1,
                                  "interrupt": 1, "msr_write": 1, "hlt": 2}


def test_default_phase_and_no_symbols():
    df, s = parse_trace(DATA / "linux-6.1" / "trace", DATA / "linux-6.1", workload="w", variant="v")
    assert set(df["phase"]) == {"benchmark"}      # no marker before the first exits: the default applies
    assert set(df["function"]) == {""} and df["offset"].isna().all()
    assert df["count"].sum() == 21


def _trace(*bodies: str) -> str:
    out = []
    for i, (pid, event, body) in enumerate(bodies):
        out.append(f"       CPU 0/KVM-{pid:<7} [000] d..1.   100.{i * 10:06d}: {event}: {body}")
    return "\n".join(out) + "\n"


EX = ("vcpu 0 reason {r} rip 0x{rip:x} info1 0x{i1:016x} info2 0x{i2:016x} intr_info 0x{ii:08x} "
      "error_code 0x00000000")


def _exit(r, rip=0x1000, i1=0, i2=0, ii=0, pid=7):
    return (pid, "kvm_exit", EX.format(r=r, rip=rip, i1=i1, i2=i2, ii=ii))


def _entry(rip=0x1000, pid=7):
    return (pid, "kvm_entry", f"vcpu 0, rip 0x{rip:x}")


def test_exit_info_fallback_without_io_events():
    text = _trace(_exit("IO_INSTRUCTION", i1=0x01f70000), _entry(),          # out 0x1f7 (dir bit clear)
                  _exit("IO_INSTRUCTION", i1=0x0608000b), _entry(),          # in 0x608, 4 bytes
                  _exit("APIC_ACCESS", i1=0x10b0), _entry(),                 # linear write, no kvm_mmio
                  _exit("EPT_VIOLATION"), _entry(),                          # a page fault, not MMIO
                  _exit("CPUID"), _entry(), _exit("MSR_READ"), _entry())
    df, s = parse_trace(text, DATA / "linux-6.1", workload="w", variant="v")
    got = {(r.exit_kind, None if pd.isna(r.port_or_address) else int(r.port_or_address)) for r in df.itertuples()}
    assert got == {("pio_out", 0x1f7), ("pio_in", 0x608), ("mmio_write", None), ("other", None), ("cpuid", None),
                   ("msr_read", None)}
    assert s["kind_source"]["exit-info"] == 3
    assert (df["handling_ns"] == 10_000).all()


def test_svm_reasons():
    text = _trace(_exit("io", i1=0x01f70001), _entry(),                                 # SVM: bit 0 = IN
                  _exit("npf", i1=0x100000006, i2=0xfebc0008),
                  (7, "kvm_mmio", "mmio write len 4 gpa 0xfebc0008 val 0x1"), _entry(),
                  _exit("msr", i1=1), _entry(),                                        # WRMSR, no kvm_msr
                  _exit("msr"), (7, "kvm_msr", "msr_read 1b = 0xfee00900"), _entry(),
                  _exit("hlt"), _entry(), _exit("interrupt"), _entry(), _exit("hypercall"), _entry())
    df, _ = parse_trace(text, DATA / "linux-6.1", workload="w", variant="v")
    got = {(r.exit_kind, None if pd.isna(r.port_or_address) else int(r.port_or_address)) for r in df.itertuples()}
    assert got == {("pio_in", 0x1f7), ("mmio_write", 0xfebc0008), ("msr_write", None), ("msr_read", 0x1b),
                   ("hlt", None), ("interrupt", None), ("hypercall", None)}


def test_two_exits_without_entry_and_negative_time():
    text = _trace(_exit("HLT", pid=7), _exit("HLT", pid=7), _entry(pid=7))
    df, s = parse_trace(text, DATA / "linux-6.1", workload="w", variant="v")
    assert s["exits"] == 2 and s["unmatched_lost"] == 1 and s["exits_matched"] == 1
    assert df["count"].sum() == 2 and df["handling_ns"].sum() == 10_000
    lines = text.splitlines()
    swapped = "\n".join([lines[0].replace("100.000000", "100.000050"), lines[2].replace("100.000020", "100.000040")])
    df, s = parse_trace(swapped, DATA / "linux-6.1", workload="w", variant="v")
    assert s["negative_handling"] == 1 and df["handling_ns"].isna().all() and s["handling_time_unknown"] == 1


def test_format_mismatch_and_unknown_lines_are_counted():
    text = _trace(_exit("HLT"), (7, "kvm_entry", "vcpu 0 rip 0x1000 something else"),
                  (7, "kvm_userspace_exit", "reason KVM_EXIT_IO (2)")) + "some text the parser cannot read\n"
    _, s = parse_trace(text, DATA / "linux-6.1", workload="w", variant="v")
    assert s["events_unmatched_format"] == 1 and s["unmatched_format_examples"][0].startswith("kvm_entry:")
    assert s["unrecognised_lines"] == 1 and s["events_unknown"] == 1 and s["unmatched_no_entry"] == 1


def test_counter_clock_needs_ticks_per_second():
    text = ("       CPU 0/KVM-7       [000] d..1. 1000: kvm_exit: " + EX.format(r="HLT", rip=1, i1=0, i2=0, ii=0)
            + "\n       CPU 0/KVM-7       [000] d..1. 3500: kvm_entry: vcpu 0, rip 0x2\n")
    with pytest.raises(ValueError, match="ticks_per_second"):
        parse_trace(text, DATA / "linux-6.1", workload="w", variant="v")
    df, s = parse_trace(text, DATA / "linux-6.1", workload="w", variant="v", ticks_per_second=2.5e9)
    assert df["handling_ns"].iloc[0] == 1000.0 and s["timestamp_resolution_ns"] == 1


def test_missing_required_formats():
    formats = load_formats(DATA / "linux-6.1")
    del formats["kvm_entry"]
    with pytest.raises(ValueError, match="kvm_entry"):
        KvmTraceParser(formats)
    with pytest.raises(FileNotFoundError):
        parse_trace(DATA / "no-such-trace", DATA / "linux-6.1", workload="w", variant="v")


def test_classify_exit_table():
    assert classify_exit("HLT") == ("hlt", None, "reason")
    assert classify_exit("VMCALL", io=("kvm_hypercall", {"nr": 5})) == ("hypercall", 5, "event")
    assert classify_exit("EXTERNAL_INTERRUPT", intr_info=0x800000ec) == ("interrupt", 0xec, "exit-info")
    assert classify_exit("EPT_MISCONFIG", io=("kvm_fast_mmio", {"gpa": 0xfe003000})) == (
        "mmio_write", 0xfe003000, "event")
    assert classify_exit("vmmcall")[0] == "hypercall" and classify_exit("intr")[0] == "interrupt"
    assert classify_exit("PAUSE_INSTRUCTION")[0] == "other" and classify_exit("0x4d")[0] == "other"


# ---- recorder against a fake tracefs ----------------------------------------------------------

def _fake_tracefs(root: Path, events=DEFAULT_EVENTS, instance: str | None = None) -> Path:
    base = root / "instances" / instance if instance else root
    base.mkdir(parents=True)
    for name, text in {"tracing_on": "1\n", "trace": "", "buffer_size_kb": "1408\n", "set_event_pid": "",
                       "trace_marker": "", "trace_clock": "[local] global counter uptime perf mono mono_raw boot\n"
                       }.items():
        (base / name).write_text(text)
    src = load_formats(DATA / "linux-6.1")
    for ev in events:
        d = base / "events" / ev
        d.mkdir(parents=True)
        (d / "enable").write_text("0\n")
        (d / "format").write_text((DATA / "linux-6.1" / "events" / ev / "format").read_text()
                                  if ev.split("/")[1] in src else "")
    for cpu in (0, 1):
        st = base / "per_cpu" / f"cpu{cpu}" / "stats"
        st.parent.mkdir(parents=True)
        st.write_text(f"entries: 10\noverrun: {3 * cpu}\ncommit overrun: 0\nbytes: 560\n"
                      "oldest event ts:  5012.000100\nnow ts:  5013.000000\ndropped events: 0\nread events: 0\n")
    return base


def test_recorder_writes_the_right_files(tmp_path):
    events = tuple(e for e in DEFAULT_EVENTS if e != "kvm/kvm_fast_mmio")  # an older/trimmed kernel
    base = _fake_tracefs(tmp_path / "tracing", events)
    (base / "trace").write_text("stale")
    t = KvmTracer([4121, 4122], root=tmp_path / "tracing", instance=None, buffer_size_kb=65536)
    t.setup()
    assert (base / "tracing_on").read_text() == "0" and (base / "trace").read_text() == ""
    assert (base / "buffer_size_kb").read_text() == "65536"
    assert (base / "trace_clock").read_text() == "mono" and t.clock_used == "mono"
    assert (base / "set_event_pid").read_text() == f"4121 4122 {os.getpid()}"
    for ev in events:
        assert (base / "events" / ev / "enable").read_text() == "1", ev
    assert t.skipped == ["kvm/kvm_fast_mmio"]
    t.start()
    assert (base / "tracing_on").read_text() == "1"
    t.mark("benchmark")
    assert (base / "trace_marker").read_text() == "guestio phase=benchmark\n"
    with pytest.raises(ValueError):
        t.mark("two words")
    t.stop()
    assert (base / "tracing_on").read_text() == "0"
    # the kernel would have filled 'trace'; save() copies it with the formats and per-CPU stats
    (base / "trace").write_text((DATA / "linux-6.1" / "trace").read_text())
    out = tmp_path / "saved"
    meta = t.save(out)
    assert meta["overrun"] == 3 and meta["events"] == list(events) and meta["clock"] == "mono"
    assert (out / "events" / "kvm" / "kvm_exit" / "format").read_text() == (
        DATA / "linux-6.1" / "events" / "kvm" / "kvm_exit" / "format").read_text()
    assert (out / "per_cpu" / "cpu1" / "stats").is_file()
    df, s = parse_trace_dir(out, workload="w", variant="v")
    assert df["count"].sum() == 21 and s["overrun"] == 3
    t.teardown()
    assert all((base / "events" / ev / "enable").read_text() == "0" for ev in events)
    assert (base / "set_event_pid").read_text() == ""


def test_recorder_instance_and_required_events(tmp_path):
    base = _fake_tracefs(tmp_path / "tracing", instance="guestio")
    (tmp_path / "tracing" / "trace").write_text("global buffer, untouched")
    with KvmTracer([1], root=tmp_path / "tracing", clock="nonexistent") as t:
        assert t.base == base and (base / "tracing_on").read_text() == "1"
        assert t.clock_used == "global"
    assert (base / "tracing_on").read_text() == "0"
    assert (tmp_path / "tracing" / "trace").read_text() == "global buffer, untouched"
    bare = tmp_path / "bare"
    _fake_tracefs(bare, events=("kvm/kvm_entry",))
    with pytest.raises(FileNotFoundError, match="kvm_exit"):
        KvmTracer([1], root=bare, instance=None).setup()
    with pytest.raises(FileNotFoundError, match="tracefs"):
        KvmTracer([1], root=tmp_path / "absent").setup()


def test_vcpu_threads_and_buffer_size(tmp_path):
    for tid, comm in ((4100, "qemu-system-x86"), (4101, "qemu-system-x86"), (4121, "CPU 0/KVM"),
                      (4122, "CPU 1/KVM"), (4130, "IO mon_iothread"), (4140, "vnc_worker")):
        d = tmp_path / "4100" / "task" / str(tid)
        d.mkdir(parents=True)
        (d / "comm").write_text(comm + "\n")
    assert KvmTracer.vcpu_threads(4100, proc=tmp_path) == [4121, 4122]
    # 20k exits/s for 60 s at 200 B with 2x headroom: 480 MB -> 468750 KiB
    assert KvmTracer.buffer_kb_for(20_000, 60, cpus=2) == 468_750
    assert KvmTracer.buffer_kb_for(1, 1, cpus=1) == 1024


def test_print_fmt_fields_must_exist_in_the_format():
    text = (DATA / "linux-6.1" / "events" / "kvm" / "kvm_pio" / "format").read_text()
    with pytest.raises(FormatError, match="port"):
        parse_format(text.replace("unsigned int port;", "unsigned int portnum;"))


def test_kvm_entry_of_6_1_0_without_immediate_exit(symbols):
    """6.1.0 printed kvm_entry as 'vcpu %u, rip 0x%lx' (immediate_exit came to 6.1 later, from stable)."""
    d = DATA / "linux-6.1"
    formats = {p.parent.name: p.read_text() for p in (d / "events" / "kvm").glob("*/format")}
    formats["kvm_entry"] = (formats["kvm_entry"]
                            .replace("\tfield:bool immediate_exit;\toffset:24;\tsize:1;\tsigned:0;\n", "")
                            .split("print fmt:")[0] + 'print fmt: "vcpu %u, rip 0x%lx", REC->vcpu_id, REC->rip\n')
    trace = (d / "trace").read_text().replace("[immediate exit]", "")
    df, s = parse_trace(trace, formats, workload="bonnie", variant="baseline", phase="boot", symbols=symbols)
    ref, _ = parse_trace_dir(d, workload="bonnie", variant="baseline", phase="boot", symbols=symbols)
    pd.testing.assert_frame_equal(df, ref)
    assert s["events_unmatched_format"] == 0
