"""Guest program counter -> (function, offset), from the guest kernel's System.map.

The guest kernels are built without DWARF debug information and booted with
``nokaslr``, so a guest-virtual text address is a link-time address and the
System.map written by the kernel build (``nm -n vmlinux`` filtered by
scripts/mksysmap) is all that is needed.

Rules
-----
* Only text symbols (types ``t``, ``T``, ``w``, ``W``) name functions.  Absolute
  symbols (``A``, e.g. per-CPU offsets) are ignored entirely; data symbols
  (``d``, ``D``, ``b``, ``B``, ``r``, ``R``, ``V``, ``?`` ...) are never returned for a
  pc, but they *bound* the last function of a text region: .init.text is
  followed by init data in the same map, and a pc past the last function of a
  region belongs to no function.
* A pc resolves to the greatest text symbol at or below it, provided no
  non-text symbol lies between that symbol and the pc.  A pc below the first
  text symbol (``_text``), above the last symbol of the map, or in the gap after
  a region ends (after ``_etext``, ``_einittext``) resolves to ``None``.
* Several symbols can share an address (``_stext``/``_text``/``startup_64``,
  ``__do_sys_getpid``/``__x64_sys_getpid``).  Linker section markers
  (``_stext``, ``_text``, ``_etext``, ``_sinittext``, ``_einittext``,
  ``__*_text_start``/``__*_text_end``) are used only when nothing else is there;
  otherwise the first other name in System.map order (``nm -n`` sorts equal
  addresses by name) is returned.  A pc whose nearest label is an *end* marker
  alone (``_etext+0x10``) is in padding after a region and resolves to ``None``.
* Without symbol sizes (System.map has none) alignment padding after a function
  is attributed to that function, as ``nm -n`` would; ``addr2line`` uses ELF
  symbol sizes and answers ``??`` there.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

__all__ = ["Symbol", "SymbolTable", "TEXT_TYPES", "is_section_marker", "is_end_marker"]

TEXT_TYPES = frozenset("tTwW")

_START_MARKER = re.compile(r"^(?:_stext|_text|_sinittext|__\w+_text_start)$")
_END_MARKER = re.compile(r"^(?:_etext|_einittext|__\w+_text_end)$")


def is_end_marker(name: str) -> bool:
    return bool(_END_MARKER.match(name))


def is_section_marker(name: str) -> bool:
    """A linker label bounding a text section rather than naming a function."""
    return bool(_START_MARKER.match(name) or _END_MARKER.match(name))


@dataclass(frozen=True)
class Symbol:
    address: int
    type: str
    name: str


class SymbolTable:
    """Sorted text symbols with binary-search lookup (see the module docstring)."""

    def __init__(self, symbols: Iterable[tuple[int, str, str]], source: str | None = None):
        self.source = source
        everything = sorted(((int(a), t, n) for a, t, n in symbols if t not in ("A", "a")),
                            key=lambda s: s[0])  # stable: keeps System.map order for equal addresses
        # Group by address; remember whether each address carries text and what bounds it.
        self._addresses: list[int] = []      # distinct addresses that carry a text symbol, sorted
        self._names: list[str | None] = []   # chosen name per address (None: only an end marker)
        self._ends: list[int | None] = []    # first address above with any (non-absolute) symbol
        self._by_name: dict[str, list[int]] = {}
        all_addresses = sorted({a for a, _, _ in everything})
        i = 0
        while i < len(everything):
            addr = everything[i][0]
            j = i
            while j < len(everything) and everything[j][0] == addr:
                j += 1
            group = everything[i:j]
            text = [(t, n) for _, t, n in group if t in TEXT_TYPES]
            if text:
                for _, n in text:
                    self._by_name.setdefault(n, []).append(addr)
                self._addresses.append(addr)
                self._names.append(self._choose(text))
                k = bisect.bisect_right(all_addresses, addr)
                self._ends.append(all_addresses[k] if k < len(all_addresses) else None)
            i = j
        self._symbols_at: dict[int, list[Symbol]] = {}
        for a, t, n in everything:
            if t in TEXT_TYPES:
                self._symbols_at.setdefault(a, []).append(Symbol(a, t, n))

    @staticmethod
    def _choose(text: list[tuple[str, str]]) -> str | None:
        for _, name in text:
            if not is_section_marker(name):
                return name
        starts = [n for _, n in text if not is_end_marker(n)]
        return starts[0] if starts else None

    @classmethod
    def from_system_map(cls, path: Path | str) -> "SymbolTable":
        path = Path(path)
        symbols = []
        with open(path) as f:
            for lineno, line in enumerate(f, 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) < 3:
                    raise ValueError(f"{path}:{lineno}: not a System.map line: {line.rstrip()!r}")
                try:
                    addr = int(parts[0], 16)
                except ValueError:
                    raise ValueError(f"{path}:{lineno}: bad address {parts[0]!r}") from None
                symbols.append((addr, parts[1], parts[2]))
        if not symbols:
            raise ValueError(f"{path}: no symbols")
        return cls(symbols, source=str(path))

    # -- queries -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._addresses)

    @property
    def text_start(self) -> int | None:
        return self._addresses[0] if self._addresses else None

    def lookup(self, pc: int) -> tuple[str, int] | None:
        """(function, offset of pc in it), or None where the pc is in no function."""
        pc = int(pc)
        k = bisect.bisect_right(self._addresses, pc) - 1
        if k < 0:
            return None
        addr, name, end = self._addresses[k], self._names[k], self._ends[k]
        if name is None:
            return None
        if end is None:
            # The last symbol of the whole map: its size is unknown, only its first byte is sure.
            return (name, 0) if pc == addr else None
        if pc >= end:
            return None  # past the region's end: the next symbol above is data
        return name, pc - addr

    def format(self, pc: int) -> str:
        """'name+0xoff' (as the kernel prints %pS), or the bare address when unknown."""
        hit = self.lookup(pc)
        if hit is None:
            return f"0x{int(pc):016x}"
        name, off = hit
        return f"{name}+0x{off:x}"

    def symbols_at(self, address: int) -> list[Symbol]:
        """Every text symbol at exactly this address (aliases), System.map order."""
        return list(self._symbols_at.get(int(address), []))

    def addresses_of(self, name: str) -> list[int]:
        """Addresses of the text symbols with this name (local names can repeat)."""
        return list(self._by_name.get(name, []))

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def span(self, name: str) -> tuple[int, int] | None:
        """[start, end) of the first text symbol with this name, end = next symbol's address."""
        addrs = self._by_name.get(name)
        if not addrs:
            return None
        k = bisect.bisect_left(self._addresses, addrs[0])
        end = self._ends[k]
        return (addrs[0], end) if end is not None else None
