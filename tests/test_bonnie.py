"""Tests for guestio.workloads.bonnie and workflow/jobs/bonnie.sh.

The parser tests use real bonnie++ 2.00a output captured on the host and in the
guest (tests/data/bonnie/, see its README.md) and cases derived from it.  The
native tests run the host's bonnie++; the ``boot`` tests run bonnie++ in a TCG
guest (about 12 s each run).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from pathlib import Path

import pytest

from guestio.analysis.measurements import Measurement
from guestio.workloads import bonnie, bonnie_native
from guestio.workloads.bonnie import (REQUIRED_METRICS, BonnieParseError, BonnieRunError, bonnie_args, parse_csv,
                                      parse_csv_file, parse_record)
from guestio.workloads.bonnie_native import run_native
from guestio.workloads.bonnie_vm import read_guest_info, run_vm_bonnie
from guestio.build.disk import make_data_disk
from guestio.vm import VMRunError
from guestio.util import sha256_file

DATA = Path(__file__).parent / "data" / "bonnie"


def text(name: str) -> str:
    return (DATA / name).read_text()


def as_dict(measurements: list[Measurement]) -> dict[str, tuple[float, str]]:
    return {m.metric: (m.value, m.unit) for m in measurements}


def parse_error(name: str, **kw) -> str:
    with pytest.raises(BonnieParseError) as exc:
        parse_csv(text(name), source=name, **kw)
    return str(exc.value)


# --------------------------------------------------------------------------
# bonnie_args


def test_bonnie_args_exact():
    assert bonnie_args("/mnt/data", 512, 256) == [
        "-d", "/mnt/data", "-s", "512", "-r", "256", "-n", "0", "-f", "-u", "root", "-q"]
    assert bonnie_args(Path("/x"), 64, 32, label="guest")[-2:] == ["-m", "guest"]


@pytest.mark.parametrize("size, ram, msg", [
    (100, 64, "-s >= 2 * -r: -s 100 -r 64"),
    (0, 0, "positive"),
    (64, -1, ">= 0"),
])
def test_bonnie_args_rejects(size, ram, msg):
    with pytest.raises(ValueError, match=re.escape(msg)):
        bonnie_args("/d", size, ram)


def test_bonnie_args_rejects_label_that_breaks_the_csv():
    with pytest.raises(ValueError, match="must not contain ','"):
        bonnie_args("/d", 64, 32, label="a,b")


def test_job_script_uses_the_same_options():
    job = bonnie.JOB_SCRIPT.read_text()
    # The option list in the job must spell out bonnie_args("$MNT", ...).
    assert 'set -- -d "$MNT" -s "$SIZE_MIB" -r "$RAM_MIB" -n 0 -f -u root -q' in job
    assert 'set -- "$@" -m "$LABEL"' in job
    assert bonnie_args("/mnt/data", 2, 1)[4:] == ["-r", "1", "-n", "0", "-f", "-u", "root", "-q"]


# --------------------------------------------------------------------------
# Parser: real output


def test_parse_guest_ide():
    record = parse_record(text("guest-ide-256M.csv"), "guest-ide-256M.csv")
    assert (record.format_version, record.bonnie_version, record.name, record.concurrency,
            record.file_size_mib) == ("1.98", "2.00a", "guest", 1, 256)
    assert record.too_fast == () and record.not_run == ()
    assert record.measurements == [
        Measurement("block_write_throughput", 132609.0, "KiB/s"),
        Measurement("block_write_cpu", 81.0, "%"),
        Measurement("rewrite_throughput", 131234.0, "KiB/s"),
        Measurement("rewrite_cpu", 73.0, "%"),
        Measurement("block_read_throughput", 289912.0, "KiB/s"),
        Measurement("block_read_cpu", 57.0, "%"),
        Measurement("random_seeks", 5697.0, "seeks/s"),
        Measurement("block_write_latency", 13706.0, "us"),
        Measurement("rewrite_latency", 6527.0, "us"),
        Measurement("block_read_latency", 9670.0, "us"),
        Measurement("random_seeks_latency", 39645.0, "us"),
    ]
    assert record.value("block_read_throughput") == 289912.0
    assert record.value("no_such_metric") is None


def test_parse_guest_virtio():
    got = as_dict(parse_csv(text("guest-virtio-256M.csv")))
    assert got == {
        "block_write_throughput": (144068.0, "KiB/s"), "block_write_cpu": (83.0, "%"),
        "rewrite_throughput": (144927.0, "KiB/s"), "rewrite_cpu": (71.0, "%"),
        "block_read_throughput": (317143.0, "KiB/s"), "block_read_cpu": (61.0, "%"),
        "random_seeks": (14161.0, "seeks/s"),
        "block_write_latency": (10715.0, "us"), "rewrite_latency": (5978.0, "us"),
        "block_read_latency": (6361.0, "us"), "random_seeks_latency": (7177.0, "us"),
    }


@pytest.mark.parametrize("name", ["guest-ide-256M", "guest-virtio-256M", "native-1G"])
def test_csv_agrees_with_the_human_table(name):
    """bonnie++'s own table (stderr under -q) shows the same %CPU and K/sec (rounded to MiB/s)."""
    record = parse_record(text(f"{name}.csv"), required=())
    row = next(ln for ln in text(f"{name}.log").splitlines() if ln.startswith(record.name))
    cells = row.split()[2:]  # name, size, then put_block %CP rewrite %CP ...
    for metric, cell in zip(["block_write", "rewrite"], [cells[0:2], cells[2:4]]):
        kib = record.value(f"{metric}_throughput")
        assert cell[1] == f"{record.value(f'{metric}_cpu'):.0f}"
        unit = cell[0][-1]
        shown = float(cell[0][:-1]) * {"m": 1024, "g": 1024 * 1024}[unit]
        assert abs(shown - kib) / kib < 0.05, (cell, kib)


