"""Tracefs ``format`` files: an event's fields and its compiled ``print fmt``.

The layout of a tracepoint's printed line is not hard-coded: it is derived
from the event's ``format`` file (``/sys/kernel/tracing/events/kvm/kvm_exit/format``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from guestio.exits.kvm import FormatError
from guestio.exits.kvm.printfmt import PrintFmt, split_print_fmt

__all__ = ["Field", "EventFormat", "FormatError", "parse_format", "load_formats"]


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    offset: int
    size: int
    signed: bool


@dataclass
class EventFormat:
    name: str
    id: int | None
    fields: list[Field]
    print_fmt: str          # the format string, unescaped
    args: list[str]         # the argument expressions, as printed in the file
    printer: "PrintFmt"

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]


_FIELD_LINE = re.compile(r"^\s*field:(?P<decl>[^;]*);\s*offset:(?P<offset>\d+);\s*size:(?P<size>\d+);"
                         r"(?:\s*signed:(?P<signed>-?\d+);)?")


def _field_name(decl: str) -> tuple[str, str]:
    """'unsigned long guest_rip' -> ('guest_rip', 'unsigned long'); handles arrays and __data_loc."""
    decl = decl.strip()
    m = re.match(r"^(?P<type>.*?)(?P<name>\w+)\s*(?P<arr>\[[^\]]*\])?$", decl)
    if not m:
        raise FormatError(f"cannot read field declaration {decl!r}")
    return m.group("name"), (m.group("type").strip() + (m.group("arr") or "")).strip()


def parse_format(text: str, name: str | None = None) -> EventFormat:
    """Parse one tracefs ``format`` file."""
    ev_name = name
    ev_id: int | None = None
    fields: list[Field] = []
    fmt_line = None
    for line in text.splitlines():
        if line.startswith("name:"):
            ev_name = line.split(":", 1)[1].strip()
        elif line.startswith("ID:"):
            ev_id = int(line.split(":", 1)[1].strip())
        elif line.lstrip().startswith("field:"):
            m = _FIELD_LINE.match(line)
            if not m:
                raise FormatError(f"{ev_name}: cannot read field line {line!r}")
            fname, ftype = _field_name(m.group("decl"))
            fields.append(Field(fname, ftype, int(m.group("offset")), int(m.group("size")),
                                m.group("signed") == "1"))
        elif line.startswith("print fmt:"):
            fmt_line = line[len("print fmt:"):].strip()
    if ev_name is None:
        raise FormatError("format file without a 'name:' line")
    if fmt_line is None:
        raise FormatError(f"{ev_name}: format file without a 'print fmt:' line")
    fmt, args = split_print_fmt(fmt_line, ev_name)
    printer = PrintFmt(fmt, args, fields={f.name: f for f in fields}, event=ev_name)
    return EventFormat(ev_name, ev_id, fields, fmt, args, printer)


def load_formats(source: Path | str | Mapping[str, str], systems: Sequence[str] = ("kvm", "ftrace")
                 ) -> dict[str, EventFormat]:
    """Event name -> EventFormat.

    ``source`` is a tracefs-like directory (``events/<system>/<event>/format``, as
    :meth:`KvmTracer.save` writes and as ``/sys/kernel/tracing`` is), a directory
    of ``<event>.format`` files, or a mapping event name -> format text.
    """
    if isinstance(source, Mapping):
        return {k: parse_format(v, k) for k, v in source.items()}
    root = Path(source)
    found: dict[str, EventFormat] = {}
    events = root / "events" if (root / "events").is_dir() else root
    for system in systems:
        sysdir = events / system
        if not sysdir.is_dir():
            continue
        for evdir in sorted(sysdir.iterdir()):
            fmt = evdir / "format"
            if fmt.is_file():
                try:
                    found[evdir.name] = parse_format(fmt.read_text(), evdir.name)
                except FormatError:
                    if system == "kvm":
                        raise
    for f in sorted(root.glob("*.format")):
        found[f.stem] = parse_format(f.read_text(), f.stem)
    return found
