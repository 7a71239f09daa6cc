"""KVM backend: VM-exit sites and handling times from the host's tracefs text output.

Three parts, separate on purpose:

1. **Tracepoint formats** (:func:`parse_format`, :func:`load_formats`,
   :class:`PrintFmt`).  The layout of a tracepoint's printed line is not
   hard-coded: it is derived from the event's ``format`` file
   (``/sys/kernel/tracing/events/kvm/kvm_exit/format``): the ``print fmt:``
   string is parsed (printf conversions, ``__print_symbolic``,
   ``__print_flags``, ``cond ? "a" : "b"``, ``__get_str``) and turned into a
   regular expression with one group per conversion.  The events gained fields
   between kernel versions (kvm_exit: ``requests`` in 6.13-6.15-era kernels;
   kvm_entry: ``immediate_exit``, then ``intr_info``/``error_code``); the same
   code reads all of them because it looks fields up by name.

2. **Attribution** (:class:`KvmTraceParser`, :func:`parse_trace`,
   :func:`parse_trace_dir`).  Per vCPU thread (the task pid of the line), each
   ``kvm_exit`` is paired with the next ``kvm_entry`` of that thread: handling
   time = entry timestamp - exit timestamp (it includes any time QEMU spends in
   user space and, for HLT, the time the vCPU was blocked).  The first
   ``kvm_pio`` / ``kvm_mmio`` / ``kvm_fast_mmio`` / ``kvm_msr`` /
   ``kvm_hypercall`` between them gives the port, guest-physical address, MSR
   index or hypercall number and the direction.  Where no such event was
   recorded the VMX exit qualification (``info1``) or SVM EXITINFO is decoded
   instead (port and direction of I/O, direction of APIC accesses, direction
   of SVM MSR accesses, the vector of an external interrupt).  An exit with no entry before the trace ends, or whose thread's CPU
   lost events before its entry, is counted with an unknown handling time and
   reported.  ``CPU:N [LOST M EVENTS]`` markers, ``##### CPU N buffer started
   ####`` annotations and the ``# entries-in-buffer/entries-written: N/M``
   header are counted and reported.  Phases: a ``trace_marker`` line
   ``guestio phase=<name>`` (written by :meth:`KvmTracer.mark`) starts phase
   ``<name>`` for every exit after it; before any marker the ``phase`` argument
   applies.

3. **Recorder** (:class:`KvmTracer`) for a real KVM host: sets up a tracefs
   instance, filters the QEMU process's vCPU threads with ``set_event_pid``,
   sizes ``buffer_size_kb``, starts and stops around the measured window, saves
   ``trace``, the ``format`` files and ``per_cpu/cpu*/stats``.  It needs root and
   a kernel with KVM; it is only unit-tested against a fake tracefs directory.

Timestamps of the text output have microsecond resolution (``%5lu.%06lu``), so
each handling time is quantised to 1 us; the summary says so
(``timestamp_resolution_ns``).  Counter clocks (``x86-tsc``, ``counter``) print
integers: pass ``ticks_per_second`` to convert them.
"""

from __future__ import annotations

import ast
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import pandas as pd

from guestio.exits import schema as exits_schema
from guestio.vm.machine import Hooks

__all__ = [
    "Field", "EventFormat", "PrintFmt", "FormatError", "parse_format", "load_formats",
    "TraceLine", "parse_line", "KvmTraceParser", "ExitRecord", "parse_trace", "parse_trace_dir",
    "classify_exit", "read_cpu_stats", "VMX_REASONS", "SVM_REASONS", "KvmTracer", "DEFAULT_EVENTS",
    "REQUIRED_EVENTS",
]


class FormatError(ValueError):
    """A format file or print fmt that this parser does not understand."""


# =========================================================================================
# 1. Tracepoint format files and print fmt -> regex
# =========================================================================================

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
    fmt, args = _split_print_fmt(fmt_line, ev_name)
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


# ---- C expression helpers ----------------------------------------------------------------

_STRING = r'"(?:[^"\\]|\\.)*"'


def _c_string(lit: str) -> str:
    """Value of one or more adjacent C string literals ('"a" "b"')."""
    parts = re.findall(_STRING, lit)
    out = []
    for p in parts:
        body = p[1:-1]
        out.append(bytes(body, "utf-8").decode("unicode_escape"))
    return "".join(out)


def _scan(s: str) -> Iterator[tuple[int, str, int]]:
    """(index, char, depth) for characters outside string/char literals."""
    depth = 0
    i = 0
    n = len(s)
    while i < n:
        c = s[i]
        if c == '"' or c == "'":
            j = i + 1
            while j < n and s[j] != c:
                j += 2 if s[j] == "\\" else 1
            i = j + 1
            continue
        if c in "([{":
            yield i, c, depth
            depth += 1
        elif c in ")]}":
            depth -= 1
            yield i, c, depth
        else:
            yield i, c, depth
        i += 1


def _split_top(s: str, sep: str = ",") -> list[str]:
    parts, start = [], 0
    for i, c, d in _scan(s):
        if c == sep and d == 0:
            parts.append(s[start:i].strip())
            start = i + 1
    tail = s[start:].strip()
    if tail or parts:
        parts.append(tail)
    return parts


def _strip_parens(s: str) -> str:
    s = s.strip()
    while s.startswith("(") and s.endswith(")"):
        # only if the opening paren closes at the very end
        close = None
        for i, c, d in _scan(s):
            if c == ")" and d == 0:
                close = i
                break
        if close != len(s) - 1:
            break
        s = s[1:-1].strip()
    return s


def _ternary(s: str) -> tuple[str, str, str] | None:
    """Split a top-level 'cond ? a : b' (right-associative)."""
    q = None
    nest = 0
    for i, c, d in _scan(s):
        if d != 0:
            continue
        if c == "?":
            if q is None:
                q = i
            else:
                nest += 1
        elif c == ":" and q is not None:
            if nest == 0:
                return s[:q].strip(), s[q + 1:i].strip(), s[i + 1:].strip()
            nest -= 1
    return None