def test_plus_placeholders_raise_for_required_metrics():
    msg = parse_error("native-64M.csv")
    assert msg.startswith("native-64M.csv: line 1: block_write_throughput (field 11, put_block) "
                          "is '+++++': too fast to measure")
    assert "shorter than 0.5 s (use a larger -s than 64M)" in msg
    # The same rule for the guest's own +++++ run.
    assert "block_write_throughput (field 11, put_block) is '+++++'" in parse_error(
        "guest-ide-32M.csv")


def test_plus_placeholders_never_become_numbers():
    record = parse_record(text("native-64M.csv"), required=())
    assert record.too_fast == ("block_write_throughput", "block_write_cpu", "rewrite_throughput",
                               "rewrite_cpu", "block_read_throughput", "block_read_cpu",
                               "random_seeks")
    assert as_dict(record.measurements) == {
        "block_write_latency": (1559.0, "us"), "rewrite_latency": (4042.0, "us"),
        "block_read_latency": (3762.0, "us"), "random_seeks_latency": (16072.0, "us"),
    }


def test_partly_measured_native_run():
    # Natively the page cache makes block read too fast even at 1 GiB.
    msg = parse_error("native-1G.csv")
    assert "block_read_throughput (field 17, get_block) is '+++++'" in msg
    assert "larger -s than 1G" in msg
    record = parse_record(text("native-1G.csv"), required=REQUIRED_METRICS[:4])
    assert record.file_size_mib == 1024
    assert as_dict(record.measurements)["block_write_throughput"] == (1274928.0, "KiB/s")
    assert as_dict(record.measurements)["rewrite_cpu"] == (69.0, "%")
    assert "block_read_throughput" in record.too_fast
    assert "block_read_throughput" not in as_dict(record.measurements)


@pytest.mark.parametrize("name", ["native-killed-sigkill.csv", "native-killed-sigint.csv"])
def test_killed_run_is_empty(name):
    assert (DATA / name).stat().st_size == 0  # bonnie++ prints only at the very end
    assert parse_error(name) == (f"{name}: empty (0 bytes): bonnie++ printed no result "
                                 "(it prints only when all tests are done: killed or failed?)")


def test_header_and_two_result_lines():
    assert parse_error("native-64M-x2.csv", required=()) == (
        "native-64M-x2.csv: 2 result lines (lines 2, 3); expected one")
    # A header line before one result line is fine (the header is not used: it is wrong).
    header, first, _ = text("native-64M-x2.csv").splitlines()
    assert len(header.split(",")) == 48 and len(first.split(",")) == 50
    got = parse_csv(f"{header}\n{first}\n", required=())
    assert got == [Measurement("block_write_latency", 144.0, "us"),
                   Measurement("rewrite_latency", 155.0, "us"),
                   Measurement("block_read_latency", 159.0, "us"),
                   Measurement("random_seeks_latency", 12120.0, "us")]


