"""The network testbed on this machine (root): it works, and after any run -- finished, failed,
interrupted or killed outright -- the machine's namespaces, links, addresses and routes are as
before.  The VM cases boot a real TCG guest on the testbed (the pipeline's net kernel and image)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, TEST_RESULTS, TEST_RESULTS_REL, build_or_fail, snakemake
from guestio import paths
from guestio.net import TestbedError, namespaces
from guestio.net.testbed import Testbed

pytestmark = [pytest.mark.boot,
              pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")]

NET = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["network"]
PYTHON = sys.executable


def machine_network_state() -> dict:
    """The machine's namespaces, its own links and routes, the netns mounts, and what the testbed
    keeps under /run and the temporary directory: compared before and after a run."""
    def out(argv):
        r = subprocess.run(argv, capture_output=True, text=True)
        return r.stdout
    links = sorted(ln.split(":", 2)[1].strip().split("@")[0] for ln in out(["ip", "-o", "link", "show"]).splitlines()
                   if ln.strip())
    try:
        netns = sorted(os.listdir(namespaces.NETNS_DIR))
    except FileNotFoundError:
        netns = []
    mounts = sorted(ln.split()[4] for ln in Path("/proc/self/mountinfo").read_text().splitlines()
                    if "/run/netns" in ln.split()[4])
    return {
        "namespaces": netns,
        "run_dirs": {str(d): d.is_dir() for d in (namespaces.NETNS_DIR, namespaces.LOCK_DIR)},
        "tmp_dirs": sorted(d.name for d in Path(tempfile.gettempdir()).glob(f"{namespaces.TMP_PREFIX}*")),
        "links": links,
        "addresses": sorted(out(["ip", "-o", "addr", "show"]).splitlines()),
        "routes": sorted(out(["ip", "route", "show", "table", "all"]).splitlines()),
        "netns_mounts": mounts,
        "locks": sorted(os.listdir(namespaces.LOCK_DIR)) if namespaces.LOCK_DIR.is_dir() else [],
    }


@pytest.fixture
def machine_state():
    """The machine's network state before the test; the test must leave it so."""
    before = machine_network_state()
    yield before
    after = machine_network_state()
    assert after == before, f"network state changed:\nbefore {before}\nafter  {after}"


def _wait_for_namespaces(n: int, timeout_s: float = 60, proc: subprocess.Popen | None = None) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = namespaces.guestio_namespaces()
        if len(found) >= n:
            return found
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"exited ({proc.returncode}) before its testbed was up:\n{proc.stdout.read()[-3000:]}")
        time.sleep(0.05)
    raise AssertionError(f"no testbed namespaces appeared within {timeout_s} s")


def test_testbed_links_hosts_and_leaves_nothing(machine_state):
    with Testbed(log=lambda m: None) as tb:
        ns = set(tb.namespaces.values())
        assert ns <= set(namespaces.guestio_namespaces())
        r = tb.run("hosta", ["ping", "-c", "3", "-i", "0.05", "-q", tb.addresses.hostb], timeout=20)
        assert r.returncode == 0 and " 0% packet loss" in r.stdout
        links_b = subprocess.run(["ip", "-n", tb.namespaces["hostb"], "-o", "link"], capture_output=True,
                                 text=True).stdout
        assert "tap0" in links_b and "br0" in links_b and "master br0" in links_b
        assert "tbf" in tb.describe()["link"]["qdiscs"]["hosta"]
        # The machine's own namespace gained nothing: no veth, tap or bridge, no route to the subnet.
        assert machine_network_state()["links"] == machine_state["links"]
        assert machine_network_state()["routes"] == machine_state["routes"]
    assert not ns & set(namespaces.guestio_namespaces())


def _guestio_files_in_run_and_tmp() -> list[str]:
    import tempfile
    found = [str(p) for p in (namespaces.NETNS_DIR, namespaces.LOCK_DIR) if p.exists()]
    return found + [str(p) for p in Path(tempfile.gettempdir()).glob(f"{namespaces.TMP_PREFIX}*")]


@pytest.mark.parametrize("fails", [False, True], ids=["finished", "failed"])
def test_a_testbed_leaves_nothing_in_run_and_tmp(machine_state, fails):
    # /run/netns may be the host's own (any `ip netns add` makes it): the testbed must leave /run
    # and /tmp as it found them, whatever was there.
    before, mounts = _guestio_files_in_run_and_tmp(), namespaces.netns_mounts()
    with pytest.raises(RuntimeError, match="boom") if fails else contextlib.nullcontext():
        with Testbed(log=lambda m: None) as tb:
            wrapper = Path(tb.qemu_wrapper("/usr/bin/true"))
            assert wrapper.is_file() and namespaces.NETNS_DIR.is_dir() and namespaces.LOCK_DIR.is_dir()
            if fails:
                raise RuntimeError("boom")
    assert _guestio_files_in_run_and_tmp() == before
    assert namespaces.netns_mounts() == mounts


