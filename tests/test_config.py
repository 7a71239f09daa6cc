"""Configuration validation and the planned DAG, through the real Snakemake CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import REPO, SNAKEMAKE, job_counts, snakemake
from guestio import config as gconfig

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
DEFAULT = REPO / "config" / "config.yaml"


def results_snapshot() -> set[str]:
    return {str(p) for p in (REPO / "results").rglob("*")}


def bad_config(tmp_path: Path, mutate) -> Path:
    data = yaml.safe_load(DEFAULT.read_text())
    mutate(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run_with(configfile: Path):
    before = results_snapshot()
    result = snakemake("-n", "--configfile", str(configfile), check=False)
    assert results_snapshot() == before, "a rejected config must not write anything under results/"
    return result


def test_default_and_paper_profiles_are_valid():
    base = yaml.safe_load(DEFAULT.read_text())
    gconfig.check(base, SCHEMA)
    paper = yaml.safe_load((REPO / "config" / "paper-scale.yaml").read_text())
    merged = {k: ({**base[k], **paper.get(k, {})} if isinstance(base[k], dict) else base[k]) for k in base}
    gconfig.check(merged, SCHEMA)
    assert merged["vm"]["accel"] == "kvm"
    for data in (base, merged):
        assert gconfig.consistency_problems(data, kvm_device=Path("/dev/null")) == []


def test_bad_enum_value_names_key_and_allowed_values(tmp_path):
    result = run_with(bad_config(tmp_path, lambda c: c["vm"].update(accel="kv")))
    assert result.returncode != 0
    assert "vm.accel: 'kv' is not allowed; allowed values: auto, kvm, tcg" in result.stderr + result.stdout


def test_misspelt_key_is_named_with_allowed_keys(tmp_path):
    def mutate(c):
        c["vm"]["boot_timeout"] = c["vm"].pop("boot_timeout_s")
    out = run_with(bad_config(tmp_path, mutate))
    text = out.stderr + out.stdout
    assert out.returncode != 0
    assert "vm.boot_timeout: unknown key" in text
    assert "boot_timeout_s" in text


def test_unknown_layer_and_smoke_variant_are_named(tmp_path):
    def mutate(c):
        c["variants"]["napi"] = ["base", "no-napi"]
        c["smoke"]["variants"] = ["baseline", "nope"]
    out = run_with(bad_config(tmp_path, mutate))
    text = out.stderr + out.stdout
    assert out.returncode != 0
    assert "variants.napi: layer 'no-napi' does not exist" in text
    assert "smoke.variants: 'nope' is not a variant" in text


# --------------------------------------------------------------------------
# Values that are each valid but cannot work together: the real CLI, no -n, nothing written


def run_for_real(tmp_path: Path, mutate, wrapper: list[str] = ()) -> subprocess.CompletedProcess:
    """A real (not dry) run of the impossible config into tmp_path/results: it must stop at once."""
    results = tmp_path / "results"
    config = bad_config(tmp_path, mutate)
    before = results_snapshot()
    done = subprocess.run([*wrapper, str(SNAKEMAKE), "--cores", "1", "--configfile", str(config),
                           "--config", f"results_dir={results}"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode != 0, done.stdout + done.stderr
    assert not results.exists(), "a rejected config must not run any job"
    assert results_snapshot() == before
    assert "Execute" not in done.stdout + done.stderr and "localrule" not in done.stdout + done.stderr
    return done


def test_bonnie_file_larger_than_the_data_disk(tmp_path):
    def mutate(c):
        c["disk"]["size_mib"] = 4096
        c["exits"]["size_mib"] = 3000
    text = run_for_real(tmp_path, mutate).stderr
    assert "impossible configuration (2 problems)" in text
    assert "disk.size_mib (4096) does not fit on the data disk (image.data_disk_mib: 3072)" in text
    # 3000 < 3072, but not after ext4's journal and inode tables.
    assert "exits.size_mib (3000) does not fit on the data disk (image.data_disk_mib: 3072): " \
           "ext4 leaves 2951 MiB of it free" in text


def test_bonnie_file_too_small_for_its_ram(tmp_path):
    def mutate(c):
        c["disk"].update(size_mib=300, ram_mib=256)
        c["exits"].update(size_mib=256, ram_mib=256)
    text = run_for_real(tmp_path, mutate).stderr
    assert "disk.size_mib (300) must be at least twice disk.ram_mib (256)" in text
    assert "exits.size_mib (256) must be at least twice exits.ram_mib (256)" in text


def test_guest_memory_too_small_to_boot_the_image(tmp_path):
    def mutate(c):
        c["disk"].update(size_mib=2048, ram_mib=128)
        c["vm"]["memory_mib"] = 192
    text = run_for_real(tmp_path, mutate).stderr
    assert "disk.ram_mib (128) is the benchmark guest's memory and too little to boot" in text
    assert "vm.memory_mib (192) is the memory of smoke and probe guests and too little to boot" in text
    assert "needs at least 212 MiB" in text  # 192 MiB was seen to panic with the 86 MiB image


def test_benchmarked_variants_must_be_defined(tmp_path):
    def mutate(c):
        c["disk"]["variants"] = ["baseline", "napi"]
        c["exits"]["variants"] = ["hz250"]
    text = run_for_real(tmp_path, mutate).stderr
    defined = ", ".join(sorted(yaml.safe_load(DEFAULT.read_text())["variants"]))
    assert f"disk.variants: 'napi' is not a variant; variants: {defined}" in text
    assert "exits.variants: 'hz250' is not a variant" in text


def test_variants_the_stages_name_must_be_defined(tmp_path):
    def mutate(c):
        c["network"]["nonapi_variant"] = "napi-less"
    text = run_for_real(tmp_path, mutate).stderr
    assert "network.nonapi_variant: 'napi-less' is not a kernel variant; variants defines: " in text
    text = run_for_real(tmp_path, lambda c: c["vm"].update(qemu="patched")).stderr
    assert "vm.qemu: 'patched' is not a QEMU variant; qemu.variants defines: coalesce, pit-scale, stock" in text
    # The timer's kernels come from the stage, not a key: without hz100 its guest-HZ route cannot run.
    config = yaml.safe_load(DEFAULT.read_text())
    del config["variants"]["hz100"]
    assert gconfig.reference_problems(config) == [
        "the timer stage (vHZ100 (guest HZ=100)) needs the kernel variant 'hz100' under variants"]
    assert gconfig.reference_problems(yaml.safe_load(DEFAULT.read_text())) == []


def test_capacity_is_that_of_the_real_data_disk():
    assert 2900 < gconfig.data_disk_capacity_mib(3072) < 3072 - 64
    assert gconfig.consistency_problems(yaml.safe_load(DEFAULT.read_text())) == []
    assert gconfig.min_guest_memory_mib(86) == 212 and gconfig.min_guest_memory_mib(None) == 212


def test_kvm_without_dev_kvm_is_refused(tmp_path):
    bad = {"image": {"data_disk_mib": 1024}, "disk": {"size_mib": 512, "ram_mib": 256}, "vm": {"accel": "kvm"}}
    problems = gconfig.consistency_problems(bad, kvm_device=tmp_path / "kvm")
    assert problems == [f"vm.accel (kvm): {tmp_path / 'kvm'} does not exist on this host, so KVM cannot work; "
                        "use vm.accel: auto (KVM if it works, else TCG) or tcg"]
    assert gconfig.consistency_problems({**bad, "vm": {"accel": "auto"}}, kvm_device=tmp_path / "kvm") == []


# Runs "$@" in a private mount namespace whose /dev has no kvm: a host without KVM.
NO_KVM = r"""
set -e
real=$(mktemp -d /tmp/guestio-realdev.XXXXXX)
mount --bind /dev "$real"
mount -t tmpfs -o mode=755 tmpfs /dev
for n in null zero full random urandom tty; do
  [ -e "$real/$n" ] || continue
  : > /dev/$n; mount --bind "$real/$n" /dev/$n