def _call(s: str) -> tuple[str, list[str]] | None:
    m = re.match(r"^(\w+)\s*\(", s)
    if not m or not s.endswith(")"):
        return None
    for i, c, d in _scan(s):
        if c == ")" and d == 0:
            if i != len(s) - 1:
                return None  # e.g. 'f(a) + g(b)': not one call
            break
    return m.group(1), _split_top(s[m.end():-1])


def _int_expr(s: str) -> int:
    """Evaluate a small integer constant expression ('0x040 + 13', '-1', '(1 << 3)')."""
    text = re.sub(r"\b(0[xX][0-9a-fA-F]+|\d+)[uUlL]+\b", r"\1", s.strip())  # C suffixes: 1UL, 0xffULL
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise FormatError(f"not an integer constant expression: {s!r}") from None

    def ev(n):
        if isinstance(n, ast.Expression):
            return ev(n.body)
        if isinstance(n, ast.Constant) and isinstance(n.value, int):
            return n.value
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, (ast.USub, ast.Invert, ast.UAdd)):
            v = ev(n.operand)
            return -v if isinstance(n.op, ast.USub) else (~v if isinstance(n.op, ast.Invert) else v)
        if isinstance(n, ast.BinOp):
            a, b = ev(n.left), ev(n.right)
            ops = {ast.Add: lambda: a + b, ast.Sub: lambda: a - b, ast.Mult: lambda: a * b,
                   ast.LShift: lambda: a << b, ast.RShift: lambda: a >> b, ast.BitOr: lambda: a | b,
                   ast.BitAnd: lambda: a & b}
            for t, f in ops.items():
                if isinstance(n.op, t):
                    return f()
        raise FormatError(f"not an integer constant expression: {s!r}")

    return ev(tree)


_REC_FIELD = re.compile(r"^(?:\(\s*[\w\s\*]+\)\s*)?REC->(\w+)$")


def _rec_field(expr: str) -> str | None:
    """'REC->x', '(u8)REC->x', '(REC->x)' -> 'x'."""
    m = _REC_FIELD.match(_strip_parens(expr))
    return m.group(1) if m else None


def _value_expr(expr: str) -> tuple[str | None, int | None]:
    """'REC->exit_reason & 0xffff' -> ('exit_reason', 0xffff)."""
    e = _strip_parens(expr)
    f = _rec_field(e)
    if f:
        return f, None
    m = re.match(r"^(.*?)&(.*)$", e)
    if m:
        f = _rec_field(m.group(1))
        if f:
            try:
                return f, _int_expr(m.group(2))
            except FormatError:
                return f, None
    refs = re.findall(r"REC->(\w+)", e)
    return (refs[0] if refs else None), None


def _symbol_table(items: list[str]) -> list[tuple[int, str]]:
    table = []
    for it in items:
        m = re.fullmatch(r"\{\s*(.+?)\s*,\s*(" + _STRING + r")\s*\}", it.strip(), re.S)
        if not m:
            raise FormatError(f"cannot read symbol table entry {it!r}")
        table.append((_int_expr(m.group(1)), _c_string(m.group(2))))
    return table


_HEX = "0x[0-9a-f]+"


class _Str:
    """A '%s' argument: a regex for its text and a decoder to field values."""

    regex: str
    can_be_empty: bool

    def decode(self, text: str) -> dict:
        return {}

    def matches(self, text: str) -> bool:
        return re.fullmatch(self.regex, text, re.S) is not None


class _Lit(_Str):
    def __init__(self, value: str):
        self.value = value
        self.regex = re.escape(value)
        self.can_be_empty = value == ""


class _Any(_Str):
    def __init__(self, key: str | None):
        self.key = key
        self.regex = ".*?"
        self.can_be_empty = True

    def decode(self, text):
        return {self.key: text} if self.key else {}


class _Symbolic(_Str):
    def __init__(self, field: str | None, mask: int | None, table: list[tuple[int, str]]):
        self.field, self.mask, self.table = field, mask, table
        names = sorted({n for _, n in table}, key=lambda n: (-len(n), n))
        self.by_name = {}
        for v, n in table:
            self.by_name.setdefault(n, v)
        self.regex = "(?:" + "|".join([re.escape(n) for n in names] + [_HEX]) + ")"
        self.can_be_empty = "" in self.by_name

    def decode(self, text):
        if not self.field:
            return {}
        if text in self.by_name:
            return {f"{self.field}:sym": text, f"{self.field}:val": self.by_name[text]}
        if re.fullmatch(_HEX, text):
            return {f"{self.field}:sym": text, f"{self.field}:val": int(text, 16)}
        return {f"{self.field}:sym": text}


class _Flags(_Str):
    def __init__(self, field: str | None, delim: str, table: list[tuple[int, str]]):
        self.field = field
        names = sorted({n for _, n in table}, key=lambda n: (-len(n), n))
        alt = "(?:" + "|".join([re.escape(n) for n in names] + [_HEX]) + ")"
        self.regex = f"(?:{alt}(?:{re.escape(delim)}{alt})*)?"
        self.can_be_empty = True

    def decode(self, text):
        return {f"{self.field}:flags": text} if self.field else {}


class _Cond(_Str):
    def __init__(self, cond: str, a: _Str, b: _Str):
        self.cond, self.a, self.b = cond, a, b
        alts = [x for x in (a, b) if not (isinstance(x, _Lit) and x.value == "")]
        empty = len(alts) < 2
        body = "|".join(x.regex for x in alts)
        self.regex = (f"(?:{body})" + ("?" if empty else "")) if body else ""
        self.can_be_empty = empty or a.can_be_empty or b.can_be_empty
        c = _strip_parens(cond)
        self.neg = c.startswith("!")
        self.cond_field = _rec_field(c.lstrip("!").strip())  # only a bare 'REC->f' / '!REC->f'

        m = re.fullmatch(r"REC->(\w+)\s*==\s*(.+)", c)
        self.eq_field, self.eq_value = None, None
        if m:
            try:
                self.eq_field, self.eq_value = m.group(1), _int_expr(m.group(2))
            except FormatError:
                pass

    def decode(self, text):
        in_a, in_b = self.a.matches(text), self.b.matches(text)
        out: dict = {}
        if in_a and not in_b:
            out.update(self.a.decode(text))
            if self.cond_field:
                out[f"{self.cond_field}:bool"] = 0 if self.neg else 1
            if self.eq_field:
                out[f"{self.eq_field}:val"] = self.eq_value
        elif in_b and not in_a:
            out.update(self.b.decode(text))
            if self.cond_field:
                out[f"{self.cond_field}:bool"] = 1 if self.neg else 0
        elif in_a:
            out.update(self.a.decode(text))
        if self.cond_field and isinstance(self.a, _Lit) and isinstance(self.b, _Lit):
            out[f"{self.cond_field}:str"] = text
        return out


