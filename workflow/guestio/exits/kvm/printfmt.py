"""A tracepoint's ``print fmt`` compiled into a regular expression that decodes its fields.

Printf conversions, ``__print_symbolic``, ``__print_flags``, ``cond ? "a" : "b"``
and ``__get_str`` each become one group; :class:`PrintFmt` matches a printed
event body and gives its field values by name, so that events which gained
fields between kernel versions are read by the same code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

from guestio.exits.kvm import FormatError
from guestio.exits.kvm.c_expr import (C_STRING, c_string, call_parts, int_expr, rec_field, split_top,
                                      strip_parens, symbol_table, ternary, value_expr)

if TYPE_CHECKING:
    from guestio.exits.kvm.formats import Field

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
        c = strip_parens(cond)
        self.neg = c.startswith("!")
        self.cond_field = rec_field(c.lstrip("!").strip())  # only a bare 'REC->f' / '!REC->f'

        m = re.fullmatch(r"REC->(\w+)\s*==\s*(.+)", c)
        self.eq_field, self.eq_value = None, None
        if m:
            try:
                self.eq_field, self.eq_value = m.group(1), int_expr(m.group(2))
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
    e = strip_parens(expr)
    if re.fullmatch(rf"\s*(?:{C_STRING}\s*)+", e, re.S):
        return _Lit(c_string(e))
    t = ternary(e)
    if t:
        cond, a, b = t
        return _Cond(cond, _compile_str_arg(a, index), _compile_str_arg(b, index))
    call = call_parts(e)
    if call:
        fn, cargs = call
        if fn == "__print_symbolic" and cargs:
            f, mask = value_expr(cargs[0])
            return _Symbolic(f, mask, symbol_table(cargs[1:]))
        if fn == "__print_flags" and len(cargs) >= 2:
            f, _ = value_expr(cargs[0])
            return _Flags(f, c_string(cargs[1]), symbol_table(cargs[2:]))
        if fn in ("__get_str", "__get_rel_str") and cargs:
            return _Any(cargs[0].strip())
    f = rec_field(e)
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
        spec.key = rec_field(spec.arg or "") or f"arg{spec.index}"

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


def split_print_fmt(text: str, event: str) -> tuple[str, list[str]]:
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
    fmt = c_string(text[:i + 1])
    rest = text[i + 1:].strip()
    if rest and not rest.startswith(","):
        raise FormatError(f"{event}: unexpected text after the print fmt string: {rest[:60]!r}")
    args = split_top(rest[1:]) if rest else []
    return fmt, [a for a in args if a != ""]
