"""Config values that would harm the host or quietly spoil a long run: refused at parse time.

Each refusal names its key, and nothing is written: the end-to-end tests run this
checkout's Snakemake in a working directory of their own (--directory) with HOME
pointed into tmp_path, so a refusal that failed would show as a directory created there.
"""

from __future__ import annotations

import copy
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import REPO, SNAKEMAKE
from guestio import config as gconfig
from guestio.build.patches import unified_diff_problem

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
DEFAULT = REPO / "config" / "config.yaml"


def default_config() -> dict:
    """config/config.yaml with the schema's defaults filled in, as the rules see it."""
    from snakemake.utils import validate

    data = yaml.safe_load(DEFAULT.read_text())
    validate(data, str(SCHEMA))
    return data


def refusal(data: dict, **layer_roots) -> str:
    with pytest.raises(gconfig.ConfigError) as error:
        gconfig.check_inputs(data, **layer_roots)
    return str(error.value)


def with_value(key: str, value) -> dict:
    data = default_config()
    node = data
    *parents, last = key.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    return data


def snakemake_with(tmp_path: Path, mutate, *, dry: bool = True, target: str = "host_snapshot"):
    """This checkout's Snakemake on the default config changed by *mutate*, in tmp_path/work,
    with HOME at tmp_path/home.  host_snapshot: the cheapest job that writes into results_dir."""
    data = yaml.safe_load(DEFAULT.read_text())
    mutate(data)
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(data))
    (tmp_path / "work").mkdir(exist_ok=True)
    (tmp_path / "home").mkdir(exist_ok=True)
    return subprocess.run(
        [str(SNAKEMAKE), target, *(["-n"] if dry else []), "--cores", "1", "-s", str(REPO / "Snakefile"),
         "--directory", str(tmp_path / "work"), "--configfile", str(configfile)],
        cwd=tmp_path, env={**os.environ, "HOME": str(tmp_path / "home")}, capture_output=True, text=True,
        timeout=300)


def refused_end_to_end(tmp_path: Path, mutate, **kw) -> str:
    done = snakemake_with(tmp_path, mutate, **kw)
    text = done.stdout + done.stderr
    assert done.returncode != 0, text
    assert "refused configuration" in text
    assert "host_snapshot" not in done.stdout, "no job may be planned"
    return text


# --------------------------------------------------------------------------
# Paths


def test_tilde_is_expanded_in_the_config_every_rule_reads(tmp_path):
    done = snakemake_with(tmp_path, lambda c: c.update(results_dir="~/guestio-results"), dry=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "home" / "guestio-results" / "host" / "host.json").is_file()
    assert not (tmp_path / "work" / "~").exists(), "~ must not become a directory named ~"


def test_a_space_in_a_path_works(tmp_path):
    results = tmp_path / "with space" / "results"
    done = snakemake_with(tmp_path, lambda c: c.update(results_dir=str(results)), dry=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (results / "host" / "host.json").is_file()


def test_unquotable_results_dir_is_refused_before_any_job_writes(tmp_path):
    results = f"{tmp_path}/res$HOME"
    text = refused_end_to_end(tmp_path, lambda c: c.update(results_dir=results), dry=False)
    assert f"results_dir: {results!r} holds $, which make or the shell cannot quote" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "home", "work"]


@pytest.mark.parametrize("key", gconfig.WRITTEN_PATH_KEYS)
def test_dot_dot_is_refused_for_every_written_path_end_to_end(tmp_path, key):
    path = f"{tmp_path}/inside/../escaped"

    def mutate(c):
        section, _, name = key.rpartition(".")
        (c.setdefault(section, {}) if section else c)[name] = path
    text = refused_end_to_end(tmp_path, mutate)
    assert f"{key}: {path!r} has a '..' component" in text
    assert not (tmp_path / "inside").exists() and not (tmp_path / "escaped").exists()