def test_a_killed_testbeds_tmp_dir_goes_with_the_sweep(machine_state, tmp_path):
    before = _guestio_files_in_run_and_tmp()
    script = tmp_path / "holder.py"
    script.write_text(_HOLDER.replace('print("READY"', 'tb.qemu_wrapper("/usr/bin/true"); print("READY"'))
    proc = subprocess.Popen([PYTHON, str(script), str(os.getpid())], stdout=subprocess.PIPE, text=True)
    try:
        while "READY" not in proc.stdout.readline():
            assert proc.poll() is None, "the holder died before its testbed was up"
        proc.kill()
        proc.wait()
        left = set(_guestio_files_in_run_and_tmp()) - set(before)
        assert len(left) == 3 - len(before), left    # /run/netns (unless the host had it), /run/guestio-net, the wrapper's dir
        namespaces.cleanup_stale(log=lambda m: None)
        assert _guestio_files_in_run_and_tmp() == before
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_failure_inside_the_testbed_tears_it_down(machine_state):
    with pytest.raises(RuntimeError, match="boom"):
        with Testbed(log=lambda m: None) as tb:
            tb.popen("hostb", ["sleep", "600"])
            raise RuntimeError("boom")


def test_a_build_that_fails_half_way_leaves_nothing(machine_state, monkeypatch):
    real = Testbed._shape

    def broken(self, role):
        if role == "hostb":
            raise TestbedError("tc refused (test)")
        return real(self, role)

    monkeypatch.setattr(Testbed, "_shape", broken)
    with pytest.raises(TestbedError, match="tc refused"):
        with Testbed(log=lambda m: None):
            pass


