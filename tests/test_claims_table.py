"""The claims table (guestio.report.claims_table): verdict rules applied as verdicts.yaml says, on
recorded runs (tests/data/report/results: real native and TCG runs of the test suite), with
"not measured here" for every artifact nothing here builds."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from guestio.analysis.claim_model import Site, VerdictRule
from guestio.analysis.claims import load_claims
from guestio.analysis import figures, measurements
from guestio.report import claims_table as ct
from guestio.report.evidence import Evidence
from guestio.report.verdicts import claim_verdict, judge_sites, verdict_rules

DATA = Path(__file__).parent / "data" / "report" / "results"
REPO = Path(__file__).resolve().parents[1]


def rule(kind, **params):
    return VerdictRule(kind, tuple(params.items()))


# --- the rule, stated once (each rule's outcomes: tests/test_verdicts.py) --------------------------

def test_verdict_file_states_the_six_verdicts_and_their_precedence():
    rules = verdict_rules()
    assert rules["verdicts"] == ["reproduced", "inconclusive", "not reproduced", "contradicted",
                                 "not testable here", "not measured here"]
    assert rules["precedence"][0] == "contradicted" and rules["precedence"][-1] == "reproduced"
    assert rules["min_runs"] == 3


def test_sites_include_matches_function_and_caller():
    r = rule("sites_include", sites=(Site("iowrite8", "ata_sff_dev_select"), Site("ioread8", None)), at_least=2)
    assert judge_sites(r, [("iowrite8", "ata_sff_dev_select"), ("ioread8", "x")])[0].verdict == "reproduced"
    assert judge_sites(r, [("iowrite8", "ata_sff_tf_load"), ("ioread8", "x")])[0].verdict == "not reproduced"


@pytest.mark.parametrize("votes,verdict", [
    (["reproduced", "reproduced"], "reproduced"),
    (["reproduced", None], "reproduced"),                     # a not_tested quantity does not vote
    (["reproduced", "not testable here"], "not testable here"),
    (["reproduced", "not measured here"], "not measured here"),
    (["inconclusive", "not measured here"], "inconclusive"),
    (["not reproduced", "inconclusive"], "not reproduced"),
    (["reproduced", "contradicted", "not reproduced"], "contradicted"),
    ([None], "not measured here"),
])
def test_claim_verdict_precedence(votes, verdict):
    assert claim_verdict(votes, verdict_rules()) == verdict


# --- on recorded runs ---------------------------------------------------------------------------------

@pytest.fixture
def results(tmp_path):
    dest = tmp_path / "results"
    shutil.copytree(DATA, dest)
    return dest


def evidence(results: Path, **kw) -> Evidence:
    ev = Evidence(results=str(results), built={"fig1", "fig2", "fig6", "table3"},
                  tables=[str(results / "tables" / "disk.csv")],
                  targets={"fig1": [str(results / "figures" / "fig1.pdf")]},
                  defaults={"qemu": ["-", "stock"], "guest_scheduler": ["-", "mq-deadline"],
                            "host_scheduler": ["-", "file"]},
                  config={"vm": {"disk_cache": "none"}}, workdir=str(results), n_resamples=2000, **kw)
    return ev


def test_every_claim_has_a_row_and_unbuilt_artifacts_are_not_measured_here(results):
    rows = ct.build(evidence(results), costs={})
    assert [r.claim for r in rows] == list(load_claims())
    by_id = {r.claim: r for r in rows}
    for cid in ("fig3", "fig4", "table1", "table2", "table4", "fig5", "sec3_2_2", "fig7"):
        assert by_id[cid].verdict == "not measured here", by_id[cid]
        assert by_id[cid].command == "not built by any rule of this workflow yet"
        assert all(q.verdict in ("not measured here", "not testable here", None) for q in by_id[cid].quantities)
    # Fig 6 is measured by the 32-bit kernels' boot-only runs (none here); its throughput needs a
    # 32-bit guest with its own user space whatever was run: verify_pmtmr_rate is compiled out on x86_64
    fig6 = by_id["fig6"]
    assert fig6.verdict == "not measured here"
    tput = next(q for q in fig6.quantities if q.quantity == "write_throughput")
    assert tput.verdict == "not testable here"
    assert "x86_64" in tput.reason and "32-bit" in tput.would_test


def test_ratios_from_the_long_form_table_agree_with_the_figures(results):
    """A ratio the claims table computes itself (no figure summary present) is the figure's."""
    rows = {r.claim: r for r in ct.build(evidence(results), costs={})}
    df = measurements.read_csv(results / "tables" / "disk.csv")
    summary = figures.summary_table(df, "fig1", seed=2010, n_resamples=2000)
    for q in rows["fig1"].quantities:
        expect = summary[summary.metric == load_claims()["fig1"].quantity(q.quantity).metric].iloc[0]
        assert q.value == pytest.approx(expect.ratio)
        assert q.accelerator == "tcg" and q.from_emulation
        # TCG's throughput and CPU are the emulator's timing: not testable, never "not reproduced"
        assert q.verdict == "not testable here" and "needs KVM" in q.reason
        assert "config/paper-scale.yaml" in q.would_test
    assert rows["fig1"].verdict == "not testable here"
    assert rows["fig1"].decided_by.quantity == "write_throughput"