def _compile_str_arg(expr: str, index: int) -> _Str:
    e = _strip_parens(expr)
    if re.fullmatch(rf"\s*(?:{_STRING}\s*)+", e, re.S):
        return _Lit(_c_string(e))
    t = _ternary(e)
    if t:
        cond, a, b = t
        return _Cond(cond, _compile_str_arg(a, index), _compile_str_arg(b, index))
    call = _call(e)
    if call:
        fn, cargs = call
        if fn == "__print_symbolic" and cargs:
            f, mask = _value_expr(cargs[0])
            return _Symbolic(f, mask, _symbol_table(cargs[1:]))
        if fn == "__print_flags" and len(cargs) >= 2:
            f, _ = _value_expr(cargs[0])
            return _Flags(f, _c_string(cargs[1]), _symbol_table(cargs[2:]))
        if fn in ("__get_str", "__get_rel_str") and cargs:
            return _Any(cargs[0].strip())
    f = _rec_field(e)
    return _Any(f if f else f"arg{index}")


_SPEC = re.compile(r"%(?P<flags>[-+ #0]*)(?P<width>\d+|\*)?(?:\.(?P<prec>\d+|\*))?"
                   r"(?P<len>hh|h|ll|l|z|j|t|L)?(?P<conv>[diouxXcsp%])")


@dataclass
class _Spec:
    conv: str
    flags: str
    width: str | None
    arg: str | None
    index: int
    key: str | None = None          # result key of a non-%s conversion: the field name, or argN
    str_arg: _Str | None = None     # a %s argument
    regex: str = ""
    base: int = 10                  # 0: keep the text

    @property
    def can_be_empty(self) -> bool:
        return self.str_arg.can_be_empty if self.str_arg is not None else False


class PrintFmt:
    """A compiled ``print fmt``: matches a printed event body and decodes its fields.

    Result keys: a numeric conversion of ``REC->f`` gives ``f`` (int); a ``%s``
    of ``__print_symbolic(REC->f ...)`` gives ``f:sym`` (the printed name) and
    ``f:val`` (its value, masked as in the fmt); a ``cond ? "a" : "b"`` whose
    cond is ``REC->f`` gives ``f:bool`` (and ``f:str``); ``__print_flags`` gives
    ``f:flags``; ``__get_str(f)`` or a char-array ``REC->f`` gives ``f`` (str).
    Afterwards every ``f:val`` / ``f:bool`` also fills ``f`` if no conversion
    printed ``f`` itself.
    """

    def __init__(self, fmt: str, args: Sequence[str], fields: Mapping[str, Field] | None = None,
                 event: str = "?"):
        self.fmt, self.args, self.event = fmt, list(args), event
        self.fields = dict(fields or {})
        if self.fields:
            unknown = sorted({f for a in self.args for f in re.findall(r"REC->(\w+)", a)} - set(self.fields))
            if unknown:
                raise FormatError(f"{event}: print fmt uses field(s) not in the format: {', '.join(unknown)}")
        self.specs: list[_Spec] = []
        pieces: list[tuple[str, object]] = []
        pos = 0
        argi = 0
        for m in _SPEC.finditer(fmt):
            pieces.append(("lit", fmt[pos:m.start()]))
            pos = m.end()
            if m.group("conv") == "%":
                pieces.append(("lit", "%"))
                continue
            if m.group("width") == "*" or m.group("prec") == "*":
                raise FormatError(f"{event}: '*' width/precision is not supported in {fmt!r}")
            conv = m.group("conv")
            if conv == "p":  # kernel %p extensions: %pS, %pI4, %pUb, ...
                ext = re.match(r"[A-Za-z0-9]*", fmt[pos:]).group(0)
                pos += len(ext)
                conv = "p" + ext
            if argi >= len(self.args):
                raise FormatError(f"{event}: print fmt has more conversions than arguments")
            spec = _Spec(conv=conv, flags=m.group("flags") or "", width=m.group("width"),
                         arg=self.args[argi], index=argi)
            argi += 1
            self._prepare(spec)
            self.specs.append(spec)
            pieces.append(("spec", spec))
        pieces.append(("lit", fmt[pos:]))
        if argi != len(self.args):
            raise FormatError(f"{event}: print fmt has {argi} conversions but {len(self.args)} arguments")
        self.regex_text = self._build(pieces)
        self.regex = re.compile(self.regex_text, re.S)

    def _prepare(self, spec: _Spec) -> None:
        c = spec.conv
        pad = " *" if spec.width and "0" not in spec.flags and "-" not in spec.flags else ""
        tail = " *" if "-" in spec.flags else ""
        if c in ("d", "i"):
            spec.regex, spec.base = pad + r"([-+ ]?\d+)" + tail, 10
        elif c == "u":
            spec.regex, spec.base = pad + r"(\d+)" + tail, 10
        elif c in ("x", "X"):
            digits = "[0-9a-f]" if c == "x" else "[0-9A-F]"
            body = f"(0[xX]{digits}+|0)" if "#" in spec.flags else f"({digits}+)"
            spec.regex, spec.base = pad + body + tail, 16
        elif c == "o":
            spec.regex, spec.base = pad + r"([0-7]+)" + tail, 8
        elif c == "c":
            spec.regex, spec.base = r"(.)", 0
        elif c == "p":
            spec.regex, spec.base = r"(\S+)", 0
        elif c.startswith("p"):
            spec.regex, spec.base = r"(.*?)", 0
        elif c == "s":
            spec.str_arg = _compile_str_arg(spec.arg or "", spec.index)
            spec.regex, spec.base = "(" + spec.str_arg.regex + ")", 0
            return
        spec.key = _rec_field(spec.arg or "") or f"arg{spec.index}"

    @staticmethod
    def _build(pieces: list[tuple[str, object]]) -> str:
        out = ["^"]
        for k, (kind, item) in enumerate(pieces):
            if kind == "spec":
                out.append(item.regex)  # type: ignore[union-attr]
                continue
            text = item  # type: ignore[assignment]
            prev_empty = k > 0 and pieces[k - 1][0] == "spec" and pieces[k - 1][1].can_be_empty
            next_empty = k + 1 < len(pieces) and pieces[k + 1][0] == "spec" and pieces[k + 1][1].can_be_empty
            last = k == len(pieces) - 1
            for tok in re.split(r"(\s+)", text):
                if not tok:
                    continue
                if tok.isspace():
                    out.append(r"\s*" if (prev_empty or next_empty or last) else r"\s+")
                else:
                    out.append(re.escape(tok))
        out.append(r"\s*$")
        return "".join(out)

    def match(self, body: str) -> dict | None:
        """Field values of one printed event body, or None if it does not match the format."""
        m = self.regex.match(body)
        if not m:
            return None
        res: dict = {}
        derived: dict = {}
        for spec, text in zip(self.specs, m.groups()):
            if spec.str_arg is not None:
                for k, v in spec.str_arg.decode(text).items():
                    (derived if ":" in k else res).setdefault(k, v)
                continue
            if spec.base:
                try:
                    val = int(text.strip().replace(" ", ""), spec.base) if text.strip() else None
                except ValueError:
                    return None
            else:
                val = text
            res.setdefault(spec.key, val)
        for k, v in derived.items():
            res.setdefault(k, v)
            base, _, suffix = k.partition(":")
            if suffix in ("val", "bool") and base not in res:
                res[base] = v
        return res


