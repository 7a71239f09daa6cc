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
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
DEFAULT_CONFIG = REPO / "config" / "config.yaml"
#: What envs/setup.sh leaves in qemu.source_dir: the directory is ours to chown and fill.
SOURCE_MARKER = ".guestio-fetched"
DEFAULT_SOURCE_DIR = "/var/cache/guestio/src/qemu"

# Never used themselves: what lives there belongs to the system or to everyone.
_SYSTEM_DIRS = {
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/media", "/mnt",
    "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/usr/local", "/usr/src",
    "/var", "/var/cache", "/var/lib", "/var/log", "/var/tmp", "/var/spool", "/var/mail",
}
# Nor anything inside them: configuration, kernel interfaces, package-managed files.
_SYSTEM_TREES = (
    "/etc", "/proc", "/sys", "/dev", "/boot", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
    "/usr/bin", "/usr/sbin", "/usr/lib", "/usr/lib32", "/usr/lib64", "/usr/libexec", "/usr/include",
    "/usr/share", "/var/lib/dpkg", "/var/lib/apt",
)


class HostDirError(ValueError):
    pass


def expand(path: os.PathLike | str) -> Path:
    """~ expanded, made absolute (relative to the working directory, the repository for a run)."""
    return Path(os.path.expanduser(os.fspath(path))).absolute()


def _inside(path: str, tree: str) -> bool:
    return path == tree or path.startswith(tree.rstrip("/") + "/")


def system_dir_problem(path: os.PathLike | str) -> str | None:
    """Why *path* is not a directory of its own (/, a system directory, $HOME), or None."""
    given = expand(path)
    home = {os.path.realpath(os.path.expanduser("~"))} - {"/"}
    for candidate in dict.fromkeys([os.path.normpath(given), os.path.realpath(given)]):
        if candidate in _SYSTEM_DIRS or candidate in home:
            return f"{candidate} is a system or shared directory"
        if tree := next((t for t in _SYSTEM_TREES if _inside(candidate, t)), None):
            return f"{candidate} lies inside {tree}, which belongs to the system"
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
