"""The exit-site schema: validation, shares, ranking, paper-style tables, CSV."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from guestio.exits import exit_tables
from guestio.exits import schema as exits
from guestio.exits.kvm.trace_reader import parse_trace_dir
from guestio.exits.symbols import SymbolTable

DATA = Path(__file__).parent / "data" / "kvmtrace"


def _row(**kw):
    base = {"accelerator": "tcg-modelled", "workload": "bonnie", "variant": "baseline", "phase": "benchmark",
            "guest_pc": 0xffffffff81177d0e, "function": "iowrite8", "offset": 0x1c, "caller": "ata_sff_dev_select",
            "exit_kind": "pio_out", "port_or_address": 0x1f6, "count": 100}
    base.update(kw)
    return base


@pytest.fixture
def tcg() -> pd.DataFrame:
    """A modelled (TCG) table in the shape of the paper's Table 3."""
    return exits.frame([
        _row(count=111050, caller="ata_sff_tf_load", port_or_address=0x1f2),
        _row(count=15864, caller="ata_sff_dev_select", port_or_address=0x1f6),
        _row(guest_pc=0xffffffff8125276f, function="acpi_pm_read", offset=6, caller="init_acpi_pm_clocksource",
             exit_kind="pio_in", port_or_address=0x608, count=5000),
        _row(guest_pc=0xffffffff81177b2b, function="ioread8", offset=0x18, caller="ata_bmdma_status",
             exit_kind="pio_in", port_or_address=0xc002, count=3000),
        _row(guest_pc=0xffffffff81177d94, function="iowrite32", offset=0x1c, caller="ata_bmdma_setup",
             port_or_address=0xc004, count=2000),
        _row(guest_pc=0xffffffff8131beea, function="native_safe_halt", offset=0x12, caller="default_idle",
             exit_kind="hlt", port_or_address=None, count=86),
        _row(phase="boot", count=7),
    ])


@pytest.fixture(scope="module")
def kvm() -> pd.DataFrame:
    df, _ = parse_trace_dir(DATA / "linux-6.1", workload="bonnie", variant="baseline", phase="boot",
                            symbols=SymbolTable.from_system_map(DATA / "System.map"))
    return df


def test_empty_frame_is_valid():
    df = exits.empty_frame()
    assert list(df.columns) == exits.COLUMNS and df.empty
    exits.validate(df)
    assert str(df["guest_pc"].dtype) == "uint64" and str(df["port_or_address"].dtype) == "Int64"


def test_frame_types_and_shares(tcg):
    assert str(tcg["guest_pc"].dtype) == "uint64" and str(tcg["count"].dtype) == "int64"
    assert tcg["handling_ns"].isna().all() and tcg["time_share"].isna().all()
    bench = tcg[tcg["phase"] == "benchmark"]
    assert bench["count_share"].sum() == pytest.approx(1.0)
    assert bench["count_share"].iloc[0] == pytest.approx(111050 / 137000)
    assert tcg[tcg["phase"] == "boot"]["count_share"].tolist() == [1.0]


def test_kvm_shares_use_known_handling_times(kvm):
    bench = kvm[kvm["phase"] == "benchmark"]
    assert bench["time_share"].sum() == pytest.approx(1.0)
    row = bench[(bench["function"] == "ioread8")].iloc[0]
    assert row["count"] == 3 and row["handling_ns"] == 12_000
    assert row["time_share"] == pytest.approx(12_000 / 1_288_000)


@pytest.mark.parametrize("change,column", [
    ({"accelerator": "xen"}, "accelerator"),
    ({"exit_kind": "pio"}, "exit_kind"),
    ({"count": -1}, "count"),
    ({"phase": ""}, "phase"),
    ({"offset": -4}, "offset"),
    ({"handling_ns": 10.0}, "handling_ns"),                    # TCG rows have no handling time
    ({"accelerator": "kvm", "handling_ns": -5.0}, "handling_ns"),
    ({"guest_pc": 1 << 64}, "guest_pc"),
])
def test_validate_names_bad_column(change, column):
    with pytest.raises(ValueError, match=f"column '{column}'"):
        exits.frame([_row(**change)])


def test_validate_structure(tcg):
    with pytest.raises(ValueError, match="missing column"):
        exits.validate(tcg.drop(columns=["caller"]))
    with pytest.raises(ValueError, match="unknown column"):
        exits.validate(tcg.assign(extra=1))
    bad = tcg.copy()
    bad["count_share"] = 0.9
    with pytest.raises(ValueError, match="count_share"):
        exits.validate(bad)
    bad = tcg.copy()
    bad.loc[0, "time_share"] = 0.5
    with pytest.raises(ValueError, match="time_share"):
        exits.validate(bad)


def test_rank_by_count_merges_ports_and_callers(tcg):
    r = exits.rank(tcg, by="count", n=3)
    bench = r[r["phase"] == "benchmark"]
    assert bench["rank"].tolist() == [1, 2, 3]
    top = bench.iloc[0]
    assert top["function"] == "iowrite8" and top["count"] == 111050 + 15864  # iowrite32 is another pc
    assert top["ports"] == "0x1f2,0x1f6" and pd.isna(top["port_or_address"])
    assert top["count_share"] == pytest.approx((111050 + 15864) / 137000)
    assert r[r["phase"] == "boot"]["rank"].tolist() == [1]
    with_caller = exits.rank(tcg, by="count", n=2, site=exits.SITE_WITH_CALLER)
    b = with_caller[with_caller["phase"] == "benchmark"]
    assert b["caller"].tolist() == ["ata_sff_tf_load", "ata_sff_dev_select"]
    assert b["port_or_address"].tolist() == [0x1f2, 0x1f6]