@pytest.mark.parametrize("key", gconfig.WRITTEN_PATH_KEYS)
@pytest.mark.parametrize("path, why", [
    ("/", "is the root directory"),
    ("/etc", "is the system directory /etc"),
    ("/etc/guestio", "is inside the system tree /etc"),
    ("/usr/local/guestio", "is inside the system tree /usr"),
    ("/lib64", "is the system directory /lib64"),
    ("/boot/guestio", "is inside the system tree /boot"),
    ("/proc/guestio", "is inside the system tree /proc"),
    ("/sys/guestio", "is inside the system tree /sys"),
    ("/dev/shm/guestio", "is inside the system tree /dev"),
    ("/run/guestio", "is inside the system tree /run"),
    ("/var", "is a directory the whole system shares"),
    ("/var/lib", "is a directory the whole system shares"),
    ("/tmp/", "is a directory the whole system shares"),
    ("/root", "is a home directory itself"),
    ("/home/alice", "is a home directory itself"),
    ("~", "is a home directory itself"),
])
def test_system_and_home_directories_are_refused(key, path, why):
    problems = gconfig.normalise_paths(with_value(key, path))
    assert len(problems) == 1 and problems[0].startswith(f"{key}: {path!r}") and why in problems[0], problems


@pytest.mark.parametrize("path", ["/var/cache/guestio/ccache", "/var/tmp/guestio", "/tmp/guestio",
                                  "/home/alice/guestio", "/root/guestio", "/srv/guestio", "/libertine/x",
                                  "build/native-bonnie", "with space/results"])
def test_a_directory_of_its_own_is_allowed(path):
    for key in gconfig.WRITTEN_PATH_KEYS:
        assert gconfig.normalise_paths(with_value(key, path)) == [], key


def test_a_symlink_into_a_system_tree_is_refused(tmp_path):
    (tmp_path / "link").symlink_to("/etc")
    path = str(tmp_path / "link" / "guestio")
    problems = gconfig.normalise_paths(with_value("results_dir", path))
    assert problems == [f"results_dir: {path!r} (it resolves to /etc/guestio) is inside the system tree /etc, "
                        "where the pipeline must not write; give a directory of its own, e.g. ~/guestio/... "
                        "or /var/tmp/guestio"]


@pytest.mark.parametrize("key", [*gconfig.WRITTEN_PATH_KEYS, *gconfig.READ_PATH_KEYS])
@pytest.mark.parametrize("bad, what", [
    ("a\nb", "control characters ('\\n')"), ("a\tb", "control characters ('\\t')"),
    ("a`id`", "holds `"), ("a$b", "holds $"), ("it's", "holds '"), ('a"b', 'holds "'), ("a#b", "holds #"),
    ("a%b", "holds %"), ("a:b", "holds :"), ("a;b", "holds ;"), ("a\\b", "holds \\"), ("a*", "holds *"),
    ("-rf", "starts with '-'"),
])
def test_characters_that_cannot_be_quoted_are_refused(tmp_path, key, bad, what):
    path = f"{tmp_path}/{bad}" if not bad.startswith("-") else bad
    problems = gconfig.normalise_paths(with_value(key, path))
    assert len(problems) == 1 and problems[0].startswith(f"{key}: {path!r}") and what in problems[0], problems
    assert list(tmp_path.iterdir()) == []


def test_paths_are_normalised_in_place_and_read_paths_may_be_system_files():
    data = with_value("kernel.tarball", "~/src/linux.tar.xz")
    data["results_dir"] = "./results/"
    data["exits"]["tracefs"] = "/sys/kernel/tracing"
    data["disk"]["native_dir"] = "./-odd"
    assert gconfig.normalise_paths(data) == []
    home = os.path.expanduser("~")
    assert data["kernel"]["tarball"] == f"{home}/src/linux.tar.xz"
    assert data["kernel"]["ccache_dir"] == data["qemu"]["ccache_dir"] == f"{home}/.cache/guestio/ccache"
    assert data["results_dir"] == "results"
    assert data["disk"]["native_dir"] == "./-odd", "a leading - must stay behind ./"
    assert data["exits"]["tracefs"] == "/sys/kernel/tracing"
    assert data["qemu"]["source_dir"] == "/var/cache/guestio/src/qemu"


