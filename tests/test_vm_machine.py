"""Tests for the VM lifecycle (guestio.vm.machine and its helpers) and guestio.vm.accel.

Tests marked ``boot`` start real TCG guests; they need GUESTIO_TEST_KERNEL and
GUESTIO_TEST_INITRD (see conftest.py).  Every test that starts QEMU checks
afterwards that no QEMU process mentioning its tmp dir is left and that the
private temp dir holding the QMP socket is gone.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from guestio.vm import (JOB_LIB, DiskSpec, Hooks, Machine, NicSpec, RunResult, VMRunError, VMSpec, VMSpecError,
                        build_qemu_argv, load_run, run_vm)
from guestio.vm import accel as accel_mod
from guestio.vm import machine as lifecycle
from guestio.vm.accel import AcceleratorError, probe_accelerator
from guestio.vm.console import PANIC_RE
from guestio.vm.guest_results import UnsafeTar, extract_results

OUTDIR_FILES = ("qemu-cmdline.json", "qemu-stderr.log", "serial.log", "qmp-events.jsonl",
                "run.json")


# --------------------------------------------------------------------------
# helpers / fixtures


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """Live (non-zombie) processes whose command line contains *text*."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                "utf-8", "replace")
        except OSError:
            continue
        if text in cmdline:
            found.append((int(entry.name), cmdline))
    return found


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """tmp dir for one test; QEMU temp dirs go to sandbox/t (checked empty afterwards)."""
    tmpdir = tmp_path / "t"
    tmpdir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))
    yield tmp_path
    assert processes_mentioning(str(tmp_path)) == [], "QEMU left behind"
    assert list(tmpdir.iterdir()) == [], "temp dir with the QMP socket left behind"


def write_job(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(body).lstrip())
    return path


@pytest.fixture
def make_spec(guest_kernel, guest_initrd, guest_append, sandbox):
    def make(job_body: str = "true\n", **kw) -> VMSpec:
        job = write_job(sandbox / "job.sh", job_body)
        kw.setdefault("append", guest_append)
        kw.setdefault("memory_mib", 256)
        return VMSpec(kernel=guest_kernel, initrd=guest_initrd, accel="tcg", job=job, **kw)
    return make


def check_outdir(outdir: Path, status: str) -> RunResult:
    for name in OUTDIR_FILES:
        assert (outdir / name).is_file(), name
    result, spec = load_run(outdir / "run.json")
    assert result.status == status, result
    assert spec["accel"] in ("tcg", "kvm")
    assert json.loads((outdir / "qemu-cmdline.json").read_text())[0].startswith("qemu-system")
    return result


# --------------------------------------------------------------------------
# no QEMU boot needed


def test_argv_contains_contract_options(tmp_path):
    spec = VMSpec(kernel=Path("/k/bzImage"), initrd=Path("/k/initrd"), append="console=ttyS0",
                  accel="kvm", machine_opts="kernel_irqchip=on", cpus=2, memory_mib=1024,
                  job=Path("/j/job,1.sh"), inputs={"data": Path("/j/data")},
                  disks=[DiskSpec(Path("/d/a.img"), "ide"), DiskSpec(Path("/d/b.img"), "virtio",
                                                                      cache="writeback"),
                         DiskSpec(Path("/d/c.img"), "ide")],
                  nics=[NicSpec("e1000"), NicSpec("virtio-net-pci", "user,restrict=on")],
                  extra_args=["-cpu", "host"])
    argv = build_qemu_argv(spec, tmp_path / "serial.log", tmp_path / "qmp.sock",
                           tmp_path / "results.tar")
    line = " ".join(argv)
    for opt in ("-nodefaults", "-no-user-config", "-nographic", "-no-reboot", "-S"):
        assert opt in argv
    assert "-machine pc,accel=kvm,kernel_irqchip=on" in line
    assert "-m 1024" in line and "-smp 2" in line
    assert "-append console=ttyS0" in line
    assert "-serial chardev:serial0" in line
    assert f"file,id=serial0,path={tmp_path}/serial.log" in line
    assert "name=org.guestio.results" in line
    assert "name=opt/guestio/job,file=/j/job,,1.sh" in line  # comma escaped
    assert "name=opt/guestio/data,file=/j/data" in line
    assert f"name=opt/guestio/lib.sh,file={JOB_LIB}" in line and JOB_LIB.is_file()
    assert "ide-hd,drive=disk0,bus=ide.0,unit=0" in line
    assert "ide-hd,drive=disk2,bus=ide.0,unit=1" in line
    assert "virtio-blk-pci,drive=disk1" in line
    assert "file=/d/b.img,format=raw,if=none,id=disk1,cache=writeback" in line
    assert "-netdev user,restrict=on,id=net1 -device virtio-net-pci,netdev=net1,romfile=" in line
    assert argv[-2:] == ["-cpu", "host"]


