"""envs/setup.sh finds qemu.source_dir as the run with the same config files sees it, and
refuses a directory it must not chown to _apt.  Only the path-resolving part runs here
(--print-source-dir): nothing is installed, downloaded or chowned."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import REPO

SETUP = REPO / "envs" / "setup.sh"


def _source_dir(*args: str, cwd: Path, home: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("GUESTIO_CONFIGFILE", "GUESTIO_QEMU_SOURCE_DIR")}
    return subprocess.run([str(SETUP), *args, "--print-source-dir"], cwd=cwd, capture_output=True, text=True,
                          env={**environ, "HOME": str(home), **env}, timeout=60)


def _config(path: Path, source_dir: str, extra: str = "") -> Path:
    path.write_text(f"qemu:\n  source_dir: {json.dumps(source_dir)}\n{extra}")  # quoted: ~ alone is null
    return path


def test_without_config_files_it_is_the_default_configs():
    done = _source_dir(cwd=REPO, home=Path.home())
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "/var/cache/guestio/src/qemu"


def test_a_relative_config_file_from_elsewhere_and_tilde(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    _config(tmp_path / "my run.yaml", "~/qemu src")
    done = _source_dir("--configfile", "my run.yaml", cwd=tmp_path, home=home)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(home / "qemu src")


def test_later_config_files_win_as_in_snakemake(tmp_path):
    first = _config(tmp_path / "a.yaml", str(tmp_path / "first"))
    second = _config(tmp_path / "b.yaml", str(tmp_path / "second"))
    done = _source_dir("--configfile", str(first), str(second), cwd=tmp_path, home=tmp_path)
    assert done.stdout.strip() == str(tmp_path / "second"), done.stderr
    # The environment's file comes first, the command line's over it.
    done = _source_dir(f"--configfile={first}", cwd=tmp_path, home=tmp_path, GUESTIO_CONFIGFILE=str(second))
    assert done.stdout.strip() == str(tmp_path / "first"), done.stderr
    done = _source_dir(cwd=tmp_path, home=tmp_path, GUESTIO_CONFIGFILE=str(second))
    assert done.stdout.strip() == str(tmp_path / "second"), done.stderr


def test_a_config_file_without_the_key_keeps_the_default(tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text("qemu:\n  jobs: 1\nresults_dir: elsewhere\n")
    done = _source_dir("--configfile", str(other), cwd=tmp_path, home=tmp_path)
    assert done.stdout.strip() == "/var/cache/guestio/src/qemu", done.stderr


@pytest.mark.parametrize("where", ["/", "/etc", "/usr", "/usr/lib/qemu", "/var", "/home", "~"])
def test_a_system_directory_is_refused(tmp_path, where):
    done = _source_dir("--configfile", str(_config(tmp_path / "c.yaml", where)), cwd=tmp_path, home=tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    assert "qemu.source_dir" in done.stderr and "a directory of its own" in done.stderr


def test_a_link_to_root_is_refused(tmp_path):
    (tmp_path / "link").symlink_to("/")
    done = _source_dir("--configfile", str(_config(tmp_path / "c.yaml", str(tmp_path / "link"))),
                       cwd=tmp_path, home=tmp_path)
    assert done.returncode == 1 and "/ is a system or shared directory" in done.stderr


def test_only_a_missing_empty_or_marked_directory_is_taken(tmp_path):
    config = _config(tmp_path / "c.yaml", str(tmp_path / "src"))
    assert _source_dir("--configfile", str(config), cwd=tmp_path, home=tmp_path).returncode == 0  # missing
    (tmp_path / "src").mkdir()
    assert _source_dir("--configfile", str(config), cwd=tmp_path, home=tmp_path).returncode == 0  # empty
    (tmp_path / "src" / "photos.tar").write_text("someone's")
    done = _source_dir("--configfile", str(config), cwd=tmp_path, home=tmp_path)
    assert done.returncode == 1 and "already holds other files (and no .guestio-fetched)" in done.stderr
    (tmp_path / "src" / ".guestio-fetched").write_text("")
    assert _source_dir("--configfile", str(config), cwd=tmp_path, home=tmp_path).returncode == 0  # ours


def test_the_environment_override_is_checked_too(tmp_path):
    done = _source_dir(cwd=tmp_path, home=tmp_path, GUESTIO_QEMU_SOURCE_DIR="/etc")
    assert done.returncode == 1 and "/etc is a system or shared directory" in done.stderr


def test_a_missing_config_file_or_unknown_argument_stops(tmp_path):
    done = _source_dir("--configfile", str(tmp_path / "nope.yaml"), cwd=tmp_path, home=tmp_path)
    assert done.returncode == 1 and "nope.yaml does not exist" in done.stdout + done.stderr
    done = _source_dir("--config-file", "x", cwd=tmp_path, home=tmp_path)
    assert done.returncode == 2 and "unknown argument --config-file" in done.stdout + done.stderr
