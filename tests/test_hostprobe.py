"""The host capability probe (guestio.hostprobe): every item either names its stand-in or stops the
run before any job naming the capability, the artifacts that need it and what to do.  Fast tier:
a fake host (sysfs, /dev, /proc under a temporary root), except the checks of this host itself."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO, SNAKEMAKE
from guestio import hostprobe
from guestio.analysis.claims import load_artifacts, load_claims
from guestio.analysis.placeholders import resolve_placeholders
from guestio.analysis import figure_data, figures

DEFAULT_CONFIG = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
OFFERED_HERE = ", ".join(hostprobe.loop_schedulers() or ())


def _config(**changes) -> dict:
    config = json.loads(json.dumps(DEFAULT_CONFIG))
    for dotted, value in changes.items():
        node = config
        *parents, last = dotted.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
    return config


def _fake_host(root: Path, *, schedulers: str | None = "[none] mq-deadline kyber", cgroup: str | None = "v2",
               tun: bool = True, netns: bool = True, kvm: bool = False, kvm_events: bool = False) -> Path:
    if schedulers is not None:
        queue = root / "sys" / "block" / "loop0" / "queue"
        queue.mkdir(parents=True, exist_ok=True)
        (queue / "scheduler").write_text(schedulers + "\n")
        (root / "dev").mkdir(parents=True, exist_ok=True)
        (root / "dev" / "loop-control").touch()
    cg = root / "sys" / "fs" / "cgroup"
    if cgroup == "v2":
        cg.mkdir(parents=True, exist_ok=True)
        (cg / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    elif cgroup == "v1":
        (cg / "memory").mkdir(parents=True, exist_ok=True)
        (cg / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    if tun:
        (root / "dev" / "net").mkdir(parents=True, exist_ok=True)
        (root / "dev" / "net" / "tun").touch()
    if netns:
        (root / "proc" / "self" / "ns").mkdir(parents=True, exist_ok=True)
        (root / "proc" / "self" / "ns" / "net").touch()
    if kvm:
        (root / "dev").mkdir(parents=True, exist_ok=True)
        (root / "dev" / "kvm").touch()
    if kvm_events:
        (root / "sys" / "kernel" / "tracing" / "events" / "kvm" / "kvm_exit").mkdir(parents=True, exist_ok=True)
    return root


class _Statvfs:
    def __init__(self, free_gib: float):
        self.f_bavail, self.f_frsize, self.f_fsid = int(free_gib * 2**30 / 4096), 4096, 1


def _probe(tmp_path, config=None, *, host=None, euid=0, ip="/usr/sbin/ip", installed=None, locate=None,
           free_gib=100.0) -> hostprobe.Probe:
    config = config or _config(results_dir=str(tmp_path / "results"))
    return hostprobe.probe(
        config, repo=REPO, root=host if host is not None else _fake_host(tmp_path / "root"), euid=euid,
        which=lambda name: ip, installed=installed or (lambda wanted: set(wanted)),
        locate_qemu_source=locate or (lambda source_dir: None), statvfs=lambda path: _Statvfs(free_gib))


def _finding(result: hostprobe.Probe, capability: str) -> hostprobe.Finding:
    found = [f for f in result.findings if f.capability == capability]
    assert found, f"no finding {capability!r}: {[f.capability for f in result.findings]}"
    return found[0]


def _stop(result: hostprobe.Probe) -> str:
    stopping = result.stopping()
    assert stopping, "expected the probe to stop the run"
    return hostprobe.stop_message(stopping)


# --- the host scheduler (bfq and its stand-in) -----------------------------------------------------

def test_a_host_without_bfq_runs_the_fallback_in_its_place_and_says_so(tmp_path):
    result = _probe(tmp_path)
    assert result.host_schedulers == ["mq-deadline"]
    assert result.substitutions == {"bfq": "mq-deadline"} and result.cfq_standin == "mq-deadline"
    finding = _finding(result, "loop I/O schedulers")
    assert not finding.ok and "bfq -> mq-deadline" in finding.substitute and "not offered: bfq" in finding.detail
    assert not finding.stops and result.stopping() == []


def test_without_a_fallback_a_host_without_bfq_stops_naming_the_capability_and_the_key(tmp_path):
    config = _config(**{"results_dir": str(tmp_path / "r"), "diskmods.sched.host_fallback": None})
    message = _stop(_probe(tmp_path, config))
    assert "loop I/O schedulers" in message and "bfq" in message and "needed by sched" in message
    assert "diskmods.sched.host_fallback" in message and "offered: none, mq-deadline, kyber" in message


def test_a_fallback_the_kernel_does_not_offer_either_stops(tmp_path):
    host = _fake_host(tmp_path / "root", schedulers="[none] kyber")
    message = _stop(_probe(tmp_path, host=host))
    assert "loop I/O schedulers" in message and "'mq-deadline' is not offered either" in message


def test_a_host_with_bfq_runs_bfq(tmp_path):
    host = _fake_host(tmp_path / "root", schedulers="[mq-deadline] kyber bfq none")
    result = _probe(tmp_path, host=host)
    assert result.host_schedulers == ["bfq"] and result.substitutions == {} and result.cfq_standin == "bfq"
    assert _finding(result, "loop I/O schedulers").ok and result.stopping() == []


def test_the_paper_scale_matrix_keeps_each_scheduler_once(tmp_path):
    config = _config(**{"results_dir": str(tmp_path / "r"), "diskmods.sched.host": ["bfq", "mq-deadline", "none"]})
    result = _probe(tmp_path, config)
    assert result.host_schedulers == ["mq-deadline", "none"] and result.cfq_standin == "mq-deadline"


def test_no_loop_devices_stops_naming_loop_devices(tmp_path):
    host = _fake_host(tmp_path / "root", schedulers=None)
    message = _stop(_probe(tmp_path, host=host))
    assert "loop devices: /dev/loop-control missing" in message and "modprobe loop" in message


def test_file_only_needs_no_loop_device(tmp_path):
    config = _config(**{"results_dir": str(tmp_path / "r"), "diskmods.sched.host": ["file"]})
    result = _probe(tmp_path, config, host=_fake_host(tmp_path / "root", schedulers=None))
    assert result.host_schedulers == ["file"] and result.stopping() == []


# --- the other capabilities ------------------------------------------------------------------------

@pytest.mark.parametrize("cgroup, detail", [("v2", "cgroup v2"), ("v1", "cgroup v1")])
def test_a_memory_controller_of_either_cgroup_version_will_do(tmp_path, cgroup, detail):
    finding = _finding(_probe(tmp_path, host=_fake_host(tmp_path / "root", cgroup=cgroup)), "memory cgroup")
    assert finding.ok and detail in finding.detail


def test_no_memory_controller_stops_the_native_runs_naming_the_key_that_avoids_it(tmp_path):
    message = _stop(_probe(tmp_path, host=_fake_host(tmp_path / "root", cgroup=None)))
    assert "memory cgroup" in message and "fig1, fig2, fig6" in message and "disk.native_memory_limit: false" in message
    config = _config(**{"results_dir": str(tmp_path / "r"), "disk.native_memory_limit": False})
    result = _probe(tmp_path, config, host=_fake_host(tmp_path / "r2", cgroup=None))
    assert result.stopping() == [] and "memory cgroup" not in [f.capability for f in result.findings]


def test_no_tun_stops_the_network_artifacts(tmp_path):
    message = _stop(_probe(tmp_path, host=_fake_host(tmp_path / "root", tun=False)))
    assert "tun/tap: /dev/net/tun missing" in message and "fig3, fig4, fig7, table2" in message


def test_no_ip_stops_the_network_artifacts(tmp_path):
    message = _stop(_probe(tmp_path, ip=None))
    assert "network namespaces" in message and "ip: not found" in message and "iproute2" in message


def test_not_root_stops_what_needs_root(tmp_path):
    message = _stop(_probe(tmp_path, euid=1000))
    assert "root: running as uid 1000" in message and "sched" in message and "fig3" in message


def test_no_kvm_runs_on_tcg_unless_kvm_is_demanded(tmp_path):
    finding = _finding(_probe(tmp_path), "kvm")
    assert not finding.ok and "TCG" in finding.substitute and not finding.stops
    config = _config(**{"results_dir": str(tmp_path / "r"), "vm.accel": "kvm"})
    message = _stop(_probe(tmp_path, config, host=_fake_host(tmp_path / "r2")))
    assert "kvm: /dev/kvm missing and vm.accel is kvm" in message and "vm.accel: auto" in message


def test_kvm_events_are_reported_on_a_kvm_host_never_a_stop(tmp_path):
    result = _probe(tmp_path, host=_fake_host(tmp_path / "root", kvm=True))
    events = _finding(result, "tracefs kvm events")
    assert not events.ok and "TCG exit model" in events.substitute and result.stopping() == []
    result = _probe(tmp_path, host=_fake_host(tmp_path / "r2", kvm=True, kvm_events=True))
    assert _finding(result, "tracefs kvm events").ok


def test_too_little_free_space_stops(tmp_path):
    message = _stop(_probe(tmp_path, free_gib=1.5))
    assert "free disk space" in message and "1.5 GiB free" in message


def test_missing_debian_packages_stop_naming_them_and_setup(tmp_path):
    message = _stop(_probe(tmp_path, installed=lambda wanted: set(wanted) - {"netperf", "ccache"}))
    assert "Debian packages: not installed: ccache, netperf" in message and "envs/setup.sh" in message
    message = _stop(_probe(tmp_path, installed=lambda wanted: None))
    assert "dpkg-query not found" in message


def test_missing_qemu_source_stops_unless_the_hosts_binary_is_used(tmp_path):
    def missing(source_dir):
        raise RuntimeError(f"QEMU source qemu 7.2 is not in {source_dir} (missing: dsc)")
    message = _stop(_probe(tmp_path, locate=missing))
    assert "QEMU source" in message and "no deb-src entry" in message and "qemu.binary: host" in message
    config = _config(**{"results_dir": str(tmp_path / "r"), "qemu.binary": "host"})
    assert _probe(tmp_path, config, host=_fake_host(tmp_path / "r2"), locate=missing).stopping() == []


def test_artifacts_left_out_are_not_probed(tmp_path):
    config = _config(**{"results_dir": str(tmp_path / "r"), "report.artifacts": ["fig5"]})
    result = _probe(tmp_path, config, host=_fake_host(tmp_path / "root", schedulers=None, cgroup=None, tun=False),
                    euid=1000)
    assert result.stopping() == []
    assert {f.capability for f in result.findings} == {"kvm", "free disk space", "Debian packages", "QEMU source"}


# --- recording, and the run's entry point ------------------------------------------------------------

def test_findings_are_recorded_only_when_they_change(tmp_path):
    path = tmp_path / "host" / "capabilities.json"
    result = _probe(tmp_path)
    assert hostprobe.record(result, path) is True
    mtime = path.stat().st_mtime_ns
    time.sleep(0.01)
    assert hostprobe.record(result, path) is False and path.stat().st_mtime_ns == mtime
    data = json.loads(path.read_text())
    assert data["substitutions"] == {"bfq": "mq-deadline"} and data["cfq_standin"] == "mq-deadline"
    summary = hostprobe.summary(path)
    assert summary["host_scheduler_substitutions"] == {"bfq": "mq-deadline"}
    assert summary["ok"]["loop I/O schedulers"] is False and "loop I/O schedulers" in summary["substitutes"]


def test_check_records_then_stops(tmp_path):
    config = _config(**{"results_dir": str(tmp_path / "r"), "diskmods.sched.host_fallback": None})
    with pytest.raises(hostprobe.HostCapabilityError, match="loop I/O schedulers"):
        hostprobe.check(config, repo=REPO, root=_fake_host(tmp_path / "root"), euid=0, which=lambda n: "/bin/ip",
                        installed=lambda wanted: set(wanted), locate_qemu_source=lambda d: None)
    assert (tmp_path / "r" / "host" / "capabilities.json").is_file()


def test_the_artifact_groups_are_claims_yaml_artifacts():
    known = set(load_artifacts())
    for group in (hostprobe.ALL_ARTIFACTS, hostprobe.SCHED_ARTIFACTS, hostprobe.NATIVE_DISK_ARTIFACTS,
                  hostprobe.NETWORK_ARTIFACTS, hostprobe.EXIT_ARTIFACTS):
        assert set(group) <= known, set(group) - known


def test_this_host_is_probed_in_under_two_seconds(tmp_path):
    started = time.monotonic()
    result = hostprobe.probe(_config(results_dir=str(tmp_path / "r")), repo=REPO)
    assert time.monotonic() - started < 2.0
    assert result.host_schedulers and all(h in (OFFERED_HERE.split(", ") + ["file"]) for h in result.host_schedulers)


# --- the sched claim and figure follow the host scheduler used ---------------------------------------

def test_the_sched_claim_selects_and_names_the_host_scheduler_used():
    resolved = resolve_placeholders(load_claims(), {"sched_host": ["-", "mq-deadline"]})
    claim = resolved["sec3_2_2"]
    for q in claim.quantities:
        for side in (q.numerator, q.denominator, q.condition):
            if side is not None:
                assert dict(side)["host_scheduler"] == "mq-deadline"
        assert "bfq)" not in q.label and ("host mq-deadline" in q.label or "host" not in q.label)
    assert "mq-deadline" in claim.note and "{sched_host}" not in claim.note
    spec = resolve_placeholders(figure_data.FIGURE_CLAIMS["sched"], {"sched_host": "mq-deadline"})
    assert "host mq-deadline" in spec.title and spec.numerator["host_scheduler"] == "mq-deadline"
    # Without a value given, the paper's CFQ successor
    assert resolve_placeholders(figure_data.FIGURE_CLAIMS["sched"]).numerator["host_scheduler"] == "bfq"


def _sched_rows(host: str) -> pd.DataFrame:
    rows = []
    for gsched, base in (("none", 100.0), ("bfq", 95.0)):
        for rep in range(3):
            for metric, unit, value in (("block_write_throughput", "KiB/s", base * 1024 + rep),
                                        ("block_read_throughput", "KiB/s", base * 2048 + rep),
                                        ("block_write_cpu", "%", 30.0 + rep), ("block_read_cpu", "%", 20.0 + rep)):
                rows.append({"experiment": "disk", "target": "vm", "variant": "baseline", "accelerator": "tcg",
                             "disk": "ide", "clocksource": "acpi_pm", "repetition": rep, "metric": metric,
                             "value": value, "unit": unit, "qemu": "stock", "guest_scheduler": gsched,
                             "host_scheduler": host, "nic": "-", "peer": "-"})
    df = pd.DataFrame(rows)
    for column in figure_data.COLUMNS:
        if column not in df.columns:
            df[column] = "-"
    return df


def test_the_sched_figure_draws_the_runs_of_the_host_scheduler_used():
    defaults = {"qemu": "stock", "guest_scheduler": "mq-deadline", "host_scheduler": "file",
                "sched_host": "mq-deadline"}
    result = figures.plot_comparison("sched", _sched_rows("mq-deadline"), {}, None, None, seed=1,
                                     n_resamples=200, defaults=defaults)
    assert any("host mq-deadline" in t for t in result.texts)
    assert result.ratios and all(r.numerator.host_scheduler == "mq-deadline" for r in result.ratios)
    with pytest.raises(figure_data.FigureDataError, match="host_scheduler 'bfq'"):
        figures.plot_comparison("sched", _sched_rows("mq-deadline"), {}, None, None, seed=1, n_resamples=200,
                                defaults={**defaults, "sched_host": "bfq"})


def test_the_dag_runs_the_configured_host_scheduler(tmp_path):
    """snakemake --dry-run with diskmods.sched.host: [mq-deadline]: the sched runs are host-mq-deadline."""
    extra = tmp_path / "mq.yaml"
    extra.write_text("diskmods: {sched: {host: [mq-deadline]}}\n")
    out = subprocess.run([str(SNAKEMAKE), "-n", "--configfile", "config/config.yaml", str(extra), "--config",
                          f"results_dir={tmp_path / 'results'}"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "/host-mq-deadline/" in out.stdout and "/host-bfq/" not in out.stdout
    recorded = json.loads((tmp_path / "results" / "host" / "capabilities.json").read_text())
    assert recorded["host_schedulers"] == ["mq-deadline"] and recorded["cfq_standin"] == "mq-deadline"