def test_figure_summary_is_preferred_and_its_ci_judged(results):
    """With a figure's ratio summary present, its row is what is judged (here: a fabricated CI
    around 0.5 for Fig 1's throughput, outside it for the CPU: reproduced and contradicted)."""
    fig = results / "figures"
    fig.mkdir()
    pd.DataFrame([
        {"metric": "block_write_throughput", "ratio": 0.5, "ci_low": 0.45, "ci_high": 0.55, "accelerator": "kvm",
         "numerator": "VM baseline", "denominator": "native", "n_numerator": 5, "n_denominator": 5},
        {"metric": "block_write_cpu", "ratio": 1.7, "ci_low": 1.6, "ci_high": 1.8, "accelerator": "kvm",
         "numerator": "VM baseline", "denominator": "native", "n_numerator": 5, "n_denominator": 5},
    ]).to_csv(fig / "fig1-ratios.csv", index=False)
    ev = evidence(results)
    ev.ratios["fig1"] = str(fig / "fig1-ratios.csv")
    row = {r.claim: r for r in ct.build(ev, costs={})}["fig1"]
    assert [q.verdict for q in row.quantities] == ["reproduced", "contradicted"]
    assert row.verdict == "contradicted" and row.verdict_text == "contradicted"   # KVM: not emulation
    assert row.decided_by.quantity == "write_cpu" and row.decided_by.n_text == "n = 5 / 5"
    assert row.quantities[0].measured == "0.500 [0.450, 0.550]"


def test_table3_sites_from_the_exit_table(results):
    table = results / "tables" / "table3.csv"
    common = {"accelerator": "tcg-modelled", "workload": "bonnie++", "variant": "baseline"}
    pd.DataFrame([
        {**common, "phase": "boot", "ranking": "function",
         "function": "acpi_pm_read", "caller": "verify_pmtmr_rate", "count": 10, "count_share": 0.5, "rank": 1},
        {**common, "phase": "benchmark", "ranking": "function",
         "function": "iowrite8", "caller": "ata_sff_tf_load", "count": 9, "count_share": 0.4, "rank": 1},
        # a site ranking's row (by pc and caller) is not the paper's ranking: not counted
        {**common, "phase": "benchmark", "ranking": "site",
         "function": "ioread8", "caller": "ata_bmdma_status", "count": 8, "count_share": 0.3, "rank": 1},
    ]).to_csv(table, index=False)
    row = {r.claim: r for r in ct.build(evidence(results, exit_tables={"table3": str(table)}), costs={})}["table3"]
    q = row.quantities[0]
    # The benchmark phase only: the boot phase's acpi_pm_read <- verify_pmtmr_rate once matched (a
    # site that cannot occur on x86_64, and outside the benchmark); now it is left out with its reason.
    assert q.verdict == "not reproduced" and q.value == 0.0
    assert "0 of the 3 listed sites that can exist here" in q.reason and "x86_64" in q.reason
    assert row.verdict_text == "not reproduced (from emulation, TCG)"


def test_fig2_row_says_the_paper_setting_and_how_to_run_it(results):
    row = {r.claim: r for r in ct.build(evidence(results), costs={})}["fig2"]
    assert "cache=none" in row.setting
    assert "vm.disk_cache: none (from the run's provenance)" in row.setting
    assert "config/paper-cache.yaml" in row.setting
    paper = yaml.safe_load((REPO / "config" / "paper-cache.yaml").read_text())
    assert paper["vm"]["disk_cache"] == "writeback"
    # A run with the paper's setting says so instead.
    ev = evidence(results, )
    ev.tables = []
    ev.config = {"vm": {"disk_cache": "writeback"}}
    assert "This run used the paper's setting" in ct.setting_text("fig2", [], ev)


