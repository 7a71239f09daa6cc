"""Guest pc -> function: System.map lookup, checked against nm and addr2line on the real vmlinux.

The built guest kernels (<results>/kernels/<variant>/, here the tests' build/test-results) have no DWARF debug
information, so ``addr2line -f`` names a function from the ELF symbol table
(and its sizes) and answers ``??`` in alignment padding after a function,
where System.map (no sizes) still attributes the byte to that function.  The
comparison with addr2line is therefore made only where it gives a name; the
comparison with ``nm -n`` is made for every sampled address.
"""

from __future__ import annotations

import bisect
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, TEST_RESULTS, snakemake

from guestio.exits.symbols import SymbolTable, is_section_marker

DATA = Path(__file__).parent / "data" / "kvmtrace"
KERNELS = TEST_RESULTS / "kernels"
TEXT = set("tTwW")


# ---- a small System.map excerpt (always available) ---------------------------------------------

@pytest.fixture(scope="module")
def excerpt() -> SymbolTable:
    return SymbolTable.from_system_map(DATA / "System.map")


def test_lookup_inside_at_start_and_last_byte(excerpt):
    assert excerpt.lookup(0xffffffff81252769) == ("acpi_pm_read", 0)
    assert excerpt.lookup(0xffffffff8125276f) == ("acpi_pm_read", 6)
    assert excerpt.lookup(0xffffffff81252775) == ("acpi_pm_read", 0xc)    # last byte
    assert excerpt.lookup(0xffffffff81252776) == ("acpi_pm_check_blacklist", 0)
    assert excerpt.format(0xffffffff81177d0e) == "iowrite8+0x1c"


def test_aliases_and_markers(excerpt):
    assert excerpt.lookup(0xffffffff81000000) == ("startup_64", 0)       # not _stext/_text
    assert [s.name for s in excerpt.symbols_at(0xffffffff81000000)] == ["_stext", "_text", "startup_64"]
    assert excerpt.lookup(0xffffffff81600110) is None                     # _etext itself
    assert excerpt.lookup(0xffffffff81600200) is None                     # after _etext, before rodata
    assert excerpt.lookup(0xffffffff80ffffff) is None                     # before _text
    assert excerpt.lookup(0xffffffff81800000) is None                     # a data symbol
    assert excerpt.lookup(0xffffffffffffffff) is None                     # beyond the last symbol
    assert excerpt.format(0xffffffff80ffffff) == "0xffffffff80ffffff"
    assert len(excerpt.addresses_of("native_safe_halt")) == 2             # a local name defined twice
    assert "iowrite8" in excerpt and "verify_pmtmr_rate" not in excerpt


def test_data_symbol_bounds_the_last_function(tmp_path):
    m = tmp_path / "System.map"
    m.write_text("0000000000000000 A fixed_percpu_data\n"
                 "ffffffff81000000 T _text\nffffffff81000000 T startup_64\nffffffff81000100 t tail_fn\n"
                 "ffffffff81000180 d some_init_data\nffffffff81000200 t after_data\n")
    st = SymbolTable.from_system_map(m)
    assert st.lookup(0) is None                                            # absolute symbols are ignored
    assert st.lookup(0xffffffff8100017f) == ("tail_fn", 0x7f)
    assert st.lookup(0xffffffff81000180) is None
    assert st.lookup(0xffffffff81000200) == ("after_data", 0)
    assert st.lookup(0xffffffff81000201) is None                           # last symbol: size unknown
    assert st.span("tail_fn") == (0xffffffff81000100, 0xffffffff81000180)
    m.write_text("not a map\n")
    with pytest.raises(ValueError, match="System.map"):
        SymbolTable.from_system_map(m)


# ---- the real guest kernels -------------------------------------------------------------------

def _kernel(variant: str) -> Path:
    """The pipeline's own build of the variant (built here if it is not yet)."""
    d = KERNELS / variant
    snakemake(str((d / "build.json").relative_to(REPO)))
    return d


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} (binutils, envs/debian-packages.txt) is not installed"
    return path


def _nm(vmlinux: Path) -> list[tuple[int, str, str]]:
    out = subprocess.run([_tool("nm"), "-n", str(vmlinux)], capture_output=True, text=True, check=True).stdout
    syms = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] not in "AaUvw":
            syms.append((int(parts[0], 16), parts[1], parts[2]))
    return syms


def _samples(syms: list[tuple[int, str, str]], seed: int = 20100512) -> tuple[list[int], dict]:
    """~200 addresses: symbol starts, last bytes and random interior bytes of text symbols.

    A symbol's extent (as nm -n sees it) runs to the next address that carries any symbol.
    """
    addrs = sorted({a for a, _, _ in syms})
    names: dict[int, list[str]] = {}
    for a, t, n in syms:
        if t in TEXT:
            names.setdefault(a, []).append(n)
    ranges = []
    for a, ns in names.items():
        if all(is_section_marker(n) for n in ns):
            continue
        k = bisect.bisect_right(addrs, a)
        if k < len(addrs):
            ranges.append((a, addrs[k]))
    rng = random.Random(seed)
    picked = rng.sample(ranges, 200)
    pcs = [a for a, _ in picked[:65]] + [e - 1 for _, e in picked[65:130]]
    for a, e in picked[130:]:
        pcs.append(rng.randrange(a, e))
    return pcs, names


