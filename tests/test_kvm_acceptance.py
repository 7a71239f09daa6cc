"""The KVM acceptance profile (config/kvm-acceptance.yaml) and its offline pack, without a boot.

This host has no usable KVM, so the acceptance run itself is not run here.  What is checked:

* a dry run of the profile plans the KVM branch: the accelerator probe, the exit runs with no
  TCG plugin (vm.accel: kvm decides the backend before any job), Table 1's pit-scale QEMU build,
  the bonnie++ and netperf runs, the verdict and the bundle; the same profile under
  vm.accel: auto plans the plugin, so the check can fail.  Where /dev/kvm is missing the
  profile must stop before any job instead;
* the verdict (guestio.report.kvm_acceptance) on runs laid out as the exit rules write them;
* the offline pack: ldd's libraries of this host's QEMU, a packed QEMU that passes the
  pipeline's own binary check and maps only the pack's libraries, and an offline host's dry
  run that takes kernels, QEMU and image from an unpacked pack instead of building them.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, job_counts, snakemake
from guestio.build import offline
from guestio.build.qemu import HOST_BINARY, load_build
from guestio.build.qemu_variant import check_binary, describe_host
from guestio.report.kvm_acceptance import ExitRun, evaluate

PROFILE = REPO / "config" / "kvm-acceptance.yaml"
KVM_BRANCH = {"accelerator": 1, "exit_sites": 1, "timer_exits": 3, "net_exits": 1, "disk_vm": 2, "disk_native": 2,
              "smoke_boot": 1, "table1": 1, "table3": 1, "net_table2": 1, "kvm_acceptance_check": 1, "bundle": 1,
              "kvm_acceptance": 1}


def plan(*configfiles: Path, target: str = "kvm_acceptance") -> subprocess.CompletedProcess:
    return snakemake(target, "-n", "--forceall", "--configfile", str(PROFILE), *map(str, configfiles), check=False)


@pytest.mark.skipif(not Path("/dev/kvm").exists(), reason="covered by the no-KVM test below")
def test_dry_run_plans_the_kvm_branch(tmp_path):
    done = plan()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    counts = job_counts(done.stdout)
    for rule, n in KVM_BRANCH.items():
        assert counts.get(rule) == n, (rule, counts)
    assert "exit_plugin" not in counts and "qemu/pit-scale/build.json" in done.stdout, counts
    assert counts.get("qemu") == 2 and counts.get("kernel") == 2, counts   # stock and pit-scale; baseline, hz100
    # Left to the probe (auto), the exit runs may run under TCG: the plugin is planned.
    auto = tmp_path / "auto.yaml"
    auto.write_text(yaml.safe_dump({"vm": {"accel": "auto"}}))
    done = plan(auto)
    assert done.returncode == 0, done.stderr[-3000:]
    assert job_counts(done.stdout).get("exit_plugin") == 1


@pytest.mark.skipif(Path("/dev/kvm").exists(), reason="this host has /dev/kvm: the plan is checked above")
def test_the_profile_stops_where_there_is_no_kvm():
    done = plan()
    assert done.returncode != 0
    assert "vm.accel (kvm): /dev/kvm does not exist" in done.stdout + done.stderr


# --- the verdict ----------------------------------------------------------------------------------

def exit_run(root: Path, name: str, *, backend="kvm", events=None, tick=None, argv=(), windows=None) -> Path:
    d = root / name
    d.mkdir(parents=True)
    summary = {"backend": backend, "events_lost_lower_bound": 0,
               "trace": {"events_by_name": events if events is not None else {"kvm_exit": 40, "kvm_entry": 40}}}
    if tick:
        summary["tick"] = tick
    if windows:
        summary["windows"] = windows
    (d / "summary.json").write_text(json.dumps(summary))
    (d / "exits.csv").write_text(f"accelerator,function,count,handling_ns\n{backend if backend == 'kvm' else 'tcg'},"
                                 "ata_sff_pio_xfer,10,2500.0\n")
    (d / "qemu-cmdline.json").write_text(json.dumps(["qemu-system-x86_64", *argv]))
    return d


def tick(hz, scale, rate, ok=True):
    return {"hz": hz, "pit_scale": scale, "intended_hz": hz / scale, "rate_hz": rate, "tolerance": 0.1, "ok": ok}


def acceptance_runs(root: Path, **change) -> dict:
    (root / "accelerator.json").write_text(json.dumps(
        {"accelerator": "kvm", "requested": "kvm", "reason": "probe boot under kvm reached init in 0.4 s"}))
    bonnie = exit_run(root, "bonnie", events={"kvm_exit": 900, "kvm_pio": 700, "kvm_entry": 900})
    vhz = exit_run(root, "cpu-stock", tick=tick(1000, 1, 998.0))
    pit = exit_run(root, "cpu-pit", tick=change.get("pit_tick", tick(1000, 10, 100.2)),
                   argv=change.get("pit_argv", ["-machine", "kernel_irqchip=split"]))
    net = exit_run(root, "netperf", events=change.get("net_events", {"kvm_exit": 300, "kvm_mmio": 250}),
                   windows={"netperf-tcp_stream": {"exits": 300, "sent_mib": 210.0}})
    disk = root / "disk.csv"
    disk.write_text("target,accelerator,metric,value\nnative,native,write,900\nvm,kvm,write,500\n")
    return dict(accelerator_json=root / "accelerator.json",
                exit_runs=[ExitRun("bonnie", bonnie), ExitRun("vHZ1000", vhz), ExitRun("pit", pit, 10),
                           ExitRun("netperf", net)],
                tick_runs=[ExitRun("vHZ1000", vhz), ExitRun("pit", pit, 10)], disk_runs=[disk], net_run=net)


def test_the_verdict_passes_on_a_kvm_run(tmp_path):
    checks = evaluate(**acceptance_runs(tmp_path))
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]
    assert any("kvm_pio 700, kvm_mmio 250" in c.detail for c in checks)


@pytest.mark.parametrize("change, failing", [
    ({"pit_argv": []}, "kernel_irqchip=split"),
    ({"pit_tick": tick(1000, 10, 1000.0, ok=False)}, "tick at HZ / 10"),
    ({"net_events": {"kvm_exit": 300}}, "kvm_exit, kvm_pio and kvm_mmio recorded"),
])
def test_the_verdict_names_what_the_runs_do_not_show(tmp_path, change, failing):
    checks = evaluate(**acceptance_runs(tmp_path, **change))
    assert [c.name for c in checks if not c.ok] and all(failing in c.name for c in checks if not c.ok), checks


def test_a_tcg_fallback_fails_the_verdict(tmp_path):
    runs = acceptance_runs(tmp_path)
    Path(runs["accelerator_json"]).write_text(json.dumps({"accelerator": "tcg", "requested": "auto"}))
    exit_run(tmp_path, "tcg-run", backend="tcg-plugin", events={})
    runs["exit_runs"].append(ExitRun("tcg", tmp_path / "tcg-run"))
    failed = {c.name for c in evaluate(**runs) if not c.ok}
    assert failed == {"probe chose KVM", "tcg: KVM tracepoints", "tcg: handling times"}, failed


# --- the offline pack -----------------------------------------------------------------------------

def test_ldd_names_the_loader_and_every_library_of_qemu():
    libs = offline.shared_libraries(HOST_BINARY)
    names = {lib.soname for lib in libs}
    assert any(lib.loader for lib in libs) and "libc.so.6" in names and "libglib-2.0.so.0" in names, names
    assert all(lib.path.is_file() for lib in libs)
    with pytest.raises(offline.OfflinePackError, match="not a dynamic executable|ldd"):
        offline.shared_libraries(REPO / "envs" / "setup.sh")


@pytest.fixture(scope="module")
def pack(tmp_path_factory) -> Path:
    """A pack of this host's QEMU (as qemu.binary: host records it), two stand-in kernels (never
    booted here) and a stand-in image, unpacked as an offline host would; returns prebuilt/."""
    tmp = tmp_path_factory.mktemp("pack")
    kernels = {}
    for variant in ("baseline", "hz100"):
        d = tmp / "kernels" / variant
        d.mkdir(parents=True)
        for name in ("bzImage", "System.map", "vmlinux", "config", "build.json"):
            (d / name).write_text(f"{variant} {name}\n")
        kernels[variant] = {name: d / name for name in ("bzImage", "System.map", "vmlinux", "config", "build.json")}
    image, manifest = tmp / "initramfs.cpio", tmp / "initramfs.json"
    image.write_bytes(os.urandom(1 << 16) * 4)
    manifest.write_text(json.dumps({"image": {"sha256": "stand-in"}}))
    qemus = {}
    for variant in ("stock", "pit-scale"):
        describe_host(variant, tmp / "qemu" / variant)
        qemus[variant] = tmp / "qemu" / variant / "build.json"
    out = tmp / "guestio-offline.tar.gz"
    offline.make_pack(out=out, repo=REPO, kernels=kernels, qemus=qemus, image=image, image_manifest=manifest,
                      work=tmp / "work", log=lambda m: None)
    with tarfile.open(out) as tar:
        tar.extractall(tmp / "host", filter="tar")
    prebuilt = tmp / "host" / offline.TOP / "prebuilt"
    assert (prebuilt.parent / "run-offline.sh").is_file() and (prebuilt.parent / "Snakefile").is_file()
    return prebuilt


def test_a_packed_qemu_runs_on_the_pack_alone(pack, tmp_path):
    record = offline.install_qemu(pack, "pit-scale", tmp_path / "qemu-system-x86_64", tmp_path / "build.json")
    build = load_build(tmp_path / "build.json")
    assert build["kind"] == "packed" and record["packed"]["sha256"] == describe_host("x", tmp_path / "h")["sha256"]
    check_binary(build["binary"], build["firmware_dir"])   # devices, kvm and tcg, plugins, firmware
    # A paused machine: every shared object it maps (accel-tcg is a module) is the pack's.
    qemu = subprocess.Popen([build["binary"], "-L", build["firmware_dir"], "-machine", "pc", "-accel", "tcg",
                             "-nodefaults", "-display", "none", "-S", "-qmp", "stdio"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert select.select([qemu.stdout], [], [], 30)[0], "no QMP greeting"
        qemu.stdout.readline()
        qemu.stdin.write('{"execute": "qmp_capabilities"}\n')
        qemu.stdin.flush()
        qemu.stdout.readline()
        maps = Path(f"/proc/{qemu.pid}/maps").read_text()
    finally:
        qemu.stdin.write('{"execute": "quit"}\n')
        qemu.stdin.flush()
        qemu.wait(timeout=30)
    objects = {line.split()[-1] for line in maps.splitlines() if ".so" in line.split()[-1]}
    assert any("qemu-modules" in o for o in objects), objects
    assert objects and all(o.startswith(str(pack)) for o in objects), sorted(o for o in objects
                                                                            if not o.startswith(str(pack)))


def test_an_offline_host_runs_from_the_pack(pack, tmp_path):
    cpio, manifest = tmp_path / "initramfs.cpio", tmp_path / "initramfs.json"
    offline.install_image(pack, cpio, manifest)
    assert offline.read_pack(pack)["image"]["sha256"] == __import__("guestio.util").util.sha256_file(cpio)
    outputs = {n: str(tmp_path / "k" / n) for n in ("bzImage", "System.map", "vmlinux", "config", "build.json")}
    offline.install_kernel(pack, "hz100", outputs)
    assert Path(outputs["bzImage"]).read_text() == "hz100 bzImage\n"
    (pack / "kernels" / "hz100" / "vmlinux").write_text("changed\n")
    with pytest.raises(offline.OfflinePackError, match="not the file the pack recorded"):
        offline.install_kernel(pack, "hz100", outputs)
    (pack / "kernels" / "hz100" / "vmlinux").write_text("hz100 vmlinux\n")
    # The pipeline's plan on that host: nothing built, everything prebuilt taken from the pack.
    extra = tmp_path / "offline.yaml"
    extra.write_text(yaml.safe_dump({"offline": {"prebuilt": str(pack)}}))
    done = plan(extra) if Path("/dev/kvm").exists() else None
    if done is None:
        pytest.skip("the profile needs /dev/kvm to plan")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    counts = job_counts(done.stdout)
    assert (counts.get("kernel_from_pack"), counts.get("qemu_from_pack"), counts.get("initramfs_from_pack")) == \
        (2, 2, 1), counts
    for built in ("kernel", "kernel_source", "qemu", "qemu_source", "initramfs", "exit_plugin"):
        assert built not in counts, (built, counts)
    assert counts.get("kvm_acceptance_check") == 1 and counts.get("bundle") == 1