_HOLDER = textwrap.dedent("""
    import sys, time
    from guestio import lifetime
    lifetime.die_with_snakemake(snakemake_pid=int(sys.argv[1]))
    from guestio.net.testbed import Testbed
    with Testbed(log=print) as tb:
        tb.popen("hosta", ["sleep", "600"])
        tb.popen("hostb", ["sleep", "600"])
        print("READY", flush=True)
        time.sleep(600)
""")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_holder_tears_the_testbed_down(machine_state, sig, tmp_path):
    script = tmp_path / "holder.py"
    script.write_text(_HOLDER)
    proc = subprocess.Popen([PYTHON, str(script), str(os.getpid())], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip().endswith("READY") or _wait_for_namespaces(2)
        proc.send_signal(sig)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0


def test_killed_holder_is_swept_by_the_next_testbed(machine_state, tmp_path):
    script = tmp_path / "holder.py"
    script.write_text(_HOLDER)
    proc = subprocess.Popen([PYTHON, str(script), str(os.getpid())], stdout=subprocess.PIPE, text=True)
    try:
        while "READY" not in proc.stdout.readline():
            assert proc.poll() is None, "the holder died before its testbed was up"
        left = namespaces.guestio_namespaces()
        assert len(left) >= 2
        proc.kill()  # SIGKILL: no clean-up can run
        proc.wait()
        time.sleep(0.2)
        assert set(left) <= set(namespaces.guestio_namespaces()), "the namespaces of a killed run stay..."
        removed = namespaces.cleanup_stale(log=lambda m: None)
        assert set(left) <= set(removed), "...until the next testbed sweeps them"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_live_testbed_is_not_swept(machine_state):
    with Testbed(log=lambda m: None) as tb:
        assert namespaces.cleanup_stale(log=lambda m: None) == []
        assert set(tb.namespaces.values()) <= set(namespaces.guestio_namespaces())


# -- through the pipeline ------------------------------------------------------------------------

NET_KERNEL = TEST_RESULTS / "kernels" / "baseline" / "bzImage"


@pytest.fixture(scope="module")
def net_artifacts():
    targets = [f"{TEST_RESULTS_REL}/kernels/baseline/build.json", f"{TEST_RESULTS_REL}/image/initramfs.cpio",
               f"{TEST_RESULTS_REL}/host/accelerator.json", f"{TEST_RESULTS_REL}/qemu/stock/build.json"]
    build_or_fail("the net kernel, image and QEMU", *targets)
    return TEST_RESULTS


def _vm_run(tmp_path, nic="e1000", netperf_s=1, **kw):
    from guestio.build.qemu import load_build
    from guestio.workloads import netbench_session

    build = load_build(TEST_RESULTS / "qemu" / "stock" / "build.json")
    net = {**NET, "ping": {"count": 20, "interval_s": 0.01, "warmup": 2}, "netperf": {"seconds": netperf_s},
           "iperf3": {"seconds": 1}}
    with Testbed(log=print) as tb:
        return netbench_session.run_vm_net(
            testbed=tb, kernel=NET_KERNEL, initrd=TEST_RESULTS / "image" / "initramfs.cpio",
            append="console=ttyS0 panic=-1 nokaslr rootfstype=ramfs", accel="tcg", memory_mib=256, nic=nic,
            mitigation=True, net=net, outdir=tmp_path / "run", boot_timeout_s=120, job_timeout_s=300,
            qemu=build["binary"], firmware_dir=build.get("firmware_dir"), **kw)


@pytest.mark.parametrize("nic", ["rtl8139", "e1000", "virtio-net"])
def test_guest_on_the_testbed_measures_every_path(net_artifacts, machine_state, tmp_path, nic):
    from guestio.workloads import netbench_records

    result, session = _vm_run(tmp_path, nic=nic)
    assert result.ok
    got = {step.name: ms for step, ms in session.measurements}
    assert set(got) == {s.name for s in session.steps}
    assert len(got["ping-hostb-guestb"]) == 20 and all(m.value > 0 for m in got["ping-hosta-guestb"])
    assert got["netperf-tcp_stream"][0].value > 1  # Mbit/s
    guest = netbench_records.read_guest_nic(tmp_path / "run" / "results")
    assert guest["driver"] == {"rtl8139": "8139cp", "e1000": "e1000", "virtio-net": "virtio_net"}[nic]
    commands = (tmp_path / "run" / "results" / "commands.txt").read_text().split("\n")
    assert commands[0] == "phase ping-hosta-hostb" and "done" in commands
    serial = (tmp_path / "run" / "serial.log").read_text(errors="replace")
    assert "GUESTIO: phase netperf-tcp_stream" in serial


def test_vm_run_interrupted_mid_benchmark_leaves_nothing(net_artifacts, machine_state, tmp_path):
    """SIGTERM to a net_vm-like job while netperf runs: QEMU, the host's clients and the namespaces go."""
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from guestio import lifetime
        lifetime.die_with_snakemake(snakemake_pid={os.getpid()})
        from pathlib import Path
        import test_network_testbed as t
        t._vm_run(Path({str(tmp_path)!r}), netperf_s=120)
    """))
    proc = subprocess.Popen([PYTHON, str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in proc.stdout:
            if "job phase netperf-tcp_stream" in line:
                break
        else:
            pytest.fail("the run never reached netperf")
        time.sleep(1)
        proc.send_signal(signal.SIGTERM)
        proc.wait(90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    leftover = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout.split()
    assert not [p for p in leftover if int(p) != proc.pid], "processes of the run are still alive"


def test_pipeline_native_run_interrupted_or_failed_leaves_nothing(machine_state, tmp_path):
    """The real CLI: net_native interrupted by SIGINT to Snakemake's group, and failing (iperf3 missing)."""
    results = f"build/test-net-{os.getpid()}"
    run = paths.run_dir("net_native", results, rep=0)
    target = f"{run}/measurements.csv"
    try:
        longer = tmp_path / "longer.yaml"
        longer.write_text("network:\n  netperf: {seconds: 60}\n")
        proc = subprocess.Popen([str(REPO / ".venv" / "bin" / "snakemake"), "--cores", "2", target,
                                 "--config", f"results_dir={results}", "--configfile", "config/config.yaml",
                                 str(longer)],
                                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        _wait_for_namespaces(2, timeout_s=180, proc=proc)
        time.sleep(1)
        os.killpg(proc.pid, signal.SIGINT)
        out = proc.communicate(timeout=120)[0]
        assert proc.returncode != 0, out[-2000:]
        assert not (REPO / target).exists()
        # Failing: a host without iperf3 (a stub that fails) stops the job with an error, and tidies up.
        stub = tmp_path / "bin"
        stub.mkdir()
        (stub / "iperf3").write_text("#!/bin/sh\necho 'iperf3: stub for a test' >&2\nexit 1\n")
        (stub / "iperf3").chmod(0o755)
        env = {**os.environ, "PATH": f"{stub}:{os.environ['PATH']}"}
        r = subprocess.run([str(REPO / ".venv" / "bin" / "snakemake"), "--cores", "2", target,
                            "--config", f"results_dir={results}"], cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode != 0
        log = (REPO / run / "runner.log").read_text()
        assert "not listening" in log or "iperf3" in log, log[-2000:]
    finally:
        subprocess.run(["rm", "-rf", str(REPO / results)])