def test_unknown_user_after_tilde_is_refused():
    problems = gconfig.normalise_paths(with_value("qemu.ccache_dir", "~no-such-user-here/cache"))
    assert problems == ["qemu.ccache_dir: '~no-such-user-here/cache': no such user for ~ (write the home "
                        "directory out)"]


# --------------------------------------------------------------------------
# The network subnet


def test_subnet_with_host_bits_is_refused_end_to_end(tmp_path):
    text = refused_end_to_end(tmp_path, lambda c: c.setdefault("network", {}).update(subnet="10.210.0.1/24"))
    assert "network.subnet: '10.210.0.1/24' has host bits set; write its network address, 10.210.0.0/24" in text
    assert list((tmp_path / "work").glob("results*")) == []


@pytest.mark.parametrize("subnet, why", [
    ("8.8.8.0/24", "is not a private IPv4 range"),
    ("100.64.0.0/24", "is not a private IPv4 range"),  # carrier-grade NAT, shared
    ("127.0.0.0/24", "is a loopback range"),
    ("169.254.0.0/16", "is a link-local range"),
    ("10.0.0.0/30", "has room for fewer than the testbed's 3 hosts"),
    ("192.168.1.7/24", "has host bits set"),
])
def test_subnet_refusals(subnet, why):
    problems = gconfig.subnet_problems(with_value("network.subnet", subnet))
    assert len(problems) == 1 and problems[0].startswith(f"network.subnet: {subnet!r} {why}"), problems


@pytest.mark.parametrize("subnet", ["10.210.0.0/24", "172.16.5.0/29", "192.168.0.0/16"])
def test_private_subnets_are_allowed(subnet):
    assert gconfig.subnet_problems(with_value("network.subnet", subnet)) == []


# --------------------------------------------------------------------------
# Patches of the layers in use


GOOD_PATCH = "From: x\nSubject: y\n\n---\n a | 1 +\n\n--- a/a\n+++ b/a\n@@ -1,2 +1,2 @@\n one\n-two\n+three\n-- \n2.39\n"


@pytest.mark.parametrize("text, why", [
    ("just some notes, no diff\n", "not a unified diff: no '--- '/'+++ ' file header followed by an '@@' hunk"),
    ("--- a/a\n+++ b/a\nno hunk here\n", "the file header at line 1 has no @@ hunk after it"),
    ("--- a/a\n+++ b/a\n@@ -1,3 +1,3 @@\n one\n-two\n+three\n", "the hunk at line 3 is cut short"),
    ("--- a/a\n+++ b/a\n@@ -1,3 +1,3 @@\n one\n-two\nstray\n+three\n three\n",
     "the hunk at line 3 ends early at line 6 ('stray')"),
])
def test_malformed_patches_are_named(tmp_path, text, why):
    patch = tmp_path / "0001-x.patch"
    patch.write_text(text)
    assert why in (unified_diff_problem(patch) or "")


def test_every_patch_of_this_checkout_is_a_unified_diff(tmp_path):
    patches = sorted((REPO / "workflow").glob("*/layers/*/*.patch"))
    assert patches and [p for p in patches if unified_diff_problem(p)] == []
    (tmp_path / "good.patch").write_text(GOOD_PATCH)
    assert unified_diff_problem(tmp_path / "good.patch") is None


def test_garbage_patch_in_a_used_kernel_or_qemu_layer_is_refused(tmp_path):
    kernel, qemu = tmp_path / "kernel", tmp_path / "qemu"
    for root, layer in ((kernel, "base"), (kernel, "junk"), (kernel, "unused"), (qemu, "qjunk")):
        (root / layer).mkdir(parents=True)
    (kernel / "base" / "0001-good.patch").write_text(GOOD_PATCH)
    (kernel / "junk" / "0001-junk.patch").write_text("<html>404 Not Found</html>\n")
    (kernel / "unused" / "0001-junk.patch").write_text("not used by any variant\n")
    (qemu / "qjunk" / "0001-junk.patch").write_text("--- a/x\n+++ b/x\n")
    data = default_config()
    data["variants"] = {"baseline": ["base"], "broken": ["base", "junk"]}
    data["qemu"]["variants"] = {"stock": [], "bad": ["qjunk"]}
    text = refusal(data, kernel_layers_root=kernel, qemu_layers_root=qemu)
    assert "(2 problems)" in text
    assert (f"variants.broken: layer 'junk': {kernel}/junk/0001-junk.patch is not a usable patch: not a "
            "unified diff") in text
    assert f"qemu.variants.bad: layer 'qjunk': {qemu}/qjunk/0001-junk.patch is not a usable patch" in text
    assert "unused" not in text