@pytest.mark.boot  # builds the kernel if it is not built yet
def test_matches_nm_on_real_vmlinux():
    d = _kernel("baseline")
    syms = _nm(d / "vmlinux")
    table = SymbolTable.from_system_map(d / "System.map")
    pcs, names = _samples(syms)
    starts = sorted(names)
    assert len(pcs) == 200
    for pc in pcs:
        start = starts[bisect.bisect_right(starts, pc) - 1]
        got = table.lookup(pc)
        assert got is not None, f"{pc:#x}: expected one of {names[start]} (nm -n)"
        assert got[0] in names[start] and got[1] == pc - start, f"{pc:#x}: {got} vs nm {names[start]}+{pc - start:#x}"


@pytest.mark.boot  # builds the kernel if it is not built yet
def test_matches_addr2line_where_it_names_a_function():
    d = _kernel("baseline")
    syms = _nm(d / "vmlinux")
    table = SymbolTable.from_system_map(d / "System.map")
    pcs, names = _samples(syms, seed=7)
    out = subprocess.run([_tool("addr2line"), "-f", "-e", str(d / "vmlinux")] + [f"{pc:#x}" for pc in pcs],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(out) == 2 * len(pcs)
    named = unnamed = 0
    for pc, fn in zip(pcs, out[0::2]):
        if fn == "??":
            unnamed += 1      # padding after a function (ELF size ends earlier): compared with nm only
            continue
        named += 1
        got = table.lookup(pc)
        assert got is not None, f"{pc:#x}: addr2line says {fn}, System.map lookup says nothing"
        aliases = {s.name for s in table.symbols_at(pc - got[1])}
        assert fn == got[0] or fn in aliases, f"{pc:#x}: addr2line {fn}, System.map {got} (aliases {aliases})"
    assert named >= 150, f"addr2line named only {named} of {len(pcs)} addresses ({unnamed} '??')"


@pytest.mark.boot  # builds the kernel if it is not built yet
def test_known_functions_in_baseline():
    table = SymbolTable.from_system_map(_kernel("baseline") / "System.map")
    for name in ("acpi_pm_read", "ata_sff_dev_select", "ata_bmdma_status", "ata_bmdma_setup", "ata_sff_tf_load",
                 "init_acpi_pm_clocksource", "ioread8", "iowrite8", "iowrite32"):
        assert name in table, name
        start = table.addresses_of(name)[0]
        assert table.lookup(start) == (name, 0)
    # verify_pmtmr_rate() is compiled only on 32-bit x86 (as in 2.6.27); the x86_64 guest never has it.
    assert "verify_pmtmr_rate" not in table


def _disassemble(vmlinux: Path, span: tuple[int, int]) -> str:
    return subprocess.run([_tool("objdump"), "-d", f"--start-address={span[0]:#x}", f"--stop-address={span[1]:#x}",
                           str(vmlinux)], capture_output=True, text=True, check=True).stdout


@pytest.mark.boot  # builds the kernels if they are not built yet
def test_pmtmr_variant_drops_only_verify_pmtmr_rate():
    """On the 32-bit kernels (the only ones with verify_pmtmr_rate in 6.1), the pmtmr layer removes the
    rate check (inlined in init_acpi_pm_clocksource with mach_countup's polling of port 0x61) and keeps
    the monotonicity checks (reads and udelays): the paper's one change."""
    base, pm = _kernel("baseline-i386"), _kernel("pmtmr-i386")
    tb, tp = SymbolTable.from_system_map(base / "System.map"), SymbolTable.from_system_map(pm / "System.map")
    sb, sp = tb.span("init_acpi_pm_clocksource"), tp.span("init_acpi_pm_clocksource")
    assert sb and sp and (sp[1] - sp[0]) < (sb[1] - sb[0])
    assert sb[0] >= 0xc0000000  # a 32-bit kernel's addresses, as the paper's
    asm_b, asm_p = _disassemble(base / "vmlinux", sb), _disassemble(pm / "vmlinux", sp)
    pit_polls = lambda asm: sum(1 for l in asm.splitlines() if "\tin " in l and "$0x61" in l)
    delays = lambda asm: sum(1 for l in asm.splitlines() if "call" in l and "<__udelay>" in l)
    assert pit_polls(asm_b) >= 1 and pit_polls(asm_p) == 0
    assert delays(asm_b) >= 1 and delays(asm_p) == delays(asm_b)
    # on x86_64 the function does not exist: the layer would change nothing there
    assert "verify_pmtmr_rate" not in SymbolTable.from_system_map(_kernel("baseline") / "System.map")