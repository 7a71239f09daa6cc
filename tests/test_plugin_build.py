"""The exitcount plugin's build (workflow/plugin/Makefile, guestio.build.plugin) takes its
output directory from results_dir, a configuration value: a space must not split it, and
nothing in it (a backtick, $(...), a quote) may run as a command."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from guestio.build import plugin


def _hostile_dir(tmp_path: Path, canaries: list[Path]) -> Path:
    """A results directory whose name would run touch on each canary if a shell parsed it."""
    name = (f"my results `touch {canaries[0]}` $(touch {canaries[1]}) it's $HOME; touch {canaries[2]}")
    return tmp_path / name / "exits" / "plugin"


@pytest.fixture
def canaries():
    paths = [Path(f"/tmp/pwned-{uuid.uuid4().hex}") for _ in range(3)]
    yield paths
    for p in paths:
        p.unlink(missing_ok=True)


def test_a_path_with_spaces_and_shell_syntax_is_built_into_and_never_run(tmp_path, canaries):
    build = _hostile_dir(tmp_path, canaries)
    done = subprocess.run(plugin.make_argv(build, targets=("decoder",)), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (build / "exitcount-decode").is_file()  # the one directory, named exactly
    assert [p.name for p in tmp_path.iterdir()] == [build.relative_to(tmp_path).parts[0]]  # nothing split off
    assert not any(p.exists() for p in canaries), "a path from the configuration ran as a command"


def test_dry_run_quotes_the_path_as_one_word(tmp_path, canaries):
    build = _hostile_dir(tmp_path, canaries)
    (build / "include").mkdir(parents=True)
    (build / "include" / "qemu-plugin.h").write_text("")
    done = subprocess.run([*plugin.make_argv(build), "-n"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    compile_line = next(line for line in done.stdout.splitlines() if "-shared" in line)
    def sh_word(text: str) -> str:
        return "'" + text.replace("'", "'\\''") + "'"

    assert f"-o {sh_word(str(build))}/libexitcount.so.tmp" in compile_line
    assert f"-I {sh_word(str(build / 'include'))} " in compile_line
    assert not any(p.exists() for p in canaries)


def test_a_missing_header_names_its_path_and_runs_nothing(tmp_path, canaries):
    build = _hostile_dir(tmp_path, canaries)
    done = subprocess.run(plugin.make_argv(build, targets=("plugin",)), capture_output=True, text=True)
    assert done.returncode != 0
    assert f"missing {build}/include/qemu-plugin.h" in done.stderr
    assert not any(p.exists() for p in canaries)


def test_a_dollar_reaches_make_escaped_and_a_line_break_is_refused():
    assert plugin.make_value("/r/$HOME/$(x)") == "/r/$$HOME/$$(x)"
    with pytest.raises(plugin.PluginPathError, match="line break"):
        plugin.make_value("/r/a\nb")


@pytest.mark.parametrize("name", ["c:d", "s;t", "p%q", "a#b", "w*x?[y]", "back\\slash", "tab\there", "--help",
                                  "${HOME}", "$(shell touch {canary})"])
def test_make_syntax_in_the_path_is_data_too(tmp_path, canaries, name):
    build = tmp_path / name.replace("{canary}", str(canaries[0])) / "plugin"
    done = subprocess.run(plugin.make_argv(build, targets=("decoder",)), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (build / "exitcount-decode").is_file()
    assert not canaries[0].exists()
