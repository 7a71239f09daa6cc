"""QEMU as a built, pinned component (guestio.build.qemu, workflow/rules/qemu.smk).

Fast: patch layers on a tiny fake tree (a patch that does not apply stops the build
naming the patch file and the hunk, nothing half-applied), config checks, build records.
``build`` (slow tier, also ``boot``): the real build through Snakemake into a results
directory of the test's own, the binary's version, devices, TCG, plugins and trace
events, and a cached rebuild against a cold one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, SNAKEMAKE
from guestio import config as gconfig
from guestio.build import patches
from guestio.build import qemu, qemu_variant
from guestio.util import sha256_file

DEFAULT_CONFIG = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
QEMU_CFG = DEFAULT_CONFIG["qemu"]
#: The tests' own results directory for the real build (never the user's results/).
RESULTS_REL = "build/test-results-qemu"
RESULTS = REPO / RESULTS_REL
EXPERIMENT_DEVICES = ["ide-hd", "virtio-blk-pci", "e1000", "rtl8139", "virtio-net-pci", "virtserialport"]


# --------------------------------------------------------------------------
# Patch layers on a tiny fake tree


TIMER_C = "".join(f"int line{i} = {i};\n" for i in range(1, 41))


def _hunk_patch(old: str, new: str, at: int) -> str:
    """A one-hunk unified diff of hw/timer/fake.c replacing line *at* (1-based) of TIMER_C."""
    lines = TIMER_C.splitlines()
    ctx_before = lines[at - 4:at - 1]
    ctx_after = lines[at:at + 3]
    body = [f" {c}" for c in ctx_before] + [f"-{old}", f"+{new}"] + [f" {c}" for c in ctx_after]
    return f"@@ -{at - 3},7 +{at - 3},7 @@\n" + "\n".join(body) + "\n"


def _patch_file(path: Path, *hunks: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("--- a/hw/timer/fake.c\n+++ b/hw/timer/fake.c\n" + "".join(hunks))
    return path


@pytest.fixture
def fake(tmp_path):
    """A fake pristine QEMU tree (with the stamp the source rule writes), layers and a source record."""
    pristine = tmp_path / "src" / "qemu"
    (pristine / "hw" / "timer").mkdir(parents=True)
    (pristine / "hw" / "timer" / "fake.c").write_text(TIMER_C)
    source = {"package": "qemu", "version": "1:7.2+dfsg-7+deb12u18", "orig_sha256": "0" * 64,
              "orig_tarball": str(tmp_path / "nowhere" / "qemu_7.2+dfsg.orig.tar.xz")}
    (pristine / ".guestio-source.json").write_text(json.dumps(source))
    layers = tmp_path / "layers"
    good = _patch_file(layers / "pit" / "0001-scale.patch", _hunk_patch("int line10 = 10;", "int line10 = 100;", 10))
    # Two hunks: the first would apply, the second does not: nothing of it may be applied.
    bad = _patch_file(layers / "broken" / "0001-coalesce.patch",
                      _hunk_patch("int line20 = 20;", "int line20 = 200;", 20),
                      _hunk_patch("int line30 = 3000;", "int line30 = 30;", 30))
    return {"pristine": pristine, "layers": layers, "source": source, "good": good, "bad": bad, "tmp": tmp_path}


def _build(fake, layers: list[str]):
    return qemu_variant.build_variant(
        variant="test", layers=layers, layers_root=fake["layers"], pristine=fake["pristine"],
        source=fake["source"], workdir=fake["tmp"] / "work", outdir=fake["tmp"] / "out", jobs=1,
        ccache_dir=None, log_path=fake["tmp"] / "build.log")


def test_a_layer_patch_that_does_not_apply_stops_the_build_naming_patch_and_hunk(fake):
    with pytest.raises(qemu.QemuBuildError) as error:
        _build(fake, ["pit", "broken"])
    message = str(error.value)
    assert f"patch {fake['bad']} does not apply" in message
    assert "hw/timer/fake.c" in message and "Hunk #2 FAILED" in message
    tree = fake["tmp"] / "work" / "src" / "hw" / "timer" / "fake.c"
    text = tree.read_text()
    assert "int line10 = 100;" in text, "the layer before it was applied"
    assert "int line20 = 20;" in text and "int line20 = 200;" not in text, "nothing half-applied"
    assert (fake["pristine"] / "hw" / "timer" / "fake.c").read_text() == TIMER_C, "the pristine tree never changes"
    assert not (fake["tmp"] / "out").exists(), "no binary, no build.json"


def test_layer_patches_apply_in_order_to_a_hard_linked_copy(fake):
    tree = fake["tmp"] / "variant"
    patches.prepare_tree(fake["pristine"], tree, patches.variant_patches(fake["layers"], ["pit"]))
    assert "int line10 = 100;" in (tree / "hw" / "timer" / "fake.c").read_text()
    assert (fake["pristine"] / "hw" / "timer" / "fake.c").read_text() == TIMER_C
    assert (tree / ".guestio-source.json").stat().st_ino == (fake["pristine"] / ".guestio-source.json").stat().st_ino


def test_an_unknown_layer_is_named_with_the_known_ones(fake):
    with pytest.raises(qemu.QemuBuildError, match=r"QEMU layer 'nope' does not exist under .*known layers: broken, pit"):
        _build(fake, ["nope"])


# --------------------------------------------------------------------------
# Configuration


def test_config_defaults_build_the_stock_variant():
    assert QEMU_CFG["binary"] == "build"
    # stock, and pit-scale for the VMM's route to vHZ100 (Fig 5, Table 1: the timer stage)
    assert QEMU_CFG["variants"]["stock"] == [] and QEMU_CFG["variants"]["pit-scale"] == ["pit-scale"]
    assert QEMU_CFG["source_dir"] == "/var/cache/guestio/src/qemu"


def test_host_binary_refuses_patch_layers_and_unknown_layers_are_named(tmp_path):
    (tmp_path / "pit").mkdir()
    (tmp_path / "pit" / "0001-x.patch").write_text("")
    (tmp_path / "empty").mkdir()
    host = {"qemu": {"binary": "host", "variants": {"stock": [], "pit": ["pit"]}}}
    assert gconfig.qemu_variant_problems(host, tmp_path) == [
        "qemu.variants.pit: patch layers pit need qemu.binary: build (qemu.binary: host runs the "
        "distribution's binary, which cannot be patched)"]
    built = {"qemu": {"binary": "build", "variants": {"stock": [], "pit": ["pit"], "x": ["nope", "empty"]}}}
    problems = gconfig.qemu_variant_problems(built, tmp_path)
    assert problems[0] == f"qemu.variants.x: layer 'nope' does not exist under {tmp_path}; known layers: empty, pit"
    assert problems[1].startswith("qemu.variants.x: layer 'empty' has no *.patch files")
    assert gconfig.qemu_variant_problems({}, tmp_path) == []


def _dry_run(tmp_path, qemu_section: dict, *targets: str, replace: bool = False) -> subprocess.CompletedProcess:
    """replace: the config replaces the workflow's (a --configfile merges into it, so it cannot
    take a QEMU variant away)."""
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["qemu"].update(qemu_section)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return subprocess.run([str(SNAKEMAKE), "-n", "--cores", "1", *targets, "--configfile", str(path),
                           *(["--replace-workflow-config"] if replace else []),
                           "--config", f"results_dir={tmp_path / 'results'}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


def test_a_host_binary_with_layers_stops_before_any_job(tmp_path):
    done = _dry_run(tmp_path, {"binary": "host", "variants": {"stock": [], "pit": ["no-such-layer"]}})
    assert done.returncode != 0
    assert "qemu.variants.pit: patch layers no-such-layer need qemu.binary: build" in done.stdout + done.stderr


def test_a_misspelt_qemu_key_names_the_allowed_ones(tmp_path):
    done = _dry_run(tmp_path, {"binaries": "host"})
    assert done.returncode != 0
    assert "qemu.binaries: unknown key; allowed keys here: binary, ccache_dir, jobs, source_dir, variants" in done.stdout + done.stderr


def test_host_binary_needs_no_source_and_no_build(tmp_path):
    results = tmp_path / "results"
    # The host's binary cannot be patched: no pit-scale variant (the timer stage then drops its VMM route).
    done = _dry_run(tmp_path, {"binary": "host", "variants": {"stock": []}}, str(results / "qemu" / "stock" / "build.json"),
                    replace=True)
    assert done.returncode == 0, done.stderr
    assert "qemu_source" not in done.stdout
    assert qemu.outputs(str(results), "stock", {"binary": "host"})["binary"] == qemu.HOST_BINARY
    assert qemu.outputs("r", "stock", {"binary": "build"}) == {
        "binary": "r/qemu/stock/qemu-system-x86_64", "build": "r/qemu/stock/build.json"}


# --------------------------------------------------------------------------
# Build records


def test_load_build_finds_the_binary_beside_its_record_and_checks_it(tmp_path):
    binary = tmp_path / "qemu-system-x86_64"
    binary.write_bytes(b"\x7fELF fake")
    record = {"variant": "stock", "kind": "build", "binary": "/moved/away/qemu-system-x86_64",
              "firmware_dir": "/usr/share/qemu", "version": "7.2.22", "sha256": sha256_file(binary),
              "patches": [], "size_bytes": binary.stat().st_size}
    (tmp_path / "build.json").write_text(json.dumps(record))
    loaded = qemu.load_build(tmp_path / "build.json")
    assert loaded["binary"] == str(binary) and Path(loaded["binary"]).is_absolute()
    assert qemu.argv_prefix(loaded) == [str(binary), "-L", "/usr/share/qemu"]
    binary.write_bytes(b"\x7fELF another binary")
    with pytest.raises(qemu.QemuBuildError, match="not the binary it records"):
        qemu.load_build(tmp_path / "build.json")
    (tmp_path / "build.json").write_text(json.dumps({"binary": str(binary)}))
    with pytest.raises(qemu.QemuBuildError, match="missing firmware_dir, version, sha256, variant, patches"):
        qemu.load_build(tmp_path / "build.json")


def test_source_files_name_set_up_when_missing(tmp_path):
    with pytest.raises(qemu.QemuBuildError, match=r"run `\./envs/setup\.sh`"):
        qemu.source_files(tmp_path, "qemu", "1:7.2+dfsg-7+deb12u18", configfiles=[])


def test_the_missing_source_error_names_set_up_with_the_runs_config_files(tmp_path):
    """A --configfile user is told the set-up command that reads the same qemu.source_dir."""
    mine = tmp_path / "my config.yaml"
    with pytest.raises(qemu.QemuBuildError) as raised:
        qemu.source_files(tmp_path, "qemu", "1:7.2+dfsg-7+deb12u18",
                          configfiles=[REPO / "config" / "quick.yaml", mine])
    assert f"`./envs/setup.sh --configfile config/quick.yaml --configfile '{mine}'`" in str(raised.value)


def test_dsc_checksums_are_read(tmp_path):
    dsc = textwrap.dedent("""\
        Format: 3.0 (quilt)
        Checksums-Sha256:
         aa 10 qemu_7.2+dfsg.orig.tar.xz
         bb 20 qemu_7.2+dfsg-7.debian.tar.xz
        Files:
         cc 10 qemu_7.2+dfsg.orig.tar.xz
        """)
    path = tmp_path / "qemu.dsc"
    path.write_text(dsc)
    assert qemu.dsc_checksums(path) == {"qemu_7.2+dfsg.orig.tar.xz": "aa", "qemu_7.2+dfsg-7.debian.tar.xz": "bb"}


@pytest.mark.boot  # runs the host's QEMU (a paused machine, under a second)
def test_host_binary_record_describes_the_distribution_binary(tmp_path):
    if not Path(qemu.HOST_BINARY).is_file():
        pytest.skip("no host QEMU")
    record = qemu_variant.describe_host("stock", tmp_path)
    assert record["kind"] == "host" and record["patches"] == [] and record["firmware_dir"] is None
    assert record["sha256"] == sha256_file(qemu.HOST_BINARY)
    assert record["version"].startswith("7.2")
    assert record["dpkg"]["version"].startswith("1:7.2")
    assert qemu.load_build(tmp_path / "build.json")["binary"] == str(Path(qemu.HOST_BINARY).resolve())


# --------------------------------------------------------------------------
# The real build (slow tier)


@pytest.fixture(scope="session")
def built() -> dict:
    """QEMU stock built by the pipeline's own rules into the tests' own results directory."""
    target = f"{RESULTS_REL}/qemu/stock/build.json"
    done = subprocess.run([str(SNAKEMAKE), "--cores", "all", target, "--config", f"results_dir={RESULTS_REL}"],
                          cwd=REPO, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        pytest.fail(f"building QEMU failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return qemu.load_build(RESULTS / "qemu" / "stock" / "build.json")


def _run(build: dict, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*qemu.argv_prefix(build), *args], capture_output=True, text=True, timeout=120, **kw)


@pytest.mark.build
@pytest.mark.boot
def test_built_binary_is_debians_72_and_its_record_names_the_source(built):
    assert "QEMU emulator version 7.2" in _run(built, "--version").stdout
    assert built["version"].startswith("7.2.")
    source = json.loads((RESULTS / "qemu" / "source.json").read_text())
    assert built["source"]["orig_sha256"] == source["orig_sha256"] == sha256_file(source["orig_tarball"])
    assert built["source"]["version"] == qemu.installed_source()["version"]
    assert len(built["source"]["debian_patches"]) > 20
    assert built["sha256"] == sha256_file(built["binary"])
    assert built["binary"] == str((RESULTS / "qemu" / "stock" / "qemu-system-x86_64").absolute())
    assert built["firmware_dir"] == "/usr/share/qemu" and built["layers"] == [] and built["patches"] == []
    for key in ("configure_args", "compiler", "build_seconds", "firmware_packages"):
        assert built[key]
    assert "--target-list=x86_64-softmmu" in built["configure_args"]


@pytest.mark.build
@pytest.mark.boot
def test_built_binary_has_the_devices_tcg_and_plugins_the_experiments_need(built, tmp_path):
    devices = _run(built, "-device", "help").stdout
    for device in EXPERIMENT_DEVICES:
        assert f'name "{device}"' in devices, device
    assert "tcg" in _run(built, "-accel", "help").stdout.split()
    # A plugin built against the same tree's header loads, and a machine with firmware starts.
    src = REPO / "build" / "src" / "qemu"
    plugin = tmp_path / "libempty.so"
    cflags = subprocess.run(["pkg-config", "--cflags", "glib-2.0"], capture_output=True, text=True, check=True)
    subprocess.run(["gcc", "-shared", "-fPIC", *cflags.stdout.split(), f"-I{src / 'include' / 'qemu'}",
                    str(src / "tests" / "plugin" / "empty.c"), "-o", str(plugin)], check=True)
    log = tmp_path / "trace.log"
    proc = subprocess.Popen([*qemu.argv_prefix(built), "-machine", "pc", "-accel", "tcg", "-nodefaults",
                             "-no-user-config", "-display", "none", "-plugin", str(plugin),
                             "-trace", "memory_region_ops_*", "-D", str(log), "-qmp", "stdio"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        proc.stdin.write('{"execute": "qmp_capabilities"}\n')
        proc.stdin.flush()
        time.sleep(2)  # SeaBIOS runs: port and MMIO accesses go through memory_region_ops_*
        proc.stdin.write('{"execute": "quit"}\n')
        proc.stdin.flush()
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    trace = log.read_text()
    assert "memory_region_ops_write" in trace and "memory_region_ops_read" in trace


def _build_counting_ccache(variant: str, layers: list[str], tmp_path: Path) -> tuple[dict, int, int]:
    """Build a variant in a fresh tree (tmp_path/work) with the config's ccache; its record,
    ccache hits and misses."""
    source = json.loads((RESULTS / "qemu" / "source.json").read_text())
    ccache = Path(yaml.safe_load((REPO / "config" / "config.yaml").read_text())["qemu"]["ccache_dir"]).expanduser()
    env = qemu_variant.build_env(ccache)

    def stats() -> dict[str, int]:
        out = subprocess.run(["ccache", "--print-stats"], env=env, capture_output=True, text=True, check=True)
        return {k: int(v) for k, v in (line.split("\t") for line in out.stdout.splitlines() if "\t" in line)}

    tmp_path.mkdir(parents=True, exist_ok=True)
    before = stats()
    record = qemu_variant.build_variant(
        variant=variant, layers=layers, layers_root=REPO / "workflow" / "qemu" / "layers",
        pristine=REPO / "build" / "src" / "qemu", source=source, workdir=tmp_path / "work",
        outdir=tmp_path / "out", jobs=os.cpu_count() or 1, ccache_dir=ccache, log_path=tmp_path / "build.log")
    after = stats()
    hits = sum(after[k] - before[k] for k in ("direct_cache_hit", "preprocessed_cache_hit"))
    return record, hits, after["cache_miss"] - before["cache_miss"]


@pytest.mark.build
@pytest.mark.boot
def test_a_rebuild_in_a_fresh_tree_is_served_from_ccache(built, tmp_path):
    """A wiped build dir recompiles nothing: every compilation is a ccache hit (times: the bench),
    also in a tree at another depth, as in a clone somewhere else.

    The first build fills the cache with whatever the pipeline's build (built) did not leave
    there (it may be from an older checkout); the second, three directories deeper than both
    the first and the pipeline's tree, must then hit for everything.  Paths outside the tree
    (/usr/include/glib-2.0, made relative with a base directory of /) once differed with the
    depth: 6 hits, 937 misses."""
    _build_counting_ccache("stock", [], tmp_path / "first")
    # Work directories: tmp_path/first/work, and the pipeline's build/qemu/stock.
    depths = (len(tmp_path.parts) + 2, len((REPO / "build" / "qemu" / "stock").absolute().parts))
    deeper = tmp_path.joinpath(*["d"] * (max(depths) + 3 - len(tmp_path.parts) - 1))
    record, hits, misses = _build_counting_ccache("stock", [], deeper)
    assert len((deeper / "work").parts) == max(depths) + 3
    assert hits > 500 and misses <= 0.02 * hits, (hits, misses)  # 943 compilations, all hits, when written
    assert record["version"] == built["version"]


@pytest.mark.build
@pytest.mark.boot
def test_a_patch_layer_recompiles_only_what_it_touches(built, tmp_path):
    """After stock, the coalesce layer (a new ISA device) misses the cache only for the files its
    patch reaches. A layer that adds a Kconfig symbol changes config-poison.h, which every common
    object includes, and would miss for nearly the whole tree."""
    record, hits, misses = _build_counting_ccache("coalesce", ["coalesce"], tmp_path)
    assert hits > 500 and misses <= 30, (hits, misses)
    assert record["patches"] and record["version"] == built["version"]


def test_the_build_hashes_paths_relative_to_its_own_work_directory(tmp_path, monkeypatch):
    """ccache's base directory is the variant's work directory (src/ and build/ inside it), never
    /: with / the objects' -I/usr/include/glib-2.0 would be hashed as ../../../usr/include/...,
    which differs with the depth of the clone (a fresh clone elsewhere: 6 hits, 937 misses)."""
    monkeypatch.setenv("CCACHE_BASEDIR", "/")
    env = qemu_variant.build_env(tmp_path / "cache", tmp_path / "build" / "qemu" / "stock")
    assert env["CCACHE_BASEDIR"] == str((tmp_path / "build" / "qemu" / "stock").resolve())
    assert env["CCACHE_CONFIGPATH"] == str(tmp_path / "cache" / "ccache.conf")
