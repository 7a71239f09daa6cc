"""The small part of C that tracepoint ``print fmt`` arguments are written in.

String literals, balanced brackets, top-level commas and ternaries, calls such
as ``__print_symbolic(...)``, ``REC->field`` references with casts and masks,
and integer constant expressions ('0x040 + 13', '1UL << 3').  Nothing here
knows about printf conversions: :mod:`guestio.exits.kvm.printfmt` does.
"""

from __future__ import annotations

import ast
import re
from typing import Iterator

from guestio.exits.kvm import FormatError

C_STRING = r'"(?:[^"\\]|\\.)*"'


def c_string(lit: str) -> str:
    """Value of one or more adjacent C string literals ('"a" "b"')."""
    parts = re.findall(C_STRING, lit)
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


def split_top(s: str, sep: str = ",") -> list[str]:
    parts, start = [], 0
    for i, c, d in _scan(s):
        if c == sep and d == 0:
            parts.append(s[start:i].strip())
            start = i + 1
    tail = s[start:].strip()
    if tail or parts:
        parts.append(tail)
    return parts


def strip_parens(s: str) -> str:
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


def ternary(s: str) -> tuple[str, str, str] | None:
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


def call_parts(s: str) -> tuple[str, list[str]] | None:
    m = re.match(r"^(\w+)\s*\(", s)
    if not m or not s.endswith(")"):
        return None
    for i, c, d in _scan(s):
        if c == ")" and d == 0:
            if i != len(s) - 1:
                return None  # e.g. 'f(a) + g(b)': not one call
            break
    return m.group(1), split_top(s[m.end():-1])


def int_expr(s: str) -> int:
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


def rec_field(expr: str) -> str | None:
    """'REC->x', '(u8)REC->x', '(REC->x)' -> 'x'."""
    m = _REC_FIELD.match(strip_parens(expr))
    return m.group(1) if m else None


def value_expr(expr: str) -> tuple[str | None, int | None]:
    """'REC->exit_reason & 0xffff' -> ('exit_reason', 0xffff)."""
    e = strip_parens(expr)
    f = rec_field(e)
    if f:
        return f, None
    m = re.match(r"^(.*?)&(.*)$", e)
    if m:
        f = rec_field(m.group(1))
        if f:
            try:
                return f, int_expr(m.group(2))
            except FormatError:
                return f, None
    refs = re.findall(r"REC->(\w+)", e)
    return (refs[0] if refs else None), None


def symbol_table(items: list[str]) -> list[tuple[int, str]]:
    table = []
    for it in items:
        m = re.fullmatch(r"\{\s*(.+?)\s*,\s*(" + C_STRING + r")\s*\}", it.strip(), re.S)
        if not m:
            raise FormatError(f"cannot read symbol table entry {it!r}")
        table.append((int_expr(m.group(1)), c_string(m.group(2))))
    return table