def test_io_tests_skipped():
    assert parse_error("native-s0-n1.csv", required=()) == (
        "native-s0-n1.csv: line 1: field 5 (file_size) is '', expected a size like 512M or 1G "
        "(was -s given?)")


# --------------------------------------------------------------------------
# Parser: cases derived from the real guest output


@pytest.mark.parametrize("name, expected", [
    ("truncated-midline.csv", "truncated-midline.csv: line 1 does not end with a newline: "
                              "output cut off (bonnie++ killed while printing?)"),
    ("truncated-fields.csv", "truncated-fields.csv: line 1: 30 fields, expected 50 "
                             "(line cut off?)"),
    ("wrong-version.csv", "wrong-version.csv: line 1: format version '1.97', expected '1.98' "
                          "(the CSV of bonnie++ 2.00a)"),
    ("non-numeric.csv", "non-numeric.csv: line 1: field 11 (put_block) is not a number: "
                        "'13z609'"),
    ("not-run.csv", "not-run.csv: line 1: block_read_throughput (field 17, get_block) is empty: "
                    "the test did not run"),
    ("bad-latency.csv", "bad-latency.csv: line 1: field 39 (put_block_latency) is not a latency "
                        "like 123us/45ms/6s: '13706xs'"),
    ("whitespace-only.csv", "whitespace-only.csv: only white space: bonnie++ printed no result"),
])
def test_malformed(name, expected):
    assert parse_error(name) == expected


def test_not_run_is_absent_when_not_required():
    record = parse_record(text("not-run.csv"), required=REQUIRED_METRICS[:4])
    assert record.not_run == ("block_read_throughput", "block_read_cpu")
    assert "block_read_throughput" not in as_dict(record.measurements)
    assert as_dict(record.measurements)["block_write_throughput"] == (132609.0, "KiB/s")


def test_latency_units_are_converted_to_microseconds():
    fields = text("guest-ide-256M.csv").rstrip("\n").split(",")
    fields[39], fields[40], fields[42] = "150ms", "2s", "7us"
    got = as_dict(parse_csv(",".join(fields) + "\n"))
    assert got["block_write_latency"] == (150_000.0, "us")
    assert got["rewrite_latency"] == (2_000_000.0, "us")
    assert got["block_read_latency"] == (7.0, "us")


def test_default_source_and_cpu_placeholder_in_a_throughput_field():
    fields = text("guest-ide-256M.csv").rstrip("\n").split(",")
    fields[11] = "+++"  # %CPU's placeholder where a throughput belongs: malformed
    with pytest.raises(BonnieParseError, match=re.escape(
            "<bonnie++ output>: line 1: field 11 (put_block) is not a number: '+++'")):
        parse_csv(",".join(fields) + "\n")


def test_parse_csv_file(tmp_path):
    assert parse_csv_file(DATA / "guest-ide-256M.csv").file_size_mib == 256
    with pytest.raises(BonnieParseError, match=re.escape(f"{tmp_path / 'nope.csv'}: missing")):
        parse_csv_file(tmp_path / "nope.csv")
    (tmp_path / "bin.csv").write_bytes(b"1.98,\xff\n")
    with pytest.raises(BonnieParseError, match="not text"):
        parse_csv_file(tmp_path / "bin.csv")
    with pytest.raises(ValueError, match="unknown bonnie"):
        parse_csv("x\n", required=["block_write"])


# --------------------------------------------------------------------------
# Native runs


needs_bonnie = pytest.mark.skipif(shutil.which("bonnie++") is None,
                                  reason="bonnie++ not installed on the host (envs/setup.sh)")


def only_run_dir(out: Path, workdir: Path) -> Path:
    """The run directory named in bonnie-cmdline.txt: a guestio-run-* directly under workdir."""
    argv = shlex.split((out / "bonnie-cmdline.txt").read_text())
    run_dir = Path(argv[argv.index("-d") + 1])
    assert run_dir.parent == workdir and run_dir.name.startswith(bonnie_native.RUN_DIR_PREFIX), run_dir
    return run_dir


