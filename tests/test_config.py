"""Configuration validation and the planned DAG, through the real Snakemake CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import REPO, job_counts, snakemake
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


def test_dry_run_plans_three_variants_image_and_boots():
    counts = planned_jobs()
    assert counts["kernel"] == 3
    assert counts["kernel_source"] == 1
    assert counts["initramfs"] == 1
    assert counts["data_disk"] == 1
    assert counts["accelerator"] == 1
    assert counts["smoke_boot"] == 3
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")


def test_adding_a_variant_is_a_config_line(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text(yaml.safe_dump({"variants": {"hz100-pmtmr": ["base", "hz100", "no-verify-pmtmr"]}}))
    counts = planned_jobs("--configfile", str(extra))
    assert counts["kernel"] == 4
