"""How the exitcount plugin's Makefile (workflow/plugin/Makefile) is called.

The build directory lies under results_dir, which comes from the configuration: it is
passed to make as an argument (no shell), escaped for make, and the Makefile quotes it for
its recipes' shell.  Whatever the path holds, it stays one path.
"""

from __future__ import annotations

import os
from pathlib import Path

PLUGIN_DIR = Path(__file__).resolve().parents[2] / "plugin"


class PluginPathError(ValueError):
    pass


def make_value(path: os.PathLike | str) -> str:
    """*path* as the value of a make command-line variable: make expands $, so $ is written $$.

    A newline cannot be carried through make's variables: it is refused."""
    text = os.fspath(path)
    if "\n" in text or "\r" in text or "\0" in text:
        raise PluginPathError(f"{text!r}: a path with a line break cannot be passed to make; "
                              "choose a results_dir without control characters")
    return text.replace("$", "$$")


def make_argv(build_dir: os.PathLike | str, hdr_dir: os.PathLike | str | None = None, *,
              targets: tuple[str, ...] = ("all",), silent: bool = False,
              plugin_dir: Path = PLUGIN_DIR) -> list[str]:
    """The make command line that builds the plugin and the decoder into *build_dir* (absolute)."""
    build_dir = Path(build_dir).absolute()
    hdr_dir = Path(hdr_dir).absolute() if hdr_dir is not None else build_dir / "include"
    return ["make", *(["-s"] if silent else []), "-C", os.fspath(plugin_dir),
            f"BUILD={make_value(build_dir)}", f"HDR_DIR={make_value(hdr_dir)}", *targets]