@needs_bonnie
def test_run_native_real(tmp_path):
    workdir, out = tmp_path / "work", tmp_path / "out"
    workdir.mkdir()
    (workdir / "keep.txt").write_text("not bonnie's\n")
    # 64 MiB is far too fast to measure on any host with a page cache: +++++ everywhere.
    got = as_dict(run_native(workdir, 64, 32, out, label="native", required=()))
    assert got.pop("file_size") == (64.0, "MiB")
    assert set(got) == {"block_write_latency", "rewrite_latency", "block_read_latency",
                        "random_seeks_latency"}
    assert all(unit == "us" and value > 0 for value, unit in got.values())
    assert sorted(os.listdir(workdir)) == ["keep.txt"]  # the run's directory removed, ours kept
    record = parse_csv_file(out / "bonnie.csv", required=())
    assert (record.name, record.file_size_mib) == ("native", 64)
    assert "Version 2.00a" in (out / "bonnie.log").read_text()
    run_dir = only_run_dir(out, workdir)
    assert (out / "bonnie-cmdline.txt").read_text() == shlex.join(
        ["bonnie++", *bonnie_args(run_dir, 64, 32, "native")]) + "\n"
    # With the default required metrics the +++++ is an error naming the file.
    with pytest.raises(BonnieParseError, match=re.escape(f"{out / 'bonnie.csv'}: line 1: "
                                                         "block_write_throughput")):
        run_native(workdir, 64, 32, out)
    assert sorted(os.listdir(workdir)) == ["keep.txt"]


def test_run_native_removes_only_what_it_created(tmp_path, monkeypatch):
    """User files in native_dir survive, even ones that appear during the run or look like bonnie's."""
    workdir = tmp_path / "native"
    workdir.mkdir()
    (workdir / "Bonnie.1234").write_text("a user's file with bonnie's name\n")
    (workdir / "notes").mkdir()
    (workdir / "notes" / "a.txt").write_text("user data\n")
    (workdir / f"{bonnie_native.RUN_DIR_PREFIX}mine").mkdir()  # looks like a run directory, has no owner file
    fake = tmp_path / "fake-bonnie"
    # Like bonnie++: its file in -d; meanwhile a user drops a file next to the run directory.
    fake.write_text(f'#!/bin/sh\n: > "$2/Bonnie.4242"\necho during > "$2/../during-the-run"\n'
                    f'cat {DATA / "guest-ide-256M.csv"}\n')
    fake.chmod(0o755)
    monkeypatch.setattr(bonnie_native, "BONNIE", str(fake))
    before = sorted(os.listdir(workdir))
    run_native(workdir, 256, 128, tmp_path / "out")
    assert sorted(os.listdir(workdir)) == sorted(before + ["during-the-run"])
    assert (workdir / "notes" / "a.txt").read_text() == "user data\n"
    assert (workdir / "Bonnie.1234").read_text() == "a user's file with bonnie's name\n"
    # A failing run too.
    monkeypatch.setattr(bonnie_native, "BONNIE", "false")
    with pytest.raises(BonnieRunError):
        run_native(workdir, 256, 128, tmp_path / "out")
    assert sorted(os.listdir(workdir)) == sorted(before + ["during-the-run"])


