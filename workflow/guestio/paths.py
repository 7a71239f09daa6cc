"""The result-path grammar: where each run lives under a results directory.

One template per kind of run, whose fields are the run's condition (the Snakemake wildcards of the
rule that makes it).  The rules take the templates as they are (``{variant}`` is a wildcard there);
scripts, tests and tools build one run's directory with :func:`run_dir` and read a path back into
its kind and condition with :func:`parse`, so that no other module spells a run path.

    runs/disk/vm/<variant>/<qemu>/<disk>/guest-<gsched>/host-<hsched>/rep<N>   bonnie++ in the guest
    runs/disk/native/host-fs/rep<N>                                           bonnie++ on the host
    runs/net/vm/<variant>/<qemu>/<nic>/rep<N>                                 the network benchmarks, guest
    runs/net/native/veth/rep<N>                                               the same, host to host
    runs/smoke/<variant>                                                      a trivial job (smoke boot)
    exits/<workload>/<variant>/<qemu>/rep<N>                                  an exit run (Tables 1-4, Fig 6)
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

#: kind -> template, relative to the results directory
TEMPLATES: dict[str, str] = {
    "disk_vm": "runs/disk/vm/{variant}/{qemu}/{disk}/guest-{gsched}/host-{hsched}/rep{rep}",
    "disk_native": "runs/disk/native/host-fs/rep{rep}",
    "net_vm": "runs/net/vm/{variant}/{qemu}/{nic}/rep{rep}",
    "net_native": "runs/net/native/veth/rep{rep}",
    "smoke": "runs/smoke/{variant}",
    "exits": "exits/{workload}/{variant}/{qemu}/rep{rep}",
}


def fields(kind: str) -> list[str]:
    """The condition fields of a kind of run, in path order."""
    return [name for _, name, _, _ in string.Formatter().parse(TEMPLATES[kind]) if name]


def template(kind: str, results: str = "") -> str:
    """The directory of a kind of run under *results* ("": relative to the results directory),
    with its fields as Snakemake wildcards."""
    return f"{results}/{TEMPLATES[kind]}" if results else TEMPLATES[kind]


def run_dir(kind: str, results: str = "", **condition) -> str:
    """One run's directory under *results* ("": relative to it); every field of the kind must be
    given, and no other."""
    wanted = set(fields(kind))
    if set(condition) != wanted:
        raise ValueError(f"a {kind} run's path needs {', '.join(fields(kind))}; got {', '.join(sorted(condition))}")
    return template(kind, results).format(**{k: str(v) for k, v in condition.items()})


def _pattern(kind: str) -> re.Pattern:
    out, pos = [], 0
    tpl = TEMPLATES[kind]
    for literal, name, _, _ in string.Formatter().parse(tpl):
        out.append(re.escape(literal))
        if name:
            out.append(r"(?P<%s>\d+)" % name if name == "rep" else r"(?P<%s>[^/]+)" % name)
    return re.compile("(?:^|/)" + "".join(out) + "(?:/|$)")


_PATTERNS = {kind: _pattern(kind) for kind in TEMPLATES}


@dataclass(frozen=True)
class RunPath:
    kind: str
    condition: dict


def parse(path: str) -> RunPath | None:
    """The kind and condition of the run a path (a run directory or a file in it) belongs to, or
    None for a path outside the grammar.  ``rep`` comes back as an int."""
    text = str(path)
    for kind, pattern in _PATTERNS.items():
        m = pattern.search(text)
        if m:
            cond = m.groupdict()
            if "rep" in cond:
                cond["rep"] = int(cond["rep"])
            return RunPath(kind, cond)
    return None