# --------------------------------------------------------------------------
# Report artifacts and the exit window


def test_unknown_report_artifact_is_refused_end_to_end(tmp_path):
    text = refused_end_to_end(tmp_path, lambda c: c.setdefault("report", {}).update(artifacts=["fig1", "fig99"]))
    assert "report.artifacts: 'fig99' is not an artifact of workflow/guestio/analysis/claims.yaml" in text
    assert "'fig1'" not in text


def test_known_report_artifacts_pass():
    assert gconfig.artifact_problems(with_value("report.artifacts", ["fig1", "table2", "sched"])) == []


def test_exit_window_of_a_test_that_is_not_run_is_refused_end_to_end(tmp_path):
    def mutate(c):
        c.setdefault("network", {})["exits"] = {"tests": ["tcp_stream"], "window": "netperf-tcp_rr"}
    text = refused_end_to_end(tmp_path, mutate)
    assert ("network.exits.window: 'netperf-tcp_rr' is not a window of the exit run; the guest opens one per "
            "test of network.exits.tests: netperf-tcp_stream") in text


@pytest.mark.parametrize("tests, window, ok", [
    (["tcp_stream", "tcp_rr"], "netperf-tcp_stream", True),
    (["tcp_rr"], "netperf-tcp_rr", True),
    (["iperf3"], "iperf3", True),
    (["ping"], "ping-hosta-guestb", True),
    (["tcp_stream"], "tcp_stream", False),  # the test's name, not its window's
    (["tcp_stream", "tcp_rr"], "net-ready", False),
])
def test_exit_windows(tests, window, ok):
    data = default_config()
    data["network"]["exits"].update(tests=tests, window=window)
    assert (gconfig.exit_window_problems(data) == []) == ok


# --------------------------------------------------------------------------
# Repetitions


REPETITION_KEYS = ["disk.repetitions", "timer.repetitions", "diskmods.repetitions", "network.repetitions"]


@pytest.mark.parametrize("key", REPETITION_KEYS)
def test_one_repetition_gives_no_interval_and_is_refused(key):
    data = yaml.safe_load(DEFAULT.read_text())
    section, name = key.split(".")
    data.setdefault(section, {})[name] = 1
    with pytest.raises(gconfig.ConfigError) as error:
        gconfig.check(data, SCHEMA)
    assert f"{key}: 1 is less than the minimum of 2" in str(error.value)
    assert "a confidence interval needs at least 2 independent runs" in str(error.value)


def test_one_repetition_is_refused_end_to_end(tmp_path):
    done = snakemake_with(tmp_path, lambda c: c["disk"].update(repetitions=1))
    text = done.stdout + done.stderr
    assert done.returncode != 0
    assert "disk.repetitions: 1 is less than the minimum of 2" in text
    assert "a confidence interval needs at least 2 independent runs" in text


def merged(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        out[key] = merged(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


@pytest.mark.parametrize("profile", sorted(p.name for p in (REPO / "config").glob("*.yaml")))
def test_every_shipped_profile_passes_the_input_checks(profile):
    data = merged(yaml.safe_load(DEFAULT.read_text()), yaml.safe_load((REPO / "config" / profile).read_text()))
    gconfig.check(data, SCHEMA)
    from snakemake.utils import validate

    validate(data, str(SCHEMA))
    assert gconfig.input_problems(data) == []
    assert all(gconfig._get(data, key) >= 2 for key in REPETITION_KEYS)