def _split_print_fmt(text: str, event: str) -> tuple[str, list[str]]:
    text = text.strip()
    if not text.startswith('"'):
        raise FormatError(f"{event}: print fmt does not start with a string: {text[:60]!r}")
    i = 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == '"':
            break
        i += 1
    else:
        raise FormatError(f"{event}: unterminated print fmt string")
    fmt = _c_string(text[:i + 1])
    rest = text[i + 1:].strip()
    if rest and not rest.startswith(","):
        raise FormatError(f"{event}: unexpected text after the print fmt string: {rest[:60]!r}")
    args = _split_top(rest[1:]) if rest else []
    return fmt, [a for a in args if a != ""]


# =========================================================================================
# 2. Trace text -> exits
# =========================================================================================

_LINE = re.compile(
    r"^\s*(?P<comm>.+?)-(?P<pid>\d+)\s+"
    r"(?:\(\s*(?P<tgid>[-\d]+)\)\s+)?"
    r"\[(?P<cpu>\d+)\]\s+"
    r"(?:(?P<flags>[^\s\d]\S{3,5})\s+)?"
    r"(?P<ts>\d+(?:\.\d+)?):\s+"
    r"(?P<event>\w+):\s?(?P<body>.*)$")
_LOST = re.compile(r"^\s*CPU:\s*(?P<cpu>\d+)\s+\[LOST\s+(?P<n>\d+)\s+EVENTS\]\s*$")
_LOST_NOCOUNT = re.compile(r"^\s*CPU:\s*(?P<cpu>\d+)\s+\[LOST EVENTS\]\s*$")
_BUF_STARTED = re.compile(r"^#{5}\s+CPU\s+(?P<cpu>\d+)\s+buffer started\s+#{4}\s*$")
_ENTRIES = re.compile(r"^#\s*entries-in-buffer/entries-written:\s*(?P<inbuf>\d+)/(?P<written>\d+)"
                      r"(?:\s+#P:(?P<ncpu>\d+))?")
_PHASE = re.compile(r"guestio\s+phase=(?P<phase>[\w.\-]+)")


@dataclass(frozen=True)
class TraceLine:
    comm: str
    pid: int
    cpu: int
    ts: str
    event: str
    body: str
    tgid: int | None = None


def parse_line(line: str) -> TraceLine | None:
    m = _LINE.match(line.rstrip("\n"))
    if not m:
        return None
    tgid = m.group("tgid")
    return TraceLine(comm=m.group("comm").strip(), pid=int(m.group("pid")), cpu=int(m.group("cpu")),
                     ts=m.group("ts"), event=m.group("event"), body=m.group("body"),
                     tgid=int(tgid) if tgid and tgid.strip("-") else None)


# Exit reasons -> schema kinds.  'pio'/'mmio'/'msr' are refined by the I/O event or exit info;
# 'mmio?' is MMIO only when an MMIO event was recorded (otherwise an ordinary EPT/NPT fault).
VMX_REASONS: dict[str, str] = {
    "IO_INSTRUCTION": "pio", "EPT_MISCONFIG": "mmio", "EPT_VIOLATION": "mmio?",
    "APIC_ACCESS": "mmio", "HLT": "hlt", "CPUID": "cpuid", "MSR_READ": "msr_read",
    "MSR_WRITE": "msr_write", "VMCALL": "hypercall", "EXTERNAL_INTERRUPT": "interrupt",
}
SVM_REASONS: dict[str, str] = {
    "io": "pio", "npf": "mmio?", "hlt": "hlt", "cpuid": "cpuid", "msr": "msr",
    "hypercall": "hypercall", "vmmcall": "hypercall", "interrupt": "interrupt", "intr": "interrupt",
    "avic_unaccelerated_access": "mmio",
}
IO_EVENTS = ("kvm_pio", "kvm_mmio", "kvm_fast_mmio", "kvm_msr", "kvm_hypercall")