done
mkdir /dev/pts /dev/shm; mount --bind "$real/pts" /dev/pts; mount --bind "$real/shm" /dev/shm
ln -s /proc/self/fd /dev/fd; ln -s fd/0 /dev/stdin; ln -s fd/1 /dev/stdout; ln -s fd/2 /dev/stderr
umount -l "$real"; rmdir "$real"
exec "$@"
"""


@pytest.mark.boot  # needs root (a mount namespace)
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare")
def test_kvm_requested_on_a_host_without_kvm_stops_before_any_job(tmp_path):
    wrapper = ["unshare", "--mount", "--propagation", "private", "sh", "-c", NO_KVM, "sh"]
    text = run_for_real(tmp_path, lambda c: c["vm"].update(accel="kvm"), wrapper).stderr
    assert "vm.accel (kvm): /dev/kvm does not exist on this host, so KVM cannot work" in text


def test_every_problem_is_reported_at_once():
    data = yaml.safe_load(DEFAULT.read_text())
    data["vm"]["memory_mib"] = 1
    data["image"]["data_disk_mib"] = "big"
    with pytest.raises(gconfig.ConfigError) as error:
        gconfig.check(data, SCHEMA)
    assert "2 problems" in str(error.value)
    assert "vm.memory_mib" in str(error.value) and "image.data_disk_mib" in str(error.value)


def planned_jobs(*args: str) -> dict[str, int]:
    return job_counts(snakemake("-n", "--forceall", *args).stdout)


def test_dry_run_plans_every_variant_image_and_boots():
    counts = planned_jobs()
    default = yaml.safe_load(DEFAULT.read_text())
    assert counts["kernel"] == len(default["variants"])
    assert counts["kernel_source"] == 1
    assert counts["initramfs"] == 1
    assert counts["data_disk"] == 1
    assert counts["accelerator"] == 1
    assert counts["smoke_boot"] == len(default["smoke"]["variants"])
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")


def test_adding_a_variant_is_a_config_line(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text(yaml.safe_dump({"variants": {"hz100-pmtmr": ["base", "hz100", "no-verify-pmtmr"]}}))
    counts = planned_jobs("--configfile", str(extra))
    assert counts["kernel"] == len(yaml.safe_load(DEFAULT.read_text())["variants"]) + 1
