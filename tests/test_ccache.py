"""The compiler cache shared by the kernel and QEMU builds (guestio.build.ccache).

Cheap stand-ins for the real builds: one C file that includes a header of its own tree and
system headers outside it (glib's, as QEMU's objects do; gcc's own, as the kernel's
-isystem does), compiled with an empty cache in two trees at different depths, the way a
fresh clone somewhere else rebuilds what the developers' clone built.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from guestio.build import ccache, hostdirs

pytestmark = pytest.mark.skipif(not shutil.which("ccache") or not shutil.which("pkg-config"),
                                reason="needs ccache and pkg-config (envs/debian-packages.txt)")

SOURCE = """#include <glib.h>
#include <stddef.h>
#include "local.h"
int f(void) { g_assert(LOCAL > 0); return LOCAL + (int)offsetof(struct s, b) + (int)g_str_hash(__FILE__); }
"""


def _stats(env: dict) -> dict[str, int]:
    out = subprocess.run(["ccache", "--print-stats"], env=env, capture_output=True, text=True, check=True)
    return {k: int(v) for k, v in (line.split("\t") for line in out.stdout.splitlines() if "\t" in line)}


def _compile_in(workdir: Path, cache: Path, base_dir: str | None = None) -> dict[str, int]:
    """Build workdir/src/foo.c from workdir/build (relative paths, as the builds do); the
    counters of this one compilation."""
    (workdir / "src").mkdir(parents=True)
    (workdir / "build").mkdir()
    (workdir / "src" / "foo.c").write_text(SOURCE)
    (workdir / "src" / "local.h").write_text("#define LOCAL 3\nstruct s { int a; long b; };\n")
    env = ccache.env(cache, tree=workdir)
    if base_dir is not None:
        env["CCACHE_BASEDIR"] = base_dir
    glib = subprocess.run(["pkg-config", "--cflags", "glib-2.0"], capture_output=True, text=True,
                          check=True).stdout.split()
    before = _stats(env)
    subprocess.run(["ccache", "gcc", "-g", "-O2", *glib, f"-iquote{workdir / 'src'}", "-I../src",
                    "-c", "../src/foo.c", "-o", "foo.o"], cwd=workdir / "build", env=env, check=True)
    after = _stats(env)
    return {k: after.get(k, 0) - before.get(k, 0) for k in ("direct_cache_hit", "preprocessed_cache_hit",
                                                             "cache_miss")}


def test_a_clone_at_another_depth_hits_what_the_first_compiled(tmp_path):
    cache = tmp_path / "cache"
    first = _compile_in(tmp_path / "work", cache)
    assert first["cache_miss"] == 1  # an empty cache: nothing pre-filled
    again = _compile_in(tmp_path / "a" / "b" / "c" / "guestio" / "build" / "qemu" / "stock", cache)
    assert again == {"direct_cache_hit": 1, "preprocessed_cache_hit": 0, "cache_miss": 0}


def test_a_base_dir_of_root_misses_at_another_depth(tmp_path):
    """The control: with / as base directory, /usr/include becomes ../../../usr/include, which
    differs with the depth of the tree (why a fresh clone elsewhere missed nearly everything)."""
    cache = tmp_path / "cache"
    _compile_in(tmp_path / "work", cache, base_dir="/")
    again = _compile_in(tmp_path / "a" / "b" / "c" / "work", cache, base_dir="/")
    assert again["cache_miss"] == 1


def test_the_builds_own_settings_replace_inherited_ones(tmp_path):
    env = ccache.env(tmp_path / "cache", {"CCACHE_CONFIGPATH": "/etc/ccache.conf", "CCACHE_BASEDIR": "/",
                                          "CCACHE_HASHDIR": "1", "PATH": os.environ["PATH"]}, tree=tmp_path / "w")
    assert env["CCACHE_CONFIGPATH"] == str(tmp_path / "cache" / "ccache.conf")
    assert env["CCACHE_DIR"] == str(tmp_path / "cache")
    assert env["CCACHE_BASEDIR"] == os.path.realpath(tmp_path / "w")
    assert "CCACHE_HASHDIR" not in env
    off = ccache.env(None, {"CCACHE_DIR": "/etc", "CCACHE_CONFIGPATH": "/etc/ccache.conf"})
    assert off["CCACHE_DISABLE"] == "1" and "CCACHE_CONFIGPATH" not in off and "CCACHE_DIR" not in off


def test_the_size_limit_goes_to_the_caches_own_ccache_conf(tmp_path, monkeypatch):
    # Even with the user's environment pointing ccache at the system-wide file.
    monkeypatch.setenv("CCACHE_CONFIGPATH", "/etc/ccache.conf")
    etc_before = Path("/etc/ccache.conf").read_bytes() if Path("/etc/ccache.conf").exists() else None
    cache = ccache.prepare(str(tmp_path / "cache"), "123M")
    assert "max_size = 123M" in (cache / "ccache.conf").read_text()
    shown = subprocess.run(["ccache", "--show-config"], env=ccache.env(cache), capture_output=True, text=True,
                           check=True).stdout
    assert f"({cache / 'ccache.conf'}) max_size = 123" in shown
    etc_after = Path("/etc/ccache.conf").read_bytes() if Path("/etc/ccache.conf").exists() else None
    assert etc_after == etc_before


@pytest.mark.parametrize("where", ["/", "/etc", "/etc/guestio-ccache", "/usr", "~", "/var"])
def test_a_system_directory_is_refused_as_the_cache(where):
    with pytest.raises(ccache.CcacheDirError, match=r"ccache_dir: .* cannot hold the compiler cache"):
        ccache.prepare(where, "1G")


def test_a_directory_of_its_own_is_accepted(tmp_path):
    assert hostdirs.system_dir_problem(tmp_path / "ccache") is None
    assert ccache.prepare(str(tmp_path / "ccache")) == tmp_path / "ccache"