def test_abandoned_run_directory_is_removed_live_one_kept(tmp_path):
    """A run killed outright leaves its directory; the next run removes it, never a live run's."""
    import subprocess
    import sys
    import time
    workdir = tmp_path / "native"
    holder = subprocess.Popen([sys.executable, "-c", f"""
import sys, time
from guestio.workloads.bonnie_native import native_run_dir
with native_run_dir({str(workdir)!r}) as d:
    (d / "Bonnie.99").write_bytes(b"x" * 4096)
    print(d, flush=True)
    time.sleep(60)
"""], stdout=subprocess.PIPE, text=True)
    live = Path(holder.stdout.readline().strip())
    killed = subprocess.run([sys.executable, "-c", f"""
import os, signal
from guestio.workloads.bonnie_native import native_run_dir
with native_run_dir({str(workdir)!r}) as d:
    (d / "Bonnie.98").write_bytes(b"x" * 4096)
    print(d, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""], stdout=subprocess.PIPE, text=True)
    abandoned = Path(killed.stdout.strip())
    assert killed.returncode == -9 and abandoned.is_dir()
    try:
        with bonnie_native.native_run_dir(workdir) as mine:
            assert mine.is_dir() and live.is_dir()
            assert not abandoned.exists()
        assert not mine.exists() and live.is_dir()
    finally:
        holder.kill()
        holder.wait()


def _fake_bonnie_too_fast_below(tmp_path: Path, min_size_mib: int) -> Path:
    """A bonnie++ whose block read is +++++ for -s under min_size_mib; its argv: -d DIR -s SIZE ..."""
    line = (DATA / "guest-ide-256M.csv").read_text().strip()
    fields = line.split(",")
    fast = ",".join(fields[:17] + ["+++++", "+++"] + fields[19:])
    fake = tmp_path / "fake-bonnie"
    fake.write_text(f'#!/bin/sh\nsize=$4\n: > "$2/Bonnie.$size"\n'
                    f'if [ "$size" -lt {min_size_mib} ]; then line="{fast}"; else line="{line}"; fi\n'
                    'echo "$line" | sed "s/,256M,/,${size}M,/"\n')
    fake.chmod(0o755)
    return fake


def test_run_native_doubles_the_file_while_a_test_is_too_fast(tmp_path, monkeypatch):
    """A read over before bonnie++'s 0.5 s is run again with twice the file; the size used is a row."""
    monkeypatch.setattr(bonnie_native, "BONNIE", str(_fake_bonnie_too_fast_below(tmp_path, 512)))
    said: list[str] = []
    out = tmp_path / "out"
    got = as_dict(run_native(tmp_path / "w", 128, 32, out, log=said.append, max_size_mib=4096))
    assert got["file_size"] == (512.0, "MiB") and got["block_read_throughput"] == (289912.0, "KiB/s")
    assert parse_csv_file(out / "bonnie.csv").file_size_mib == 512
    assert sorted(p.name for p in out.glob("bonnie-*M.csv")) == ["bonnie-128M.csv", "bonnie-256M.csv"]
    assert parse_csv_file(out / "bonnie-128M.csv", required=()).too_fast == ("block_read_throughput",
                                                                             "block_read_cpu")
    assert [m for m in said if "again with" in m] == [
        f"native: block_read_throughput, block_read_cpu took under bonnie++'s {bonnie.MIN_TIME_S} s at -s 128 "
        "(kept as bonnie-128M.csv): again with -s 256",
        f"native: block_read_throughput, block_read_cpu took under bonnie++'s {bonnie.MIN_TIME_S} s at -s 256 "
        "(kept as bonnie-256M.csv): again with -s 512"]
    assert "-s 512" in (out / "bonnie-cmdline.txt").read_text()
    assert sorted(os.listdir(tmp_path / "w")) == []  # every attempt's run directory removed
    # At the limit (or without one) the run fails naming the metric and the size.
    with pytest.raises(BonnieParseError, match=r"block_read_throughput .* larger -s than 256M"):
        run_native(tmp_path / "w", 128, 32, tmp_path / "out2", max_size_mib=256)
    with pytest.raises(BonnieParseError, match=r"block_read_throughput .* larger -s than 128M"):
        run_native(tmp_path / "w", 128, 32, tmp_path / "out3")


def test_run_native_failure_and_missing_program(tmp_path, monkeypatch):
    monkeypatch.setattr(bonnie_native, "BONNIE", "false")
    with pytest.raises(BonnieRunError, match=r"native bonnie\+\+ exited with status 1"):
        run_native(tmp_path / "w", 64, 32, tmp_path / "o")
    monkeypatch.setattr(bonnie_native, "BONNIE", str(tmp_path / "no-such-bonnie"))
    with pytest.raises(BonnieRunError, match="not found on the host"):
        run_native(tmp_path / "w", 64, 32, tmp_path / "o")


def test_run_native_timeout_removes_leftovers(tmp_path, monkeypatch):
    fake = tmp_path / "fake-bonnie"
    # Like a killed bonnie++: its file stays behind.  argv: -d DIR ...
    fake.write_text('#!/bin/sh\n: > "$2/Bonnie.4242"\nexec sleep 30\n')
    fake.chmod(0o755)
    monkeypatch.setattr(bonnie_native, "BONNIE", str(fake))
    workdir = tmp_path / "w"
    with pytest.raises(BonnieRunError, match="did not finish within 1 s"):
        run_native(workdir, 64, 32, tmp_path / "o", timeout_s=1)
    assert os.listdir(workdir) == []


def test_run_native_keeps_outputs_written_into_its_own_directory(tmp_path, monkeypatch):
    fake = tmp_path / "fake-bonnie"
    fake.write_text(f'#!/bin/sh\n: > "$2/Bonnie.4242"\ncat {DATA / "guest-ide-256M.csv"}\n')
    fake.chmod(0o755)
    monkeypatch.setattr(bonnie_native, "BONNIE", str(fake))
    workdir = tmp_path / "w"
    got = as_dict(run_native(workdir, 256, 128, workdir))
    assert got["block_read_throughput"] == (289912.0, "KiB/s")
    assert sorted(os.listdir(workdir)) == ["bonnie-cmdline.txt", "bonnie.csv", "bonnie.log"]
    with pytest.raises(BonnieRunError, match=re.escape(
            "bonnie.csv: bonnie++ reports a 256 MiB file, but -s 512 was asked for")):
        run_native(workdir, 512, 128, workdir)


# --------------------------------------------------------------------------
# Guest runs


def irq_count(interrupts: str, name: str) -> int:
    """Total count of the /proc/interrupts lines whose description mentions *name*."""
    total = 0
    for line in interrupts.splitlines():
        if name in line:
            total += sum(int(x) for x in line.split()[1:] if x.isdigit())
    return total


def o_direct_works(directory: Path) -> bool:
    probe = directory / ".o_direct_probe"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_WRONLY | os.O_DIRECT, 0o600)
    except OSError:
        return False
    os.close(fd)
    probe.unlink()
    return True


@pytest.fixture
def data_disk_320m(tmp_path) -> Path:
    return make_data_disk(tmp_path / "shared" / "data-320M.img", 320)


@pytest.mark.boot
def test_run_vm_bonnie_ide(guest_kernel, guest_initrd, guest_append, data_disk_320m, tmp_path):
    digest = sha256_file(data_disk_320m)
    outdir = tmp_path / "run"
    # cache=none is O_DIRECT on the host, which tmpfs refuses.
    cache = "none" if o_direct_works(tmp_path) else "writeback"
    # -s 256 > the page cache of a 256 MiB guest (whose ramfs root holds ~86 MiB):
    # every test is measured (about 10 s of job under TCG).
    result, measurements = run_vm_bonnie(
        kernel=guest_kernel, initrd=guest_initrd, append=guest_append, accel="tcg",
        memory_mib=256, data_disk=data_disk_320m, interface="ide", cache=cache,
        size_mib=256, ram_mib=128, io_scheduler="none", outdir=outdir,
        boot_timeout_s=60, job_timeout_s=120, label="guest")
    assert result.ok, result
    got = as_dict(measurements)
    for metric in REQUIRED_METRICS:
        value, unit = got[metric]
        assert value > 0 and unit == ("%" if metric.endswith("_cpu") else "KiB/s")
    results = outdir / "results"
    info = read_guest_info(results)
    assert info.scheduler == "none" and "mq-deadline" in info.schedulers
    assert info.clocksource and info.clocksource_after
    # IDE really carried the I/O: ata_piix interrupts grew.
    assert irq_count(info.interrupts_after, "ata_piix") > irq_count(info.interrupts_before,
                                                                     "ata_piix") + 100
    job_log = (results / "job.log").read_text()
    assert f"running: bonnie++ {shlex.join(bonnie_args('/mnt/data', 256, 128, 'guest'))}" \
        in job_log
    assert "bonnie job ok" in job_log
    assert (outdir / "params").read_text() == (
        "DEVICE=/dev/sda\nSIZE_MIB=256\nRAM_MIB=128\nIO_SCHEDULER=none\nLABEL=guest\n")
    # The shared image is untouched and the run's copy is gone.
    assert sha256_file(data_disk_320m) == digest
    assert not (outdir / "data-disk.img").exists()
    assert sorted(p.name for p in data_disk_320m.parent.iterdir()) == ["data-320M.img"]


@pytest.mark.boot
def test_run_vm_bonnie_job_error(guest_kernel, guest_initrd, guest_append, tmp_path):
    disk = make_data_disk(tmp_path / "data-16M.img", 16)
    outdir = tmp_path / "run"
    with pytest.raises(VMRunError) as exc:  # the one error of every failed VM run
        run_vm_bonnie(kernel=guest_kernel, initrd=guest_initrd, append=guest_append,
                      accel="tcg", memory_mib=256, data_disk=disk, interface="virtio",
                      cache="writeback", size_mib=8, ram_mib=4, io_scheduler="cfq",
                      outdir=outdir, boot_timeout_s=60, job_timeout_s=60)
    msg = str(exc.value)
    assert msg.startswith(f"bonnie++ guest run in {outdir}: job-failed:")
    assert re.search(r"bonnie job: error: cannot set I/O scheduler 'cfq' on vda "
                     r"\(available: [a-z -]*\[mq-deadline\][a-z -]*\)", msg), msg
    assert not (outdir / "data-disk.img").exists()