def test_missing_files_are_refused_before_qemu(tmp_path):
    k = tmp_path / "bzImage"
    k.write_bytes(b"k")
    i = tmp_path / "initrd"
    i.write_bytes(b"i")
    cases = [
        (VMSpec(kernel=tmp_path / "nokernel", initrd=i, append=""), "nokernel"),
        (VMSpec(kernel=k, initrd=tmp_path / "noinitrd", append=""), "noinitrd"),
        (VMSpec(kernel=k, initrd=i, append="", job=tmp_path / "nojob.sh"), "nojob.sh"),
        (VMSpec(kernel=k, initrd=i, append="", inputs={"x": tmp_path / "noinput"}), "noinput"),
        (VMSpec(kernel=k, initrd=i, append="", disks=[DiskSpec(tmp_path / "nodisk.img")]),
         "nodisk.img"),
    ]
    for spec, name in cases:
        with pytest.raises(FileNotFoundError, match=name):
            run_vm(spec, tmp_path / "out", 10, 10)
    assert not (tmp_path / "out").exists()
    with pytest.raises(VMSpecError, match="input name"):
        VMSpec(kernel=k, initrd=i, append="", inputs={"../x": k}).validate()
    for reserved in ("job", "lib.sh"):  # the job and the jobs' shared library have their own entries
        with pytest.raises(VMSpecError, match="reserved"):
            VMSpec(kernel=k, initrd=i, append="", inputs={reserved: k}).validate()
    with pytest.raises(VMSpecError, match="accel"):
        VMSpec(kernel=k, initrd=i, append="", accel="hvf").validate()


@pytest.mark.parametrize("line,hit", [
    ("[    1.234567] Kernel panic - not syncing: Requested init /x failed (error -2).", True),
    ("[    2.000000] Oops: 0002 [#1] PREEMPT SMP", True),
    ("[    2.000000] BUG: kernel NULL pointer dereference, address: 0000000000000000", True),
    ("[    2.000000] [    T1] BUG: soft lockup - CPU#0 stuck for 22s!", True),
    ("Kernel panic - not syncing: VFS: Unable to mount root fs", True),
    ("[    1.000000] Run /init as init process", False),
    ("echo 'this is not a BUG: really'", False),
])
def test_panic_pattern(line, hit):
    assert bool(PANIC_RE.match(line)) == hit