def classify_exit(reason: str, info1: int | None = None, info2: int | None = None,
                  intr_info: int | None = None, io: tuple[str, dict] | None = None,
                  isa: int | None = None) -> tuple[str, int | None, str]:
    """(exit_kind, port_or_address, source) for one exit.

    ``io`` is the first I/O event recorded between the exit and the next entry:
    (event name, decoded fields).  ``source`` says where kind and address came
    from: 'event', 'exit-info' or 'reason'.
    """
    svm = reason in SVM_REASONS or isa == 2 or (reason[:1].islower() and reason not in VMX_REASONS)
    coarse = (SVM_REASONS if svm else VMX_REASONS).get(reason, "other")
    ev, f = io if io else (None, {})
    if coarse == "pio":
        if ev == "kvm_pio":
            return ("pio_out" if f.get("rw") else "pio_in"), f.get("port"), "event"
        if info1 is not None:
            port = (info1 >> 16) & 0xFFFF
            is_in = bool(info1 & 0x1) if svm else bool(info1 & 0x8)
            return ("pio_in" if is_in else "pio_out"), port, "exit-info"
        return "other", None, "reason"
    if coarse in ("mmio", "mmio?"):
        if ev == "kvm_mmio":
            t = f.get("type:sym") or ""
            kind = "mmio_write" if (t == "write" or f.get("type") == 2) else "mmio_read"
            return kind, f.get("gpa"), "event"
        if ev == "kvm_fast_mmio":
            return "mmio_write", f.get("gpa"), "event"
        if reason == "APIC_ACCESS" and info1 is not None:
            access = (info1 >> 12) & 0xF  # 0: linear read, 1: linear write (SDM 28-6)
            if access in (0, 1):
                return ("mmio_write" if access == 1 else "mmio_read"), None, "exit-info"
        return "other", None, "reason"
    if coarse == "msr":  # SVM: EXITINFO1 0 = RDMSR, 1 = WRMSR
        if ev == "kvm_msr":
            return ("msr_write" if f.get("write") else "msr_read"), f.get("ecx"), "event"
        if info1 is not None:
            return ("msr_write" if info1 & 1 else "msr_read"), None, "exit-info"
        return "other", None, "reason"
    if coarse in ("msr_read", "msr_write"):
        return coarse, (f.get("ecx") if ev == "kvm_msr" else None), ("event" if ev == "kvm_msr" else "reason")
    if coarse == "hypercall":
        if ev == "kvm_hypercall":
            return "hypercall", f.get("nr"), "event"
        return "hypercall", None, "reason"
    if coarse == "interrupt":
        vec = intr_info & 0xFF if (not svm and intr_info is not None and intr_info & 0x80000000) else None
        return "interrupt", vec, "exit-info" if vec is not None else "reason"
    return coarse, None, "reason"


@dataclass
class ExitRecord:
    pid: int
    cpu: int
    vcpu: int | None
    ts_ns: int
    guest_pc: int
    reason: str
    exit_kind: str
    port_or_address: int | None
    handling_ns: float            # NaN: unknown
    phase: str
    status: str                   # 'matched', 'no-entry' (trace ended), 'lost' (events lost before entry)
    source: str                   # 'event', 'exit-info', 'reason'


@dataclass
class _Open:
    line: TraceLine
    ts_ns: int
    fields: dict
    phase: str
    io: tuple[str, dict] | None = None
    extra_io: int = 0


def _ts_to_ns(ts: str, ticks_per_second: float | None) -> tuple[int, int]:
    """(timestamp in ns, resolution in ns) of a printed timestamp."""
    if "." in ts:
        sec, frac = ts.split(".", 1)
        return int(sec) * 1_000_000_000 + int(frac.ljust(9, "0")[:9]), 10 ** max(0, 9 - len(frac))
    if ticks_per_second is None:
        raise ValueError(f"timestamp {ts!r} is a raw counter (trace_clock counter/x86-tsc): "
                         "pass ticks_per_second to convert it")
    ns = int(ts) * 1e9 / ticks_per_second
    return int(round(ns)), max(1, int(round(1e9 / ticks_per_second)))