def test_rank_functions_is_the_papers_table3_ranking(tcg):
    """Functions by their exits summed over sites and callers, each with its most frequent caller."""
    extra = exits.frame([_row(guest_pc=0xffffffff81177b2b, function="ioread8", offset=0x18, caller="ata_sff_altstatus",
                              exit_kind="pio_in", port_or_address=0x3f6, count=4000)])
    r = exits.rank_functions(pd.concat([tcg, extra], ignore_index=True), n=3)
    bench = r[r["phase"] == "benchmark"]
    assert bench["function"].tolist() == ["iowrite8", "ioread8", "acpi_pm_read"]
    assert bench["count"].tolist() == [111050 + 15864, 7000, 5000]
    # iowrite8's most frequent caller is tf_load; ioread8's the altstatus read, not bmdma_status
    assert bench["caller"].tolist() == ["ata_sff_tf_load", "ata_sff_altstatus", "init_acpi_pm_clocksource"]
    assert bench["caller_count"].tolist() == [111050, 4000, 5000]
    assert bench["rank"].tolist() == [1, 2, 3]
    assert r[r["phase"] == "boot"]["function"].tolist() == ["iowrite8"]
    assert exits.rank_functions(tcg.iloc[0:0]).empty


def test_rank_by_handling_time(kvm):
    r = exits.rank(kvm[kvm["phase"] == "benchmark"], by="handling_ns", n=5)
    assert r["function"].tolist() == ["native_safe_halt", "iowrite8", "ioread16_rep", "ioread32", "ioread8"]
    assert r["handling_ns"].tolist() == [1_150_000, 45_000, 40_000, 20_000, 12_000]
    by_count = exits.rank(kvm[kvm["phase"] == "benchmark"], by="count", n=3)
    # iowrite8: 4 exits on 3 ports; ioread8 and native_apic_mem_write tie at 3: more handling time first
    assert by_count["function"].tolist() == ["iowrite8", "ioread8", "native_apic_mem_write"]


def test_rank_errors(tcg):
    with pytest.raises(ValueError, match="no handling time"):
        exits.rank(tcg, by="handling_ns")
    with pytest.raises(ValueError, match="by must be"):
        exits.rank(tcg, by="time")


def test_markdown_tcg_is_labelled_modelled_without_handling(tcg):
    md = exit_tables.render_markdown(tcg[tcg["phase"] == "benchmark"], "Table 3: hot exit sites (bonnie++)",
                                     modelled=True, caller=True)
    header = md.splitlines()[2]
    assert "modelled exits (TCG)" in md.splitlines()[0]
    assert "Handling" not in md and "% of time" not in md
    assert header.startswith("| # | Address | Exit | Modelled exits | % of exits | Guest function | Calling function")
    first = md.splitlines()[4]
    assert "0xffffffff81177d0e" in first and "ata_sff_tf_load" in first and "iowrite8+0x1c" in first
    assert "| 111050 | 81.1 |" in first


def test_markdown_kvm_has_handling_time(kvm):
    md = exit_tables.render_markdown(kvm[kvm["phase"] == "benchmark"], "Table 1", modelled=False,
                                     by="handling_ns")
    assert "modelled" not in md and "TCG" not in md
    assert "| Handling time (us) | % of time |" in md and "Calling function" not in md
    rows = [l for l in md.splitlines() if l.startswith("| ") and "0x" in l]
    assert len(rows) == 5
    assert rows[0].split(" | ")[2:] == ["hlt", "2", "11.8", "1150.0", "89.3", "native_safe_halt+0x12 |"]


def test_render_refuses_mixed_or_mislabelled(tcg, kvm):
    with pytest.raises(ValueError, match="modelled=False"):
        exit_tables.render_markdown(tcg[tcg["phase"] == "boot"], "t", modelled=False)
    with pytest.raises(ValueError, match="modelled=True"):
        exit_tables.render_latex(kvm[kvm["phase"] == "boot"], "t", modelled=True)
    with pytest.raises(ValueError, match="one table"):
        exit_tables.render_markdown(tcg, "t", modelled=True)


def test_latex(tcg, kvm):
    tex = exit_tables.render_latex(tcg[tcg["phase"] == "benchmark"], "Table 3", modelled=True, caller=True,
                                   label="tab:exits-tcg")
    assert "modelled exits (TCG)" in tex and "Handling" not in tex and r"\label{tab:exits-tcg}" in tex
    assert r"\texttt{ata\_sff\_tf\_load}" in tex and r"\begin{tabular}{rllrrll}" in tex
    tex = exit_tables.render_latex(kvm[kvm["phase"] == "benchmark"], "Table 2", modelled=False)
    assert r"Handling time ($\mu$s)" in tex and "modelled" not in tex and r"\% of time" in tex


def test_csv_roundtrip(tmp_path, kvm, tcg):
    both = pd.concat([kvm, tcg], ignore_index=True)
    path = tmp_path / "out" / "exits.csv"
    exits.write_csv(both, path)
    assert [p.name for p in path.parent.iterdir()] == ["exits.csv"]   # no temporary file left
    text = path.read_text()
    assert "0xffffffff8125276f" in text and ",0xfee000b0," in text
    back = exits.read_csv(path)
    pd.testing.assert_frame_equal(back, both)
    bad = both.copy()
    bad.loc[0, "exit_kind"] = "io"
    with pytest.raises(ValueError, match="exit_kind"):
        exits.write_csv(bad, tmp_path / "bad.csv")
    assert not (tmp_path / "bad.csv").exists()