def _tar_with(names: list[str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = 2
            tf.addfile(info, io.BytesIO(b"x\n"))
    return buf.getvalue()


def test_results_extraction_is_safe(tmp_path):
    good = tmp_path / "good.tar"
    good.write_bytes(_tar_with(["./exit_status", "./sub/job.log"]))
    assert sorted(extract_results(good, tmp_path / "r")) == ["exit_status",
                                                                      "sub/job.log"]
    for bad in (["../escape"], ["/etc/escape"], ["./a/../../escape"]):
        tar = tmp_path / "bad.tar"
        tar.write_bytes(_tar_with(bad))
        with pytest.raises(UnsafeTar):
            extract_results(tar, tmp_path / "r2")
    assert not (tmp_path / "escape").exists()


def test_qemu_bad_option_is_qemu_failed(sandbox):
    k = sandbox / "bzImage"
    k.write_bytes(b"not a kernel")
    spec = VMSpec(kernel=k, initrd=k, append="", extra_args=["-no-such-option"])
    result = run_vm(spec, sandbox / "out", 10, 10)
    assert result.status == "qemu-failed"
    assert "invalid option" in result.reason and "-no-such-option" in result.reason
    assert result.qemu_returncode == 1
    check_outdir(sandbox / "out", "qemu-failed")


# --------------------------------------------------------------------------
# accelerator choice (probe boots faked)


def _fake_run_vm(result: RunResult, calls: list, tcg: RunResult | None = None):
    """A probe boot's outcome under kvm (*result*) and under tcg (*tcg*: the guest reaches init)."""
    def fake(spec, outdir, boot_timeout_s, job_timeout_s, log=None):
        calls.append(spec)
        assert spec.accel in ("kvm", "tcg") and spec.job.read_text() == "echo probe\n"
        Path(outdir).mkdir(parents=True, exist_ok=True)
        (Path(outdir) / "serial.log").write_text("SeaBIOS\nBooting from ROM...\n")
        if spec.accel == "tcg":
            return tcg or RunResult("ok", "", exit_status=0, boot_s=4.0, job_s=0.1)
        return result
    return fake


def test_accel_tcg_requested_does_not_probe(monkeypatch):
    monkeypatch.setattr(accel_mod, "run_vm", lambda *a, **k: pytest.fail("probed"))
    assert probe_accelerator("k", "i", "tcg") == ("tcg", "tcg requested")


def test_accel_auto_without_dev_kvm(monkeypatch, tmp_path):
    monkeypatch.setattr(accel_mod, "KVM_DEVICE", tmp_path / "kvm")
    monkeypatch.setattr(accel_mod, "run_vm", lambda *a, **k: pytest.fail("probed"))
    accel, reason = probe_accelerator("k", "i", "auto")
    assert accel == "tcg" and "does not exist" in reason
    with pytest.raises(AcceleratorError, match="does not exist"):
        probe_accelerator("k", "i", "kvm")


@pytest.mark.parametrize("requested", ["auto", "kvm"])
def test_accel_probe_outcomes(monkeypatch, tmp_path, requested):
    dev = tmp_path / "kvm"
    dev.write_text("")
    monkeypatch.setattr(accel_mod, "KVM_DEVICE", dev)
    monkeypatch.chdir(tmp_path)
    Path("k").write_text("kernel")
    Path("i").write_text("initrd")
    calls: list = []
    ok = RunResult("ok", "", exit_status=0, boot_s=1.5, job_s=0.1)
    monkeypatch.setattr(accel_mod, "run_vm", _fake_run_vm(ok, calls))
    accel, reason = probe_accelerator("k", "i", requested, timeout_s=7)
    assert accel == "kvm" and "1.5 s" in reason and len(calls) == 1

    hung = RunResult("boot-timeout", "guest did not reach init within 7 s")
    monkeypatch.setattr(accel_mod, "run_vm", _fake_run_vm(hung, calls))
    expected = ("a probe boot did not reach init within 7 s: "
                "last serial line: Booting from ROM...")
    if requested == "auto":
        accel, reason = probe_accelerator("k", "i", requested, timeout_s=7)
        assert accel == "tcg" and expected in reason
    else:
        with pytest.raises(AcceleratorError, match="kvm requested but .*did not reach init"):
            probe_accelerator("k", "i", requested, timeout_s=7)


# --------------------------------------------------------------------------
# real boots (TCG)


@pytest.mark.boot
def test_job_ok_with_results_devices_and_inputs(make_spec, sandbox):
    (sandbox / "data.txt").write_text("input payload\n")
    disk_v = sandbox / "v.img"
    disk_i = sandbox / "i.img"
    for d in (disk_v, disk_i):
        with open(d, "wb") as f:
            f.truncate(8 << 20)
    spec = make_spec(
        """
        echo hello > $GUESTIO_OUT/hello.txt
        if [ -n "$GUESTIO_IN" ]; then cat $GUESTIO_IN/data; else
            cat /sys/firmware/qemu_fw_cfg/by_name/opt/guestio/data/raw; fi > $GUESTIO_OUT/data.txt
        ls /sys/block > $GUESTIO_OUT/block.txt
        ls /sys/class/net > $GUESTIO_OUT/net.txt
        """,
        inputs={"data": sandbox / "data.txt"},
        disks=[DiskSpec(disk_v, "virtio"), DiskSpec(disk_i, "ide", cache="writeback")],
        nics=[NicSpec("e1000")])
    lines: list[str] = []
    out = sandbox / "out"
    result = run_vm(spec, out, boot_timeout_s=60, job_timeout_s=60, log=lines.append)
    assert result.status == "ok", result
    assert result.exit_status == 0 and result.qemu_returncode == 0
    assert 0 < result.boot_s < result.wall_s and result.job_s >= 0
    assert (out / "results" / "hello.txt").read_text() == "hello\n"
    assert (out / "results" / "data.txt").read_text() == "input payload\n"
    assert {"vda", "sda"} <= set((out / "results" / "block.txt").read_text().split())
    assert "eth0" in (out / "results" / "net.txt").read_text().split()
    assert check_outdir(out, "ok") == result
    events = [json.loads(l) for l in (out / "qmp-events.jsonl").read_text().splitlines()]
    assert {"event": "SHUTDOWN", "data": {"guest": True, "reason": "guest-shutdown"}}.items() \
        <= {k: v for k, v in events[-1].items() if k != "timestamp"}.items()
    assert any(l.startswith("init reached after") for l in lines)
    assert any(l.startswith("job finished status 0") for l in lines)


@pytest.mark.boot
def test_job_exit_3_is_job_failed(make_spec, sandbox):
    result = run_vm(make_spec("echo failing; exit 3\n"), sandbox / "out", 60, 60)
    assert result.status == "job-failed" and result.exit_status == 3, result
    assert "status 3" in result.reason
    assert "failing" in (sandbox / "out" / "results" / "job.log").read_text()
    check_outdir(sandbox / "out", "job-failed")


@pytest.mark.boot
def test_guest_error_without_job(make_spec, sandbox):
    spec = make_spec()
    spec.job = None  # the guest init reports "GUESTIO: error: no job ..." and powers off
    result = run_vm(spec, sandbox / "out", 60, 60)
    assert result.status == "results-missing", result
    assert "GUESTIO: error: no job" in result.reason
    assert result.boot_s is not None and result.exit_status is None
    check_outdir(sandbox / "out", "results-missing")


@pytest.mark.boot
def test_job_timeout(make_spec, sandbox):
    result = run_vm(make_spec("sleep 600\n"), sandbox / "out", boot_timeout_s=60,
                    job_timeout_s=2)
    assert result.status == "job-timeout", result
    assert result.boot_s is not None and result.exit_status is None
    assert result.wall_s < 30
    check_outdir(sandbox / "out", "job-timeout")


@pytest.mark.boot
def test_boot_timeout(make_spec, sandbox):
    result = run_vm(make_spec(), sandbox / "out", boot_timeout_s=0.2, job_timeout_s=60)
    assert result.status == "boot-timeout", result
    assert "last serial line" in result.reason and result.boot_s is None
    check_outdir(sandbox / "out", "boot-timeout")


@pytest.mark.boot
@pytest.mark.parametrize("panic_param", ["panic=-1", "panic=0"])
def test_kernel_panic(make_spec, sandbox, panic_param):
    # panic=-1: the guest resets and QEMU (-no-reboot) exits by itself;
    # panic=0: the guest hangs in the panic and the runner must stop QEMU at once.
    spec = make_spec(append=f"console=ttyS0 nokaslr {panic_param} "
                            "rdinit=/nonexistent init=/nonexistent")
    result = run_vm(spec, sandbox / "out", boot_timeout_s=120, job_timeout_s=60)
    assert result.status == "panic", result
    assert "Kernel panic - not syncing" in result.reason
    assert result.wall_s < 60
    check_outdir(sandbox / "out", "panic")


@pytest.mark.boot
def test_qemu_bad_device_is_qemu_failed(make_spec, sandbox):
    spec = make_spec(extra_args=["-device", "no-such-device"])
    result = run_vm(spec, sandbox / "out", 60, 60)
    assert result.status == "qemu-failed", result
    assert "no-such-device" in result.reason
    check_outdir(sandbox / "out", "qemu-failed")


_SUBPROCESS_RUN = """
import json, sys
from pathlib import Path
from guestio.vm import VMSpec, run_vm
spec = json.loads(sys.argv[1])
spec = VMSpec(kernel=Path(spec["kernel"]), initrd=Path(spec["initrd"]), append=spec["append"],
              job=Path(spec["job"]), memory_mib=256)
run_vm(spec, sys.argv[2], 300, 300, log=print)
print("RETURNED")
"""


def _qemu_gone(pid: int) -> bool:
    try:  # gone, or a zombie (empty cmdline) waiting for its new parent to reap it
        return "qemu" not in Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return True


@pytest.mark.boot
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_signal_mid_boot_stops_qemu(make_spec, sandbox, signum):
    spec = make_spec("sleep 600\n")
    out = sandbox / "out"
    env = dict(os.environ, TMPDIR=str(sandbox / "t"))
    # A shell starts background jobs with SIGINT ignored, and Python keeps it so;
    # the child must see SIGINT as a terminal's Ctrl-C would deliver it.
    child = subprocess.Popen(
        [sys.executable, "-c", _SUBPROCESS_RUN, json.dumps(spec.to_json()), str(out)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        qemu = []
        while time.monotonic() < deadline:
            # QEMU itself, by its argv[0]: the runner's own command line names the QEMU binary
            # too (in the spec), and it dies of the signal at once, QEMU only after it
            qemu = [pid for pid, cmd in processes_mentioning(str(out))
                    if Path(cmd.split(" ", 1)[0]).name.startswith("qemu-system")]
            serial = out / "serial.log"
            if qemu and serial.exists() and serial.stat().st_size > 0:
                break
            assert child.poll() is None, child.stdout.read()
            time.sleep(0.05)
        assert qemu, "QEMU never started"
        child.send_signal(signum)
        output = child.communicate(timeout=60)[0].decode()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signum, output  # died of the signal, as without handlers
    assert "RETURNED" not in output
    if signum == signal.SIGKILL:
        # No cleanup code can run; PR_SET_PDEATHSIG makes the kernel kill QEMU.
        deadline = time.monotonic() + 10
        while not all(map(_qemu_gone, qemu)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(map(_qemu_gone, qemu)), qemu
        shutil.rmtree(sandbox / "t")  # the killed runner could not remove its temp dir
        (sandbox / "t").mkdir()
        return
    assert f"{signal.Signals(signum).name} received" in output
    assert all(map(_qemu_gone, qemu)), qemu
    result, _ = load_run(out / "run.json")
    assert result.status == "interrupted"


@pytest.mark.boot
def test_real_accelerator_probe(guest_kernel, guest_initrd, guest_append, sandbox):
    # Whatever this host offers, "auto" must come back quickly with a usable answer.
    t0 = time.monotonic()
    accel, reason = probe_accelerator(guest_kernel, guest_initrd, "auto", timeout_s=5,
                                      append=guest_append, workdir=sandbox / "probe")
    assert time.monotonic() - t0 < 60
    if accel == "kvm":
        assert "reached init" in reason
    else:
        assert accel == "tcg"
        assert any(s in reason for s in ("does not exist", "not readable", "probe boot"))
    assert (sandbox / "probe" / "run.json").is_file()


@pytest.mark.boot
def test_escalation_to_sigkill_for_a_stopped_qemu(make_spec, sandbox, monkeypatch):
    # A SIGSTOPped QEMU ignores QMP quit and SIGTERM: only SIGKILL ends it.
    for knob in ("QMP_COMMAND_TIMEOUT_S", "QUIT_WAIT_S", "TERM_WAIT_S"):
        monkeypatch.setattr(lifecycle, knob, 1)
    out = sandbox / "out"
    lines: list[str] = []

    def log(line: str) -> None:
        lines.append(line)
        if line.startswith("init reached"):
            for pid, cmd in processes_mentioning(str(out)):
                if "qemu-system" in cmd:
                    os.kill(pid, signal.SIGSTOP)

    result = run_vm(make_spec("sleep 600\n"), out, boot_timeout_s=60, job_timeout_s=1, log=log)
    assert result.status == "job-timeout", result
    assert result.qemu_returncode == -signal.SIGKILL
    assert any(l.startswith("sending SIGTERM") for l in lines)
    assert any(l.startswith("sending SIGKILL") for l in lines)


# --------------------------------------------------------------------------
# the lifecycle's hooks, scratch disks and the one error type


class RecordingHooks(Hooks):
    """Writes down every call with what the machine showed at that moment."""

    def __init__(self):
        self.calls: list[tuple] = []

    def qemu_args(self, machine):
        self.calls.append(("qemu_args", machine.proc))
        return ["-name", "hooked-guest"]

    def after_launch(self, machine):
        # QEMU runs (paused): a real pid and a live QMP connection.
        assert Path(f"/proc/{machine.pid}").exists()
        self.calls.append(("after_launch", machine.pid))

        async def status():
            self.calls.append(("qmp", (await machine.qmp.execute("query-status"))["status"]))
        return status()

    def job_started(self, machine):
        self.calls.append(("job_started",))

    def phase(self, machine, name):
        self.calls.append(("phase", name))

    def job_finished(self, machine, status):
        self.calls.append(("job_finished", status))

    def after_shutdown(self, machine, result):
        self.calls.append(("after_shutdown", result.status, machine.proc.returncode))


@pytest.mark.boot
def test_hooks_see_launch_job_phases_and_shutdown_in_order(make_spec, sandbox):
    hooks = RecordingHooks()
    spec = make_spec('echo "GUESTIO: phase write" >/dev/kmsg; sleep 0.3\n'
                     'echo "GUESTIO: phase read" >/dev/kmsg; sleep 0.3\n')
    with Machine(spec, sandbox / "out", boot_timeout_s=60, job_timeout_s=60, hooks=[hooks]) as vm:
        assert "hooked-guest" in vm.argv
        result = vm.run()
    assert result.status == "ok", result
    names = [c[0] for c in hooks.calls]
    assert names == ["qemu_args", "after_launch", "qmp", "job_started", "phase", "phase",
                     "job_finished", "after_shutdown"], hooks.calls
    assert hooks.calls[0][1] is None                       # args are asked for before launch
    assert hooks.calls[2] == ("qmp", "prelaunch")           # started paused (-S)
    assert [c[1] for c in hooks.calls if c[0] == "phase"] == ["write", "read"]
    assert hooks.calls[-2] == ("job_finished", 0)
    assert hooks.calls[-1] == ("after_shutdown", "ok", 0)  # called once QEMU is reaped


@pytest.mark.boot
def test_failed_run_still_calls_after_shutdown_and_deletes_the_scratch_copy(make_spec, sandbox):
    pristine = sandbox / "pristine.img"
    with open(pristine, "wb") as f:
        f.truncate(64 << 20)
    copy = sandbox / "out" / "scratch.img"
    hooks = RecordingHooks()
    spec = make_spec("ls /sys/block > $GUESTIO_OUT/block.txt; exit 4\n",
                     disks=[DiskSpec(copy, "virtio", copy_of=pristine)])
    with pytest.raises(VMRunError) as err:
        run_vm(spec, sandbox / "out", 60, 60, hooks=[hooks], check=True, label="scratch test")
    assert err.value.result.status == "job-failed"
    message = str(err.value)
    assert message.startswith("scratch test: job-failed: job exited with status 4")
    assert "last serial lines:" in message and "GUESTIO: job finished status=4" in message
    assert "vda" in (sandbox / "out" / "results" / "block.txt").read_text().split()
    assert not copy.exists() and pristine.stat().st_size == 64 << 20
    assert hooks.calls[-1] == ("after_shutdown", "job-failed", 0)


@pytest.mark.boot
def test_a_hook_that_fails_ends_the_run_cleanly(make_spec, sandbox):
    class Broken(RecordingHooks):
        def job_started(self, machine):
            raise RuntimeError("tracer exploded")

    hooks = Broken()
    with pytest.raises(RuntimeError, match="tracer exploded"):
        run_vm(make_spec("sleep 30\n"), sandbox / "out", 60, 60, hooks=[hooks])
    result, _ = load_run(sandbox / "out" / "run.json")
    assert result.status == "runner-error" and "tracer exploded" in result.reason
    assert hooks.calls[-1][:2] == ("after_shutdown", "runner-error")
    # sandbox checks that no QEMU and no temp dir are left


def test_missing_pristine_disk_is_refused_before_qemu(tmp_path):
    spec = VMSpec(kernel=tmp_path / "k", initrd=tmp_path / "i", append="",
                  disks=[DiskSpec(tmp_path / "copy.img", copy_of=tmp_path / "absent.img")])
    for name in ("k", "i"):
        (tmp_path / name).write_text("x")
    with pytest.raises(FileNotFoundError, match="absent.img"):
        run_vm(spec, tmp_path / "out", 10, 10)
    assert not (tmp_path / "copy.img").exists()