class KvmTraceParser:
    """Feed tracefs text lines; collect exit records and a summary."""

    def __init__(self, formats: Mapping[str, EventFormat], phase: str = "benchmark",
                 ticks_per_second: float | None = None, max_examples: int = 5):
        missing = [e for e in ("kvm_exit", "kvm_entry") if e not in formats]
        if missing:
            raise ValueError(f"no format for {', '.join(missing)}: the trace cannot be read without them")
        self.formats = dict(formats)
        self.phase = phase
        self.ticks_per_second = ticks_per_second
        self.max_examples = max_examples
        self.records: list[ExitRecord] = []
        self._open: dict[int, _Open] = {}
        self.s = {
            "lines": 0, "comment_lines": 0, "unrecognised_lines": 0,
            "events_parsed": 0, "events_by_name": {}, "events_unknown": 0, "events_unknown_names": {},
            "events_unmatched_format": 0, "unmatched_format_examples": [],
            "exits": 0, "exits_matched": 0, "unmatched_exits": 0, "unmatched_no_entry": 0,
            "unmatched_lost": 0, "unmatched_examples": [], "entries_without_exit": 0,
            "io_events_without_exit": 0, "extra_io_events": 0, "negative_handling": 0,
            "lost_events": 0, "lost_markers": 0, "lost_by_cpu": {}, "lost_unknown_markers": 0,
            "buffer_started_cpus": [], "entries_in_buffer": None, "entries_written": None,
            "dropped_by_header": None, "cpus": None, "timestamp_resolution_ns": None,
            "phases": [], "exit_reasons": {}, "exits_by_kind": {}, "kind_source": {},
        }

    # -- feeding -----------------------------------------------------------------------------
    def feed_lines(self, lines: Iterable[str]) -> "KvmTraceParser":
        for line in lines:
            self.feed(line)
        return self

    def feed(self, line: str) -> None:
        s = self.s
        s["lines"] += 1
        raw = line.rstrip("\n")
        if not raw.strip():
            return
        if raw.lstrip().startswith("#"):
            s["comment_lines"] += 1
            m = _ENTRIES.match(raw.strip())
            if m:
                s["entries_in_buffer"] = int(m.group("inbuf"))
                s["entries_written"] = int(m.group("written"))
                s["dropped_by_header"] = s["entries_written"] - s["entries_in_buffer"]
                if m.group("ncpu"):
                    s["cpus"] = int(m.group("ncpu"))
                return
            m = _BUF_STARTED.match(raw.strip())
            if m:
                s["buffer_started_cpus"].append(int(m.group("cpu")))
            return
        m = _LOST.match(raw)
        if m or _LOST_NOCOUNT.match(raw):
            cpu = int((m or _LOST_NOCOUNT.match(raw)).group("cpu"))
            n = int(m.group("n")) if m else 0
            s["lost_markers"] += 1
            s["lost_events"] += n
            if not m:
                s["lost_unknown_markers"] += 1
            s["lost_by_cpu"][str(cpu)] = s["lost_by_cpu"].get(str(cpu), 0) + n
            self._lose(cpu)
            return
        tl = parse_line(raw)
        if tl is None:
            s["unrecognised_lines"] += 1
            return
        self._event(tl)

    def _lose(self, cpu: int) -> None:
        """Events were lost on ``cpu``: an exit recorded there may have lost its entry."""
        for pid, op in list(self._open.items()):
            if op.line.cpu == cpu:
                self._close(op, None, "lost")
                del self._open[pid]

    def _event(self, tl: TraceLine) -> None:
        s = self.s
        if tl.event in ("tracing_mark_write", "print"):
            m = _PHASE.search(tl.body)
            if m:
                self.phase = m.group("phase")
                if self.phase not in s["phases"]:
                    s["phases"].append(self.phase)
            return
        fmt = self.formats.get(tl.event)
        if fmt is None:
            s["events_unknown"] += 1
            s["events_unknown_names"][tl.event] = s["events_unknown_names"].get(tl.event, 0) + 1
            return
        fields = fmt.printer.match(tl.body)
        if fields is None:
            s["events_unmatched_format"] += 1
            if len(s["unmatched_format_examples"]) < self.max_examples:
                s["unmatched_format_examples"].append(f"{tl.event}: {tl.body}")
            return
        s["events_parsed"] += 1
        s["events_by_name"][tl.event] = s["events_by_name"].get(tl.event, 0) + 1
        ts_ns, res = _ts_to_ns(tl.ts, self.ticks_per_second)
        if s["timestamp_resolution_ns"] is None or res < s["timestamp_resolution_ns"]:
            s["timestamp_resolution_ns"] = res
        if tl.event == "kvm_exit":
            prev = self._open.pop(tl.pid, None)
            if prev is not None:  # two exits without an entry between them: the entry was lost
                self._close(prev, None, "lost")
            self._open[tl.pid] = _Open(tl, ts_ns, fields, self.phase)
            if self.phase not in s["phases"]:
                s["phases"].append(self.phase)
        elif tl.event == "kvm_entry":
            op = self._open.pop(tl.pid, None)
            if op is None:
                s["entries_without_exit"] += 1
            else:
                self._close(op, ts_ns, "matched")
        elif tl.event in IO_EVENTS:
            op = self._open.get(tl.pid)
            if op is None:
                s["io_events_without_exit"] += 1
            elif op.io is None:
                op.io = (tl.event, fields)
            else:
                op.extra_io += 1
                s["extra_io_events"] += 1

    def _close(self, op: _Open, entry_ns: int | None, status: str) -> None:
        s = self.s
        f = op.fields
        reason = str(f.get("exit_reason:sym", f.get("exit_reason", "?")))
        kind, addr, source = classify_exit(reason, f.get("info1"), f.get("info2"), f.get("intr_info"),
                                           op.io, f.get("isa"))
        handling = math.nan
        if entry_ns is not None:
            d = entry_ns - op.ts_ns
            if d < 0:
                s["negative_handling"] += 1
            else:
                handling = float(d)
        rec = ExitRecord(pid=op.line.pid, cpu=op.line.cpu, vcpu=f.get("vcpu_id"), ts_ns=op.ts_ns,
                         guest_pc=int(f.get("guest_rip", 0)), reason=reason, exit_kind=kind,
                         port_or_address=None if addr is None else int(addr), handling_ns=handling,
                         phase=op.phase, status=status, source=source)
        self.records.append(rec)
        s["exits"] += 1
        s["exit_reasons"][reason] = s["exit_reasons"].get(reason, 0) + 1
        s["exits_by_kind"][kind] = s["exits_by_kind"].get(kind, 0) + 1
        s["kind_source"][source] = s["kind_source"].get(source, 0) + 1
        if status == "matched":
            s["exits_matched"] += 1
        else:
            s["unmatched_exits"] += 1
            s["unmatched_no_entry" if status == "no-entry" else "unmatched_lost"] += 1
            if len(s["unmatched_examples"]) < self.max_examples:
                s["unmatched_examples"].append({"pid": rec.pid, "cpu": rec.cpu, "ts": op.line.ts,
                                                "guest_pc": f"0x{rec.guest_pc:016x}", "reason": reason,
                                                "status": status})

    def finish(self) -> "KvmTraceParser":
        """The trace ended: exits still waiting for their entry are counted as unmatched."""
        for pid in sorted(self._open):
            self._close(self._open[pid], None, "no-entry")
        self._open.clear()
        return self

    # -- results -----------------------------------------------------------------------------
    def summary(self) -> dict:
        s = json.loads(json.dumps(self.s))  # a plain, JSON-serialisable copy
        s["handling_time_unknown"] = s["unmatched_exits"] + s["negative_handling"]
        # LOST markers, the header and the per-CPU overrun count can describe the same loss:
        # the largest of them is a lower bound on the events the trace is missing.
        s["events_lost_lower_bound"] = max(s["lost_events"], s["dropped_by_header"] or 0)
        return s

    def frame(self, workload: str, variant: str, symbols=None) -> pd.DataFrame:
        """The exits schema (accelerator 'kvm'): one row per (phase, pc, kind, port/address)."""
        rows: dict[tuple, dict] = {}
        for r in self.records:
            key = (r.phase, r.guest_pc, r.exit_kind, r.port_or_address)
            row = rows.get(key)
            if row is None:
                hit = symbols.lookup(r.guest_pc) if symbols is not None else None
                row = rows[key] = {
                    "accelerator": "kvm", "workload": workload, "variant": variant, "phase": r.phase,
                    "guest_pc": r.guest_pc, "function": hit[0] if hit else "",
                    "offset": hit[1] if hit else None, "caller": "", "exit_kind": r.exit_kind,
                    "port_or_address": r.port_or_address, "count": 0, "handling_ns": math.nan,
                }
            row["count"] += 1
            if not math.isnan(r.handling_ns):
                row["handling_ns"] = r.handling_ns if math.isnan(row["handling_ns"]) else row["handling_ns"] + r.handling_ns
        return exits_schema.frame(list(rows.values()))


