"""Kernel configuration built in readable layers.

A layer is a directory under ``workflow/kernel/layers/<name>/`` that holds an
optional ``fragment.config`` (Kconfig assignments) and optional ``*.patch``
files, applied in name order.  A variant is an ordered list of layers; later
layers override earlier ones.  The layers go on top of ``make tinyconfig``
and, after ``olddefconfig``, every requested assignment must have survived.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from guestio.build import patches

NOT_SET = None  # value of a symbol written as "# CONFIG_FOO is not set"

_ASSIGN = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")


class KconfigError(Exception):
    pass


@dataclass(frozen=True)
class Request:
    """One assignment asked for by a layer."""

    symbol: str
    value: str | None
    layer: str
    line: int

    def render(self) -> str:
        if self.value is NOT_SET:
            return f"# {self.symbol} is not set"
        return f"{self.symbol}={self.value}"


def parse(text: str) -> dict[str, str | None]:
    """Parse a .config or fragment into {symbol: value or NOT_SET}."""
    values: dict[str, str | None] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if m := _ASSIGN.match(line):
            values[m.group(1)] = m.group(2)
        elif m := _UNSET.match(line):
            values[m.group(1)] = NOT_SET
    return values


def layer_dir(layers_root: Path, name: str) -> Path:
    return patches.layer_dir(layers_root, name, what="kernel layer", error=KconfigError)


def layer_fragment(layers_root: Path, name: str) -> Path | None:
    fragment = layer_dir(layers_root, name) / "fragment.config"
    return fragment if fragment.is_file() else None


def layer_patches(layers_root: Path, name: str) -> list[Path]:
    return patches.layer_patches(layers_root, name, what="kernel layer", error=KconfigError)


def requests(layers_root: Path, layers: list[str]) -> list[Request]:
    """All assignments of the given layers, in order, with where they came from."""
    found: list[Request] = []
    for name in layers:
        fragment = layer_fragment(layers_root, name)
        if fragment is None:
            continue
        for number, raw in enumerate(fragment.read_text().splitlines(), start=1):
            line = raw.strip()
            if m := _ASSIGN.match(line):
                found.append(Request(m.group(1), m.group(2), name, number))
            elif m := _UNSET.match(line):
                found.append(Request(m.group(1), NOT_SET, name, number))
    return found


def effective(reqs: list[Request]) -> dict[str, Request]:
    """The last request for each symbol wins, as in merge_config.sh."""
    return {r.symbol: r for r in reqs}


def apply(config_text: str, reqs: list[Request]) -> str:
    """Return config_text with the requested assignments written over it."""
    wanted = effective(reqs)
    out: list[str] = []
    for raw in config_text.splitlines():
        line = raw.strip()
        m = _ASSIGN.match(line) or _UNSET.match(line)
        if m and m.group(1) in wanted:
            continue
        out.append(raw)
    out.append("# --- guestio layers ---")
    out.extend(r.render() for r in wanted.values())
    return "\n".join(out) + "\n"


def missing(final_text: str, reqs: list[Request]) -> list[tuple[Request, str | None]]:
    """Requests that did not survive olddefconfig, with the value they ended up as."""
    final = parse(final_text)
    lost = []
    for req in effective(reqs).values():
        got = final.get(req.symbol, NOT_SET)
        if got != req.value:
            lost.append((req, got))
    return lost


def describe_missing(lost: list[tuple[Request, str | None]]) -> str:
    lines = []
    for req, got in lost:
        now = "not set" if got is NOT_SET else got
        lines.append(f"  {req.render()}  (layer {req.layer}, line {req.line}) -> ended as {now}")
    return "kernel config options did not survive olddefconfig (a missing dependency?):\n" + "\n".join(lines)
