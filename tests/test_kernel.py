"""Kernel layers and patches against the pinned source tree."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import REPO, TEST_RESULTS, results_path, snakemake
from guestio.build import kconfig
from guestio.build import kernel

LAYERS = REPO / "workflow" / "kernel" / "layers"
PRISTINE = REPO / "build" / "src" / "linux"
ALL_PATCHES = sorted(LAYERS.glob("*/*.patch"))


@pytest.fixture(scope="session")
def pristine() -> Path:
    """The pinned source, extracted by the pipeline's own rule."""
    snakemake(results_path("kernels", "source.json"))
    return PRISTINE


@pytest.fixture
def tree(pristine, tmp_path) -> Path:
    copy = tmp_path / "linux"
    kernel.prepare_tree(pristine, copy, [])
    return copy


def test_source_is_recorded_with_package_version_and_sha256(pristine):
    source = json.loads((TEST_RESULTS / "kernels" / "source.json").read_text())
    assert source["kernelversion"].startswith("6.1.")
    assert len(source["sha256"]) == 64
    assert source["debian_package"] == "linux-source-6.1"
    assert source["debian_version"] == kernel.debian_package_version("linux-source-6.1")


@pytest.mark.parametrize("patch", ALL_PATCHES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_each_patch_applies_to_the_pinned_source_without_touching_it(pristine, tree, patch):
    target = pristine / kernel.patched_files(patch)[0]
    before = target.read_bytes()
    kernel.apply_patches(tree, [patch])
    assert target.read_bytes() == before, "patching a variant tree must not change the pristine source"
    assert (tree / kernel.patched_files(patch)[0]).read_bytes() != before


def test_pmtmr_patch_removes_the_timer_verification_and_nothing_else(pristine, tree):
    [patch] = kconfig.layer_patches(LAYERS, "no-verify-pmtmr")
    kernel.apply_patches(tree, [patch])
    source = (tree / "drivers/clocksource/acpi_pm.c").read_text()
    init = source[source.index("static int __init init_acpi_pm_clocksource"):]
    init = init[: init.index("fs_initcall")]
    assert "verify_pmtmr_rate()" not in init.replace("verify_pmtmr_rate() was", "")
    # the paper removes the PIT cross-check only; the monotonicity reads above it stay
    assert "clocksource_acpi_pm.read(&clocksource_acpi_pm)" in init
    assert "clocksource_register_hz" in init


def test_a_patch_that_does_not_apply_names_file_and_hunk(tree, tmp_path):
    [good] = kconfig.layer_patches(LAYERS, "no-verify-pmtmr")
    bad = tmp_path / "0001-broken.patch"
    bad.write_text(good.read_text().replace("-\tif (verify_pmtmr_rate() != 0){", "-\tif (verify_pmtmr_rate_renamed() != 0){"))
    assert bad.read_text() != good.read_text(), "the broken patch must differ from the good one"
    before = (tree / "drivers/clocksource/acpi_pm.c").read_text()
    with pytest.raises(kernel.KernelBuildError) as error:
        kernel.apply_patches(tree, [bad])
    message = str(error.value)
    assert str(bad) in message
    assert "drivers/clocksource/acpi_pm.c" in message and "Hunk #1 FAILED" in message
    assert (tree / "drivers/clocksource/acpi_pm.c").read_text() == before, "nothing half-applied"


def test_option_that_does_not_survive_olddefconfig_is_named(tree, tmp_path):
    layers = tmp_path / "layers"
    shutil.copytree(LAYERS, layers)
    (layers / "no-pci").mkdir()
    (layers / "no-pci" / "fragment.config").write_text("# CONFIG_PCI is not set\n")
    objdir = tree / ".build"
    with open(tmp_path / "log", "w") as log, pytest.raises(kernel.KernelBuildError) as error:
        kernel.configure(tree, objdir, layers, ["base", "hz1000", "no-pci"], kernel.build_env(None), log, "gcc")
    message = str(error.value)
    assert "CONFIG_ATA_PIIX=y  (layer base" in message
    assert "CONFIG_E1000=y  (layer base" in message


def test_later_layer_wins_and_unset_symbols_render():
    reqs = [kconfig.Request("CONFIG_HZ", "1000", "hz1000", 3), kconfig.Request("CONFIG_HZ", "100", "hz100", 3),
            kconfig.Request("CONFIG_VT", None, "base", 9)]
    merged = kconfig.apply("CONFIG_HZ=250\nCONFIG_VT=y\nCONFIG_X=y\n", reqs)
    assert kconfig.parse(merged) == {"CONFIG_HZ": "100", "CONFIG_VT": None, "CONFIG_X": "y"}
    assert kconfig.missing("CONFIG_HZ=100\n", reqs) == []
    assert kconfig.missing("CONFIG_HZ=1000\nCONFIG_VT=y\n", reqs)[0][0].layer == "hz100"


def test_the_build_hashes_paths_relative_to_its_own_work_directory(tmp_path, monkeypatch):
    """ccache's base directory is the variant's work directory (source and objects inside it),
    never /: with / the compiler's -isystem /usr/lib/gcc/... would be hashed as ../../../usr/...,
    which differs with the depth of the clone, and a fresh clone elsewhere would miss."""
    monkeypatch.setenv("CCACHE_BASEDIR", "/")
    env = kernel.build_env(tmp_path / "cache", tmp_path / "build" / "kernel" / "baseline")
    assert env["CCACHE_BASEDIR"] == str((tmp_path / "build" / "kernel" / "baseline").resolve())
    assert env["CCACHE_DIR"] == str(tmp_path / "cache") and env["KBUILD_BUILD_USER"] == "guestio"
    assert kernel.build_env(None)["CCACHE_DISABLE"] == "1"