def test_written_files(results, tmp_path):
    rows = ct.build(evidence(results), costs={"fig1": {"run_s": 600.0, "build_s": 1800.0, "run_bytes": 1 << 20,
                                                       "build_bytes": 1 << 30, "jobs": 7}})
    md, csv, q = tmp_path / "claims.md", tmp_path / "claims.csv", tmp_path / "claims-quantities.csv"
    ct.write(rows, str(md), str(csv), str(q))
    table = pd.read_csv(csv)
    assert list(table.columns) == ct.CLAIM_COLUMNS
    assert len(table) == len(load_claims())
    assert set(table.verdict) <= set(verdict_rules()["verdicts"])
    fig1 = table[table.claim == "fig1"].iloc[0]
    assert fig1.run_time_s == 600.0 and fig1.build_disk_bytes == 1 << 30
    text = md.read_text()
    assert text.startswith("# The paper's claims, as measured here")
    assert "| Fig 1 |" in text and "runs 10.0 min, 1.0 MiB; builds (shared) 30.0 min, 1.00 GiB" in text
    # one row per quantity, and per route where a quantity names its routes (Fig 5)
    assert len(pd.read_csv(q)) == sum(max(1, len(x.routes)) for c in load_claims().values()
                                      for x in c.quantities)
    assert "| claim | paper says | verdict | decided by (95% CI, n) | reason | would test it |" in text
    assert fig1.verdict == "not testable here" and "needs KVM" in fig1.reason
    assert fig1.would_test == "on a KVM host: .venv/bin/snakemake --cores all --configfile config/paper-scale.yaml"
    assert (REPO / "config" / "paper-scale.yaml").is_file()


def test_a_stage_figure_summary_is_matched_by_quantity(results):
    """Fig 4's summary (the network stage's own figure rule) has several quantities per metric."""
    fig = results / "figures"
    fig.mkdir()
    rows = [{"figure": "fig4", "claim": "fig4", "quantity": q.id, "metric": q.metric, "numerator": "", "denominator": "",
             "ratio": 0.2 + i / 10, "ci_low": 0.15 + i / 10, "ci_high": 0.25 + i / 10, "accelerator": "tcg",
             "n_numerator": 3, "n_denominator": 3} for i, q in enumerate(load_claims()["fig4"].quantities)]
    pd.DataFrame(rows).to_csv(fig / "fig4-ratios.csv", index=False)
    ev = evidence(results)
    ev.built.add("fig4")
    ev.ratios["fig4"] = str(fig / "fig4-ratios.csv")
    row = {r.claim: r for r in ct.build(ev, costs={})}["fig4"]
    assert [q.value for q in row.quantities] == pytest.approx([r["ratio"] for r in rows])
    # virtio-net is not one of the paper's NICs: its ratios are shown but do not vote (its
    # throughput's CI touching 1 once made Fig 4 "not reproduced")
    virtio = [q for q in row.quantities if q.quantity.startswith("virtio_net")]
    assert len(virtio) == 2
    assert all(q.verdict is None and "not tested" in q.measured for q in virtio)
    # TCG: every other quantity is timing, so not testable here (it once voted on TCG's numbers)
    assert {q.verdict for q in row.quantities if q not in virtio} == {"not testable here"}


def test_a_table_artifact_long_form_csv_gives_its_ratios(results):
    """Table 4's quantities select columns of its own table (side, site_role, site_rank)."""
    table = results / "tables" / "table4.csv"
    recs = [{"metric": "port_io_exits_per_gib", "side": side, "site_rank": rank, "site": site, "repetition": rep,
             "site_role": "merged" if site == "ata_sff_tf_load" else "",
             "accelerator": "tcg-modelled", "value": base * (0.15 if side == "after" else 1.0) * (1 + rep / 100)}
            for side in ("before", "after") for rank, site, base in (("1", "ata_sff_tf_load", 1000.0),
                                                                      ("2", "ata_bmdma_setup", 150.0))
            for rep in range(3)]
    pd.DataFrame(recs).to_csv(table, index=False)
    ev = evidence(results, exit_tables={"table4": str(table)})
    ev.built.add("table4")
    row = {r.claim: r for r in ct.build(ev, costs={})}["table4"]
    sites = {q.quantity: q for q in row.quantities}
    assert sites["site1_exits"].value == pytest.approx(0.15) and sites["site1_exits"].verdict == "reproduced"
    assert sites["site1_exits"].role == "mechanism"
    # the second site is not merged by the patch: shown, it does not vote
    assert sites["site2_exits"].from_emulation and sites["site2_exits"].verdict is None
    assert row.verdict == "not measured here"     # no bonnie++ rows for throughput and CPU here