def _read_lines(source) -> Iterable[str]:
    """A path (Path, or str without a newline), trace text (str with newlines), or lines."""
    if isinstance(source, os.PathLike) or (isinstance(source, str) and "\n" not in source):
        return Path(source).read_text(errors="replace").splitlines()
    if isinstance(source, str):
        return source.splitlines()
    return source


def parse_trace(source, formats, *, workload: str, variant: str, phase: str = "benchmark",
                symbols=None, ticks_per_second: float | None = None) -> tuple[pd.DataFrame, dict]:
    """Exits table and summary of one tracefs text trace.

    ``source``: path of a ``trace``/``trace_pipe`` capture, its text, or lines.
    ``formats``: :func:`load_formats` result, or anything it accepts.
    ``symbols``: a :class:`guestio.exits.symbols.SymbolTable` for function/offset (optional).
    """
    if not (isinstance(formats, Mapping) and all(isinstance(v, EventFormat) for v in formats.values())):
        formats = load_formats(formats)
    parser = KvmTraceParser(formats, phase=phase, ticks_per_second=ticks_per_second)
    parser.feed_lines(_read_lines(source)).finish()
    return parser.frame(workload, variant, symbols), parser.summary()


def read_cpu_stats(root: Path | str) -> dict[str, dict[str, float]]:
    """``per_cpu/cpu*/stats`` under ``root`` -> {'0': {'overrun': 0, 'dropped events': 0, ...}}."""
    out: dict[str, dict[str, float]] = {}
    for d in sorted(Path(root).glob("per_cpu/cpu*")):
        st = d / "stats"
        if not st.is_file():
            continue
        vals: dict[str, float] = {}
        for line in st.read_text().splitlines():
            k, sep, v = line.partition(":")
            if not sep:
                continue
            try:
                num = float(v.strip())
            except ValueError:
                continue
            key = k.strip()
            vals[key] = num if key.endswith(" ts") or not num.is_integer() else int(num)
        out[d.name[3:]] = vals
    return out


def parse_trace_dir(path: Path | str, *, workload: str, variant: str, phase: str = "benchmark",
                    symbols=None, ticks_per_second: float | None = None) -> tuple[pd.DataFrame, dict]:
    """A directory saved by :meth:`KvmTracer.save` (or a fixture laid out the same way):
    ``trace``, ``events/<system>/<event>/format``, optional ``per_cpu/cpu*/stats``."""
    path = Path(path)
    trace = path / "trace"
    if not trace.is_file():
        raise FileNotFoundError(f"{path}: no 'trace' file")
    df, summary = parse_trace(trace, load_formats(path), workload=workload, variant=variant, phase=phase,
                              symbols=symbols, ticks_per_second=ticks_per_second)
    stats = read_cpu_stats(path)
    if stats:
        summary["cpu_stats"] = stats
        summary["overrun"] = sum(int(v.get("overrun", 0)) for v in stats.values())
        summary["dropped_events_stats"] = sum(int(v.get("dropped events", 0)) for v in stats.values())
        summary["events_lost_lower_bound"] = max(summary["events_lost_lower_bound"], summary["overrun"],
                                                 summary["dropped_events_stats"])
    return df, summary


# =========================================================================================
# 3. Recorder (real KVM host; tested only against a fake tracefs)
# =========================================================================================

REQUIRED_EVENTS = ("kvm/kvm_exit", "kvm/kvm_entry")
DEFAULT_EVENTS = REQUIRED_EVENTS + ("kvm/kvm_pio", "kvm/kvm_mmio", "kvm/kvm_fast_mmio", "kvm/kvm_msr",
                                    "kvm/kvm_hypercall")
_VCPU_COMM = re.compile(r"^CPU \d+/KVM$")


