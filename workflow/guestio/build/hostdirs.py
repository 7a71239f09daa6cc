"""Host directories the configuration names and root then writes into, chowns or fills.

qemu.source_dir (envs/setup.sh chowns it to _apt and downloads into it) and the ccache
directory (ccache writes its ccache.conf and 16 subdirectories there) must be directories of
their own: never /, a system directory or the home directory itself.

``python -m guestio.build.hostdirs qemu-source-dir [--configfile FILE ...]`` prints
qemu.source_dir as the pipeline run with those config files sees it (envs/setup.sh calls it),
or says on stderr why it cannot be used (exit 1).
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
DEFAULT_CONFIG = REPO / "config" / "config.yaml"
#: What envs/setup.sh leaves in qemu.source_dir: the directory is ours to chown and fill.
SOURCE_MARKER = ".guestio-fetched"
DEFAULT_SOURCE_DIR = "/var/cache/guestio/src/qemu"

#: Trees of the system (and /lib, /lib32, /lib64, /libx32): neither they nor anything below them is written.
SYSTEM_TREES = ("/etc", "/usr", "/bin", "/sbin", "/boot", "/dev", "/proc", "/sys", "/run")
#: The package managers' own state, below a shared root: nothing inside them is written either.
PACKAGE_TREES = ("/var/lib/dpkg", "/var/lib/apt", "/var/cache/apt")
#: Directories shared by the whole system: writing into them directly is refused, a
#: directory of its own below them (/var/cache/guestio, /var/tmp/guestio, /tmp/x) is fine.
SHARED_ROOTS = ("/var", "/home", "/root", "/tmp", "/opt", "/srv", "/mnt", "/media", "/snap",
                "/var/lib", "/var/log", "/var/cache", "/var/spool", "/var/mail", "/var/backups",
                "/var/opt", "/var/local", "/var/run", "/var/lock", "/var/tmp")


class HostDirError(ValueError):
    pass


def expand(path: os.PathLike | str) -> Path:
    """~ expanded, made absolute (relative to the working directory, the repository for a run)."""
    return Path(os.path.expanduser(os.fspath(path))).absolute()


def _inside(path: str, tree: str) -> bool:
    return path == tree or path.startswith(tree.rstrip("/") + "/")


def home_directories() -> set[str]:
    """/root and this user's home directories ($HOME, the password database's); every
    /home/<user> counts as well (see :func:`system_location`).  Not every user's: listing
    them all may ask a directory service for thousands."""
    import pwd

    homes = {"/root", os.path.expanduser("~")}
    try:
        homes.add(pwd.getpwuid(os.getuid()).pw_dir)
    except KeyError:  # a uid without an entry (some containers)
        pass
    return {os.path.normpath(h) for h in homes if h.startswith("/")}


def system_location(path: str, homes: set[str]) -> str | None:
    """What makes the absolute, normalised *path* a place the pipeline must not write, or None."""
    if path == "/":
        return "the root directory"
    parts = path.strip("/").split("/")
    top = "/" + parts[0]
    if top in SYSTEM_TREES or re.fullmatch(r"lib(32|64|x32)?", parts[0]):
        return f"inside the system tree {top}" if len(parts) > 1 else f"the system directory {top}"
    if path in homes or (top == "/home" and len(parts) == 2):
        return "a home directory itself"
    if path in SHARED_ROOTS:
        return "a directory the whole system shares"
    if tree := next((t for t in PACKAGE_TREES if _inside(path, t)), None):
        return f"inside the package manager's {tree}"
    return None


def system_dir_problem(path: os.PathLike | str) -> str | None:
    """Why *path* is not a directory of its own (/, a system tree, a shared or home directory;
    as written and after symbolic links), or None."""
    given, homes = expand(path), home_directories()
    for candidate in dict.fromkeys([os.path.normpath(given), os.path.realpath(given)]):
        if why := system_location(candidate, homes):
            return f"{candidate} is a system or shared directory ({why})"
    return None


def dedicated_dir_problem(path: os.PathLike | str, marker: str = SOURCE_MARKER) -> str | None:
    """Why *path* may not be taken over (chowned, filled), or None: it must not be a system
    directory, and must be missing, empty, or already hold *marker*."""
    if problem := system_dir_problem(path):
        return problem
    path = expand(path)
    if not path.exists():
        return None
    if not path.is_dir():
        return f"{path} exists and is not a directory"
    if (path / marker).exists() or not any(path.iterdir()):
        return None
    return f"{path} already holds other files (and no {marker})"


# --------------------------------------------------------------------------
# The configuration as a run sees it


def _merge(base: dict, override: dict) -> dict:
    """Snakemake's way with several config files: nested mappings merge, the later value wins."""
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_config(configfiles: list[os.PathLike | str]) -> dict:
    """config/config.yaml, then each --configfile in order."""
    import yaml  # here: the build modules that import this one must load without PyYAML

    config: dict = {}
    for f in [DEFAULT_CONFIG, *configfiles]:
        try:
            loaded = yaml.safe_load(Path(f).read_text()) or {}
        except OSError as exc:
            raise HostDirError(f"config file {f}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise HostDirError(f"config file {f} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise HostDirError(f"config file {f}: the top level must be a mapping of keys")
        config = _merge(config, loaded)
    return config


def qemu_source_dir(configfiles: list[os.PathLike | str], environ: dict | None = None) -> Path:
    """qemu.source_dir of the run with *configfiles* (GUESTIO_QEMU_SOURCE_DIR overrides it),
    expanded; HostDirError when it cannot be a directory of its own."""
    environ = os.environ if environ is None else environ
    value = environ.get("GUESTIO_QEMU_SOURCE_DIR") or (load_config(configfiles).get("qemu") or {}).get(
        "source_dir") or DEFAULT_SOURCE_DIR
    if not isinstance(value, str):
        raise HostDirError(f"qemu.source_dir: {value!r} is not a path")
    if problem := dedicated_dir_problem(value):
        raise HostDirError(f"qemu.source_dir: {value!r} cannot be used: {problem}. Set qemu.source_dir to a "
                           f"directory of its own (default {DEFAULT_SOURCE_DIR}): set-up changes its owner "
                           "to _apt and downloads into it")
    return expand(value)


#: The --configfile files of the Snakemake run in this process (common.smk sets them).
_run_configfiles: list[str] = []


def set_run_configfiles(configfiles) -> None:
    _run_configfiles[:] = [os.fspath(Path(f).absolute()) for f in configfiles]


def setup_command(configfiles: list[os.PathLike | str] | None = None) -> str:
    """The set-up command line for a run with *configfiles* (default: this run's), ready to
    paste into a shell in the repository."""
    words = ["./envs/setup.sh"]
    for f in _run_configfiles if configfiles is None else configfiles:
        path = Path(f).absolute()
        words += ["--configfile", os.fspath(path.relative_to(REPO) if path.is_relative_to(REPO) else path)]
    return shlex.join(words)


def _main(argv: list[str]) -> int:
    usage = "usage: python -m guestio.build.hostdirs qemu-source-dir [--configfile FILE ...]"
    if not argv or argv[0] != "qemu-source-dir":
        print(usage, file=sys.stderr)
        return 2
    configfiles, rest = [], argv[1:]
    while rest:
        if rest[0] != "--configfile" or len(rest) < 2:
            print(usage, file=sys.stderr)
            return 2
        configfiles.append(rest[1])
        rest = rest[2:]
    try:
        print(qemu_source_dir(configfiles))
    except HostDirError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