def test_an_exit_site_without_a_symbol_does_not_break_the_table(results):
    table = results / "tables" / "table1.csv"
    condition = dict(load_claims()["table1"].quantities[0].condition)   # Table 1's run
    pd.DataFrame([
        {"accelerator": "tcg-modelled", **condition, "phase": "benchmark",
         "function": None, "caller": None, "count": 10, "count_share": 0.6, "rank": 1},
        {"accelerator": "tcg-modelled", **condition, "phase": "benchmark",
         "function": "timer_interrupt", "caller": None, "count": 5, "count_share": 0.3, "rank": 2},
    ]).to_csv(table, index=False)
    ev = evidence(results, exit_tables={"table1": str(table)})
    ev.built.add("table1")
    q = {r.claim: r for r in ct.build(ev, costs={})}["table1"].quantities[0]
    assert q.verdict == "reproduced" and "(no symbol)" in q.note


def test_one_exit_count_on_each_side_is_inconclusive(results):
    """One exit run on each side once counted as exact (its CI the ratio itself); the rule asks
    for two independent runs on each side before any interval, so it is inconclusive, saying so."""
    table = results / "tables" / "table4.csv"
    pd.DataFrame([{"experiment": "table4", "side": side, "qemu": qemu, "site_rank": "1", "site": "ata_sff_tf_load",
                   "site_role": "merged", "accelerator": "tcg-modelled",
                   "metric": "port_io_exits_per_gib", "value": value}
                  for side, qemu, value in (("before", "stock", 15864.0), ("after", "coalesce", 2343.0))]
                 ).to_csv(table, index=False)
    ev = evidence(results, exit_tables={"table4": str(table)})
    ev.built.add("table4")
    row = {r.claim: r for r in ct.build(ev, costs={})}["table4"]
    site1 = next(q for q in row.quantities if q.quantity == "site1_exits")
    assert site1.value == pytest.approx(2343 / 15864) and math.isnan(site1.low)
    assert site1.verdict == "inconclusive" and "fewer than 3 independent runs" in site1.reason


def test_a_narrowed_claims_table_reads_the_tables_its_table_artifacts_are_made_from(tmp_path):
    """report.artifacts [table4]: Table 4's throughput and CPU quantities are in table coalesce,
    which its rule reads; the claims table must take that table in (it once took only figures')."""
    import re
    import uuid
    from conftest import snakemake

    rel = f"build/test-claims/{uuid.uuid4().hex[:8]}"
    # One --config: a second one would replace the first.
    plan = snakemake("claims", "-n", "--config", f"results_dir={rel}", "report={artifacts: [table4]}", results=None)
    block = re.search(r"rule claims_table:\n\s+input: ([^\n]+)", plan.stdout)
    assert block, plan.stdout[-3000:]
    inputs = block.group(1).split(", ")
    assert f"{rel}/tables/coalesce.csv" in inputs and f"{rel}/tables/table4.csv" in inputs, inputs
    assert f"{rel}/tables/disk.csv" not in inputs, inputs   # Fig 1's table: not selected


def test_a_job_with_several_outputs_costs_its_time_once(tmp_path):
    """Snakemake records each output of a job with its own start time (microseconds apart) and
    the job's end time: a kernel job's five outputs once counted five times over."""
    from guestio.report import cost
    results = tmp_path / "results"
    outputs = [str(results / "kernels" / "baseline" / name) for name in ("bzImage", "vmlinux", "build.json")]
    records = {o: {"rule": "kernel", "job_hash": 1, "starttime": 1000.0 + i * 1e-5, "endtime": 1300.0,
                   "input": []} for i, o in enumerate(outputs)}
    records[str(results / "figures" / "fig1.pdf")] = {"rule": "figure", "job_hash": 2, "starttime": 1400.0,
                                                       "endtime": 1410.0, "input": outputs}
    c = cost.closure_cost([str(results / "figures" / "fig1.pdf")], records, str(results))
    assert c.jobs == 2
    assert c.build_s == pytest.approx(300.0) and c.run_s == pytest.approx(10.0)