class KvmTracer:
    """Record kvm exit events for one QEMU process through tracefs.

    Usage (root, on a KVM host)::

        tracer = KvmTracer(KvmTracer.vcpu_threads(qemu_pid), buffer_size_kb=KvmTracer.buffer_kb_for(...))
        tracer.setup(); tracer.start(); tracer.mark("benchmark")
        ...                       # the measured window
        tracer.stop(); tracer.save(outdir); tracer.teardown()

    ``root`` is the tracefs mount (a fake directory in tests).  With ``instance``
    the events go to ``instances/<instance>`` so that the global buffer is left
    alone.
    """

    def __init__(self, pids: Iterable[int] = (), *, root: Path | str | None = None,
                 instance: str | None = "guestio", buffer_size_kb: int | None = None,
                 clock: str | None = "mono", events: Sequence[str] = DEFAULT_EVENTS):
        self.pids = [int(p) for p in pids]
        self.root = Path(root) if root is not None else self.default_root()
        self.instance = instance
        self.buffer_size_kb = buffer_size_kb
        self.clock = clock
        self.events = list(events)
        self.enabled: list[str] = []
        self.skipped: list[str] = []
        self._created_instance = False
        self.clock_used: str | None = None

    @staticmethod
    def default_root() -> Path:
        for p in (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing")):
            if (p / "trace").exists():
                return p
        return Path("/sys/kernel/tracing")

    @property
    def base(self) -> Path:
        return self.root / "instances" / self.instance if self.instance else self.root

    @staticmethod
    def vcpu_threads(qemu_pid: int, proc: Path | str = "/proc") -> list[int]:
        """Thread ids of QEMU's vCPU threads (named 'CPU <n>/KVM')."""
        tids = []
        for t in sorted(Path(proc, str(qemu_pid), "task").iterdir(), key=lambda p: int(p.name)):
            try:
                comm = (t / "comm").read_text().strip()
            except OSError:
                continue
            if _VCPU_COMM.match(comm):
                tids.append(int(t.name))
        return tids

    @staticmethod
    def buffer_kb_for(exits_per_second: float, seconds: float, cpus: int,
                      bytes_per_exit: int = 200, headroom: float = 2.0) -> int:
        """Per-CPU ``buffer_size_kb`` to hold a window without overwriting.

        ~200 bytes per exit: kvm_exit (~80 B with its header), kvm_entry (~40 B)
        and one I/O event (~40 B), rounded up.  All vCPU threads may run on one
        CPU, so the whole window is sized per CPU: ``cpus`` only bounds memory.
        """
        total = exits_per_second * seconds * bytes_per_exit * headroom
        return max(1024, int(math.ceil(total / 1024)))

    # -- tracefs I/O -------------------------------------------------------------------------
    def _write(self, rel: str, text: str) -> None:
        p = self.base / rel
        with open(p, "w") as f:
            f.write(text)

    def _read(self, rel: str) -> str:
        return (self.base / rel).read_text()

    def setup(self) -> None:
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: tracefs is not mounted (mount -t tracefs nodev {self.root})")
        if self.instance and not self.base.exists():
            self.base.mkdir()  # on tracefs, mkdir creates a new trace instance
            self._created_instance = True
        self._write("tracing_on", "0")
        self._write("trace", "")  # opening 'trace' for writing with O_TRUNC clears the buffer
        if self.buffer_size_kb:
            self._write("buffer_size_kb", str(int(self.buffer_size_kb)))
        if self.clock:
            available = self._read("trace_clock").replace("[", " ").replace("]", " ").split()
            clock = self.clock if self.clock in available else ("global" if "global" in available else None)
            if clock:
                self._write("trace_clock", clock)
            self.clock_used = clock
        # Our own pid too: it raises no kvm events, and it keeps trace_marker phase lines
        # visible should a kernel filter them by pid as well.
        pids = self.pids + ([os.getpid()] if self.pids and os.getpid() not in self.pids else [])
        self._write("set_event_pid", " ".join(str(p) for p in pids))
        self.enabled, self.skipped = [], []
        for ev in self.events:
            enable = self.base / "events" / ev / "enable"
            if not enable.exists():
                if ev in REQUIRED_EVENTS:
                    raise FileNotFoundError(f"{enable}: tracepoint {ev} not found (is the kvm module loaded?)")
                self.skipped.append(ev)
                continue
            self._write(f"events/{ev}/enable", "1")
            self.enabled.append(ev)

    def start(self) -> None:
        self._write("tracing_on", "1")

    def mark(self, phase: str) -> None:
        """Start a named phase; the parser attributes later exits to it."""
        if not re.fullmatch(r"[\w.\-]+", phase):
            raise ValueError(f"phase name {phase!r}: use letters, digits, '_', '.', '-'")
        with open(self.base / "trace_marker", "w") as f:
            f.write(f"guestio phase={phase}\n")

    def stop(self) -> None:
        self._write("tracing_on", "0")

    def overruns(self) -> dict[str, dict[str, float]]:
        return read_cpu_stats(self.base)

    def save(self, outdir: Path | str) -> dict:
        """Write ``trace``, the event ``format`` files, per-CPU stats and meta.json to outdir."""
        out = Path(outdir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "trace").write_text(self._read("trace"))
        for ev in self.enabled:
            src = self.base / "events" / ev / "format"
            if src.is_file():
                dst = out / "events" / ev / "format"
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.write_text(src.read_text())
        stats = self.overruns()
        for cpu, _ in stats.items():
            dst = out / "per_cpu" / f"cpu{cpu}" / "stats"
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text((self.base / "per_cpu" / f"cpu{cpu}" / "stats").read_text())
        meta = {"pids": self.pids, "instance": self.instance, "buffer_size_kb": self.buffer_size_kb,
                "clock": self.clock_used, "events": self.enabled, "events_missing": self.skipped,
                "overrun": sum(int(v.get("overrun", 0)) for v in stats.values()),
                "kernel": os.uname().release}
        (out / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return meta

    def teardown(self) -> None:
        for ev in self.enabled:
            try:
                self._write(f"events/{ev}/enable", "0")
            except OSError:
                pass
        try:
            self._write("set_event_pid", "")
        except OSError:
            pass
        if self._created_instance:
            try:
                self.base.rmdir()
            except OSError:
                pass
            self._created_instance = False

    def __enter__(self) -> "KvmTracer":
        self.setup()
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        self.teardown()


class KvmExitTracer(Hooks):
    """Records KVM exits of one VM run for the measured window only (a VM lifecycle hook).

    After launch it finds QEMU's vCPU threads and sets up a tracefs instance
    filtered to them; tracing runs from the guest's "job started" to its "job
    finished" (each "GUESTIO: phase NAME" becomes a trace_marker phase), and the
    window is saved to OUTDIR/kvm-trace (:func:`parse_trace_dir` reads it).
    After shutdown the instance is torn down, whatever happened.  Boundaries come
    from the serial log, so they are exact to within the lifecycle's poll period.
    """

    def __init__(self, *, root: Path | str | None = None, buffer_size_kb: int | None = 65536,
                 instance: str | None = None):
        self.root, self.buffer_size_kb = root, buffer_size_kb
        self.instance = instance
        self.tracer: KvmTracer | None = None
        self.saved: dict | None = None
        self.outdir: Path | None = None

    def after_launch(self, machine) -> None:
        if machine.spec.accel != "kvm":
            raise ValueError(f"KVM exit tracing needs accel kvm, not {machine.spec.accel!r}")
        self.outdir = machine.outdir / "kvm-trace"
        pids = KvmTracer.vcpu_threads(machine.pid) or [machine.pid]
        self.tracer = KvmTracer(pids, root=self.root, buffer_size_kb=self.buffer_size_kb,
                                instance=self.instance or f"guestio-{machine.pid}")
        self.tracer.setup()
        machine.say(f"KVM exits: tracing vCPU threads {pids} in {self.tracer.base}")

    def job_started(self, machine) -> None:
        self.tracer.start()
        self.tracer.mark("benchmark")

    def phase(self, machine, name: str) -> None:
        self.tracer.mark(name)

    def job_finished(self, machine, status: int) -> None:
        self.tracer.stop()
        self.saved = self.tracer.save(self.outdir)
        machine.say(f"KVM exits: window saved to {self.outdir} (overrun {self.saved['overrun']})")

    def after_shutdown(self, machine, result) -> None:
        if self.tracer is not None:
            try:
                self.tracer.stop()
            finally:
                self.tracer.teardown()
