"""Statistics (guestio.analysis.stats), the paper's claims (guestio.analysis.claims, claims.yaml) and
figures 1, 2, 6 (guestio.analysis.figures, workflow/scripts/plot_figure.py)."""

from __future__ import annotations

import math
import re
import runpy
import warnings
from pathlib import Path
from types import SimpleNamespace

import matplotlib
import numpy as np
import pandas as pd
import pytest
import scipy.stats
import yaml

from guestio.plan.tables import FIGURES as PLAN_FIGURES
from guestio.analysis.claim_model import VERDICT_RULES, VerdictRule
from guestio.analysis import figures
from guestio.analysis.claims import CLAIMS_FILE, ClaimsError, load_artifacts, load_claims, load_paper
from guestio.analysis.figure_data import FIGURE_CLAIMS, COLUMNS, FigureDataError, format_ratio
from guestio.analysis.figures import plot_comparison
from guestio.analysis.stats import (bootstrap_mean_ci, bootstrap_ratio_ci, significance_mark, t_sf,
                           welch_significance, welch_t_test)

REPO = Path(__file__).resolve().parents[1]
PAPER = Path("/work/shared/paper/PAPER.md")
SEED = 20100101

# --- a results CSV that looks like a real one ------------------------------------------------------
# Repetition 0 of each condition is real bonnie++ 2.00a output captured for tests/data/bonnie/
# (README.md there): native-1G.csv on the host (block write 1274928 K/s at 67 %CP, rewrite 1915218
# at 69 %CP) and guest-ide-256M.csv, TCG, baseline kernel, IDE (132609 at 81, 131234 at 73, block
# read 289912 at 57).  bonnie++ printed +++++ for the native block read (page cache, too fast to
# time), so that number is made up at a plausible page-cache rate; the other repetitions and the
# pmtmr variant are the real numbers scaled by a few percent.
SPREAD = (1.0, 0.972, 1.018, 0.991, 1.025)


def _reps(first, spread=SPREAD, scale=1.0, digits=0):
    return [round(first * scale * f, digits) for f in spread]


NATIVE = {
    "block_write_throughput": _reps(1274928),
    "block_write_cpu": _reps(67, (1.0, 0.97, 1.03, 1.0, 0.96)),
    "rewrite_throughput": _reps(1915218),
    "rewrite_cpu": _reps(69, (1.0, 1.01, 0.97, 1.03, 0.99)),
    "block_read_throughput": _reps(3512204),   # not measured (+++++): plausible page-cache rate
    "block_read_cpu": _reps(52, (1.0, 0.98, 1.04, 0.96, 1.02)),
}
VM = {
    "baseline": {
        "block_write_throughput": _reps(132609),
        "block_write_cpu": _reps(81, (1.0, 0.98, 1.02, 1.01, 0.99)),
        "rewrite_throughput": _reps(131234),
        "rewrite_cpu": _reps(73, (1.0, 1.03, 0.97, 1.0, 1.01)),
        "block_read_throughput": _reps(289912),
        "block_read_cpu": _reps(57, (1.0, 1.02, 0.98, 1.04, 0.97)),
    },
    "pmtmr": {
        "block_write_throughput": _reps(132609, (1.0, 1.013, 0.995, 1.021, 1.008), scale=1.035),
        "block_write_cpu": _reps(81, (1.0, 0.99, 1.01, 0.98, 1.0), scale=0.97),
        "rewrite_throughput": _reps(131234, scale=1.01),
        "rewrite_cpu": _reps(73, (1.0, 1.01, 0.99, 1.0, 1.02)),
        "block_read_throughput": _reps(289912, scale=1.004),
        "block_read_cpu": _reps(57, (1.0, 0.99, 1.01, 1.03, 0.98)),
    },
}


def _rows(target, variant, accelerator, disk, clocksource, metrics, reps=None):
    rows = []
    for metric, values in metrics.items():
        for rep, value in enumerate(values[:reps] if reps else values):
            rows.append({"experiment": "disk", "target": target, "variant": variant,
                         "accelerator": accelerator, "disk": disk, "clocksource": clocksource,
                         "repetition": rep, "metric": metric, "value": float(value),
                         "unit": "%" if metric.endswith("_cpu") else "KiB/s"})
    return rows


def make_df(accelerator="tcg", reps=None, variants=("baseline", "pmtmr"), native=True, disk="ide"):
    rows = _rows("native", "host", "native", "host-fs", "host", NATIVE, reps) if native else []
    for v in variants:
        rows += _rows("vm", v, accelerator, disk, "acpi_pm", VM[v], reps)
    return pd.DataFrame(rows, columns=list(COLUMNS))


def make_provenance(accelerator="tcg"):
    source = {"debian_package": "linux-source-6.1", "debian_version": "6.1.192-2", "kernelversion": "6.1.192"}
    return {
        "accelerator": {"accelerator": accelerator, "requested": "auto",
                        "reason": ("probe boot under kvm reached init in 1.2 s" if accelerator == "kvm" else
                                   "/dev/kvm exists but a probe boot did not reach init within 20 s")},
        "qemu": "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)",
        "host": {"cpu_model": "AMD EPYC 7B13 64-Core Processor", "kernel": "6.1.0-31-amd64"},
        "kernels": {v: {"source": source, "variant": v} for v in ("baseline", "pmtmr")},
        "vm_config": {"memory_mib": 512, "cpus": 1},
    }


# Fig 6's boot-only runs of the two 32-bit kernels: exits of the PM timer's set-up and of the whole
# boot, per boot (counts of the shape such runs give: the set-up's PIT polling gone with
# verify_pmtmr_rate, the monotonicity checks' reads kept).
BOOT = {
    "baseline-i386": {"pm_timer_setup_exits": [6040, 5810, 6222, 5975, 6101],
                      "boot_exits": [151200, 149870, 152930, 150410, 151760]},
    "pmtmr-i386": {"pm_timer_setup_exits": [22, 24, 22, 23, 22],
                   "boot_exits": [145050, 143990, 146120, 144480, 145330]},
}


def make_boot_df(reps=None, variants=("baseline-i386", "pmtmr-i386"), disk="-"):
    rows = []
    for v in variants:
        for metric, values in BOOT[v].items():
            for rep, value in enumerate(values[:reps] if reps else values):
                rows.append({"experiment": "boot", "target": "vm", "variant": v, "accelerator": "tcg-modelled",
                             "disk": disk, "clocksource": "acpi_pm", "repetition": rep, "metric": metric,
                             "value": float(value), "unit": "exits"})
    return pd.DataFrame(rows, columns=list(COLUMNS))


def data_for(fig_id, df):
    """The table a figure draws from: Fig 6's boot-only runs, the disk runs for the others."""
    return make_boot_df() if fig_id == "fig6" else df


def raw(df, target, variant, metric):
    sel = df[(df.target == target) & (df.variant == variant) & (df.metric == metric)]
    return sel.sort_values("repetition")["value"].to_numpy(float)


@pytest.fixture
def df():
    return make_df()


@pytest.fixture
def prov():
    return make_provenance()


# --- stats -------------------------------------------------------------------------------------------

def test_bootstrap_mean_is_deterministic_per_seed():
    values = [3.1415, 2.7182, 3.4142, 2.9979, 3.0103, 3.3219, 2.5066]
    assert bootstrap_mean_ci(values, seed=7) == bootstrap_mean_ci(values, seed=7)
    assert bootstrap_mean_ci(values, seed=7) != bootstrap_mean_ci(values, seed=8)
    assert bootstrap_ratio_ci(values, [1, 2, 3], seed=7) == bootstrap_ratio_ci(values, [1, 2, 3], seed=7)


@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_bootstrap_ci_contains_the_mean(seed):
    rng = np.random.default_rng(99)
    for n in (2, 3, 5, 20):
        values = rng.normal(100.0, 15.0, n)
        mean, low, high = bootstrap_mean_ci(values, seed)
        assert mean == pytest.approx(values.mean())
        assert low <= mean <= high
        ratio, rlow, rhigh = bootstrap_ratio_ci(values, values + 50.0, seed)
        assert rlow <= ratio <= rhigh


def test_bootstrap_known_small_cases():
    # [0, 1]: resampled means are 0, 0.5, 1 with probability 1/4, 1/2, 1/4 -> 95% CI [0, 1].
    assert bootstrap_mean_ci([0.0, 1.0], seed=3) == (0.5, 0.0, 1.0)
    # No spread: the interval collapses onto the mean.
    assert bootstrap_mean_ci([4.0, 4.0, 4.0], seed=3) == (4.0, 4.0, 4.0)
    assert bootstrap_ratio_ci([2.0, 2.0, 2.0], [4.0, 4.0], seed=3) == (0.5, 0.5, 0.5)
    # A wider interval for a lower confidence is impossible.
    _, l95, h95 = bootstrap_mean_ci([1, 2, 3, 4, 5], seed=3)
    _, l50, h50 = bootstrap_mean_ci([1, 2, 3, 4, 5], seed=3, confidence=0.5)
    assert l95 <= l50 <= 3.0 <= h50 <= h95


def test_bootstrap_matches_the_documented_procedure():
    num, den = np.array([5.0, 7.0, 6.0, 9.0]), np.array([10.0, 12.0, 11.0])
    # The procedure, written out with numpy: numerator indices first, then the denominator's.
    rng = np.random.default_rng(5)
    nm = num[rng.integers(0, 4, size=(2000, 4))].mean(axis=1)
    dm = den[rng.integers(0, 3, size=(2000, 3))].mean(axis=1)
    low, high = np.quantile(nm / dm, [0.025, 0.975])
    ratio, rlow, rhigh = bootstrap_ratio_ci(num, den, seed=5, n_resamples=2000)
    assert ratio == num.mean() / den.mean()
    # scipy's quantile interpolates in another order of operations: equal to the last bit or two.
    assert (rlow, rhigh) == pytest.approx((low, high), rel=1e-15, abs=0)
    # And it is scipy.stats.bootstrap's percentile interval of that statistic, bit for bit.
    res = scipy.stats.bootstrap((num, den), lambda a, b, axis: a.mean(axis) / b.mean(axis), n_resamples=2000,
                                paired=False, method="percentile", rng=np.random.default_rng(5))
    assert (rlow, rhigh) == (res.confidence_interval.low, res.confidence_interval.high)
    values = [3.1, 2.7, 3.4, 2.9, 3.0]
    rng = np.random.default_rng(11)
    means = np.asarray(values)[rng.integers(0, 5, size=(10_000, 5))].mean(axis=1)
    mean, mlow, mhigh = bootstrap_mean_ci(values, seed=11)
    assert mean == np.mean(values)
    assert (mlow, mhigh) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])), rel=1e-15, abs=0)


def test_bootstrap_ratio_with_a_zero_denominator_resample_is_unbounded():
    # Resamples of [0, 1] are all zeros a quarter of the time: their ratio is infinite, and the
    # interval says so (the upper end is inf, not nan); no warning reaches the caller.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ratio, low, high = bootstrap_ratio_ci([1.0, 2.0], [0.0, 1.0], seed=1)
    assert ratio == 3.0 and low == 1.0 and high == math.inf


def test_bootstrap_one_value_has_no_ci_and_bad_input_raises():
    mean, low, high = bootstrap_mean_ci([42.0], seed=1)
    assert mean == 42.0 and math.isnan(low) and math.isnan(high)
    ratio, low, high = bootstrap_ratio_ci([1.0, 2.0], [4.0], seed=1)
    assert ratio == 0.375 and math.isnan(low) and math.isnan(high)
    with pytest.raises(ValueError, match="no values"):
        bootstrap_mean_ci([], seed=1)
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_mean_ci([1.0, float("nan")], seed=1)
    with pytest.raises(ValueError, match="mean is zero"):
        bootstrap_ratio_ci([1.0, 2.0], [0.0, 0.0], seed=1)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_mean_ci([1.0, 2.0], seed=1, confidence=95)


def test_t_distribution_against_closed_forms():
    # t_sf is scipy.stats.t.sf; the closed forms check the wrapper's sign and tail conventions.
    for t in (0.1, 0.8, 2.5, 12.0):
        assert 2 * t_sf(t, 1) == pytest.approx(1 - 2 * math.atan(t) / math.pi, rel=1e-12)   # Cauchy
        assert 2 * t_sf(t, 2) == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-12)
    assert t_sf(0.0, 7) == pytest.approx(0.5)
    assert t_sf(-2.0, 10) == pytest.approx(1 - t_sf(2.0, 10))
    assert 2 * t_sf(2.228138852, 10) == pytest.approx(0.05, abs=1e-8)  # tabulated t(0.975, 10)
    assert t_sf(1.959963985, 1e7) == pytest.approx(0.025, abs=1e-6)    # -> normal
    assert t_sf(3.3, 4.7) == scipy.stats.t.sf(3.3, 4.7)                # non-integer df
    assert t_sf(math.inf, 3) == 0.0 and t_sf(-math.inf, 3) == 1.0
    with pytest.raises(ValueError, match="degrees of freedom"):
        t_sf(1.0, 0)


def test_welch_against_reference_and_numerical_integration():
    a, b = [1, 2, 3, 4, 5], [2, 4, 6, 8, 10]
    t, df, p = welch_t_test(a, b)
    # R: t.test(1:5, c(2,4,6,8,10)) -> t = -1.8974, df = 5.8824, p-value = 0.1075
    assert t == pytest.approx(-1.897367, abs=1e-6)
    assert df == pytest.approx(5.882353, abs=1e-6)
    assert p == pytest.approx(0.1075, abs=5e-5)
    # Welch's statistic and Welch-Satterthwaite df written out.
    va, vb = np.var(a, ddof=1) / 5, np.var(b, ddof=1) / 5
    assert t == pytest.approx((np.mean(a) - np.mean(b)) / math.sqrt(va + vb), rel=1e-14)
    assert df == pytest.approx((va + vb) ** 2 / (va * va / 4 + vb * vb / 4), rel=1e-14)
    # The same p by integrating Student's t density numerically.
    x = np.linspace(abs(t), 2000.0, 4_000_001)
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    pdf = np.exp(log_c - (df + 1) / 2 * np.log1p(x * x / df))
    assert p == pytest.approx(2 * float(np.sum((pdf[1:] + pdf[:-1]) / 2 * np.diff(x))), abs=1e-6)
    assert welch_significance(a, b) == p


def test_welch_is_scipys_unequal_variance_t_test():
    rng = np.random.default_rng(4)
    for n, m in ((2, 2), (3, 7), (5, 5), (12, 4)):
        a, b = rng.normal(100.0, 10.0, n), rng.normal(90.0, 25.0, m)
        ref = scipy.stats.ttest_ind(a, b, equal_var=False)
        assert welch_t_test(a, b) == (ref.statistic, ref.df, ref.pvalue)
    # One group without spread (81 % CPU in every run) is ordinary input: scipy's answer, no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t, df, p = welch_t_test([81.0, 81.0, 81.0], [70.0, 74.0, 77.0])
    assert (t, df) == pytest.approx((np.sqrt(3) * 7.333333333333333 / np.sqrt(np.var([70, 74, 77], ddof=1)), 2.0))
    assert p == pytest.approx(2 * scipy.stats.t.sf(t, 2.0), rel=1e-12)


def test_welch_edge_cases_and_marks():
    assert welch_significance([1, 2, 3], [1, 2, 3]) == 1.0
    assert welch_significance([5, 5, 5], [5, 5]) == 1.0
    assert welch_significance([5, 5, 5], [6, 6]) == 0.0
    assert math.isnan(welch_significance([5], [6, 7]))
    assert significance_mark(0.049) == "*" and significance_mark(0.05) == ""
    assert significance_mark(float("nan")) == ""


# --- the paper's claims (claims.yaml) ------------------------------------------------------------------

def _paper_md() -> Path | None:
    for candidate in (REPO.parent / "shared" / "paper" / "PAPER.md", REPO / "shared" / "paper" / "PAPER.md", PAPER):
        if candidate.exists():
            return candidate
    return None


def _paper_table(text: str) -> dict[str, dict[str, str]]:
    """PAPER.md's table "Artifacts and their claims": paper id -> {what, workload, claim}."""
    section = text.split("## Artifacts and their claims", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0] not in ("id", "---"):
            rows[cells[0]] = {"what": cells[1], "workload": cells[2], "claim": cells[3]}
    return rows


def test_every_claim_of_the_paper_is_in_the_claims_file_verbatim():
    claims, artifacts = load_claims(), load_artifacts()
    assert list(claims) == ["fig1", "fig2", "fig3", "fig4", "table1", "table2", "table3", "table4", "fig5",
                            "fig6", "sec3_2_2", "fig7"]
    assert {c.paper_id for c in claims.values()} == {a.paper_id for a in artifacts.values()}
    path = _paper_md()
    if path is None:
        pytest.skip("PAPER.md is not here")
    table = _paper_table(path.read_text())
    assert len(table) == 12
    assert [c.paper_id for c in claims.values()] == list(table)   # every row, in the paper's order
    for claim in claims.values():
        assert claim.statement == table[claim.paper_id]["claim"], claim.id
    for artifact in artifacts.values():
        row = table[artifact.paper_id]
        assert (artifact.what, artifact.workload) == (row["what"], row["workload"]), artifact.id


def _rule(claim_id, quantity_id):
    return load_claims()[claim_id].quantity(quantity_id).verdict_rule


def test_the_papers_numbers_as_encoded():
    claims = load_claims()
    for q in ("write_throughput", "write_cpu"):                      # Fig 1: about half
        quantity = claims["fig1"].quantity(q)
        assert (quantity.paper.relation, quantity.paper.value) == ("~", 0.5)
        assert quantity.verdict_rule == VerdictRule("ratio_ci_contains", (("value", 0.5), ("tolerance", 0.1)))
        assert dict(quantity.numerator) == {"target": "vm", "variant": "baseline"}
        assert dict(quantity.denominator) == {"target": "native"}
    assert _rule("fig2", "read_throughput")["value"] == 1.0
    assert (_rule("fig2", "read_cpu")["expect"], _rule("fig2", "read_cpu")["reference"]) == (">", 1.0)
    assert claims["fig3"].quantity("virtualisation_share").paper.value == 0.33           # Fig 3: about 33 %
    assert _rule("fig3", "virtualisation_share")["value"] == 0.33
    fig7 = claims["fig7"].quantity("throughput")                                        # Fig 7: > 60 %
    assert (fig7.paper.relation, fig7.paper.value) == (">", 1.6)
    # judged against no effect (1), the paper's 1.6 as the size to reach (the link caps the ratio)
    assert (_rule("fig7", "throughput")["expect"], _rule("fig7", "throughput")["reference"]) == (">", 1.0)
    assert _rule("fig7", "throughput")["value"] == 1.6
    sched = claims["sec3_2_2"]                                                          # §3.2.2
    assert dict(sched.quantity("write_throughput").paper.numbers) == {"percent": 6.01}
    assert dict(sched.quantity("read_throughput").paper.numbers) == {"percent": 5.64}
    assert sched.quantity("write_throughput").paper.value == pytest.approx(1.0601)
    assert sched.quantity("read_throughput").paper.value == pytest.approx(1.0564)
    assert sched.quantity("bandwidth_control").verdict_rule.kind == "not_tested"
    table4 = claims["table4"]                                                           # Table 4
    for q, (before, after) in {"site1_exits": (111050, 17226), "site2_exits": (15864, 2343)}.items():
        paper = table4.quantity(q).paper
        assert dict(paper.numbers)["before"] == before and dict(paper.numbers)["after"] == after
        assert after / before == pytest.approx(paper.value, abs=0.01)   # "about -85 %"
    # only the merged site is judged: the patch does not merge the second site's writes
    assert abs(17226 / 111050 - _rule("table4", "site1_exits")["value"]) <= _rule("table4", "site1_exits")["tolerance"]
    assert _rule("table4", "site2_exits").kind == "not_tested"
    sites = _rule("table3", "hot_sites")["sites"]                                        # Table 3
    assert [(s.function, s.caller) for s in sites] == [
        ("acpi_pm_read", "verify_pmtmr_rate"), ("iowrite8", "ata_sff_dev_select"),
        ("ioread8", "ata_bmdma_status"), ("iowrite32", "ata_bmdma_setup")]
    assert sites[0].requires == ("x86_32",)     # compiled out on x86_64: left out with its reason
    assert _rule("table3", "hot_sites").get("at_least") is None                          # all four
    # Every number these statements contain is among the numbers of their quantities.
    for cid in ("fig3", "table4", "sec3_2_2", "fig7"):
        encoded = {abs(v) for q in claims[cid].quantities for _, v in q.paper.numbers}
        for number in re.findall(r"\d+(?:\.\d+)?", claims[cid].statement):
            assert float(number) in encoded, (cid, number)


def test_verdict_rules_use_the_documented_vocabulary():
    header = "".join(line for line in CLAIMS_FILE.read_text().splitlines(True) if line.startswith("#"))
    for kind, (required, optional) in VERDICT_RULES.items():
        assert f"kind: {kind}" in header, kind
        for field in required + optional:
            assert f"{field}:" in header, (kind, field)
    kinds = {q.verdict_rule.kind for c in load_claims().values() for q in c.quantities}
    assert kinds == set(VERDICT_RULES)
    for claim in load_claims().values():
        for q in claim.quantities:
            assert q.is_ratio or q.condition, (claim.id, q.id)
            if q.paper.relation == "":
                assert math.isnan(q.paper.value), (claim.id, q.id)


def test_artifacts_exist_and_figures_are_the_pipelines():
    artifacts = load_artifacts()
    smk = "\n".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    rules = set(re.findall(r"^rule (\w+):", smk, re.M))
    for artifact in artifacts.values():
        assert artifact.built_by is None or artifact.built_by in rules, artifact.id
        assert artifact.id in rules or artifact.built_by is None or artifact.kind != "figure", artifact.id
    pipeline_figures = set(PLAN_FIGURES)
    # Figures the generic `figure` rule draws; the network figures have rules of their own (net_fig3...).
    assert set(FIGURE_CLAIMS) == pipeline_figures == {a.id for a in artifacts.values()
                                                       if a.kind == "figure" and a.built_by == "figure"}
    claims = load_claims()
    for claim in claims.values():
        assert claim.artifacts and all(a.id in artifacts for a in claim.artifacts)
    assert [p.title for p in claims["fig1"].figure_panels] == ["Block write throughput", "Block write CPU utilisation"]
    assert claims["fig6"].figure_panels == FIGURE_CLAIMS["fig6"].panels
    assert claims["fig3"].figure_panels == () and claims["table3"].figure_panels == ()


def test_figures_take_their_claims_from_the_claims_file():
    claims = load_claims()
    fig1 = {p.ratio_label: p.paper for p in FIGURE_CLAIMS["fig1"].panels}
    assert fig1 == {"VM/native block write throughput": "about 0.5",
                    "VM/native block write CPU utilisation": "about 0.5"}
    fig2 = {p.ratio_label: p.paper for p in FIGURE_CLAIMS["fig2"].panels}
    assert fig2["VM/native block read throughput"] == "about 1.0"
    assert "ratio > 1" in fig2["VM/native block read CPU utilisation"]
    assert FIGURE_CLAIMS["fig6"].panels[0].ratio_label.startswith("pmtmr-i386/baseline-i386 exits of the PM timer")
    assert FIGURE_CLAIMS["fig6"].panels[0].paper_relation == "<"
    assert math.isnan(FIGURE_CLAIMS["fig6"].panels[1].paper_value)
    for fig_id, spec in FIGURE_CLAIMS.items():
        assert spec.claim == claims[spec.claim_id].statement
        assert spec.testbed == load_paper().testbed
    # The plotting code states no claim, label or paper value of its own.
    source = "".join((REPO / "workflow" / "guestio" / "analysis" / name).read_text()
                     for name in ("figures.py", "figure_data.py", "figure_drawing.py"))
    for spec in FIGURE_CLAIMS.values():
        for text in (spec.claim, spec.title, spec.testbed, *(p.ratio_label for p in spec.panels),
                     *(p.paper for p in spec.panels), *(p.title for p in spec.panels)):
            assert text not in source, text


def test_the_figure_rule_depends_on_the_claims_and_every_analysis_module():
    import subprocess
    import sys

    smk = (REPO / "workflow" / "rules" / "figures.smk").read_text()
    # The list may wrap: an entry after a line break is named all the same.
    listed = set(re.sub(r"\s+", "", re.search(r"code=\[ANALYSIS / name for name in \(([^)]*)\)\]", smk).group(1))
                 .replace('"', "").split(","))
    out = subprocess.run([sys.executable, "-c", "import sys, guestio.analysis.figures; print(' '.join(sorted("
                          "m.__file__ for n, m in sys.modules.items() if n.startswith('guestio.analysis.'))))"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert {Path(f).name for f in out} | {"claims.yaml"} <= listed


# --- the claims loader: every problem named by claim and field -------------------------------------------

def _write(tmp_path, data, name="claims.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return path


@pytest.fixture
def data():
    return yaml.safe_load(CLAIMS_FILE.read_text())


def _claim(data, cid):
    return next(c for c in data["claims"] if c["id"] == cid)


def test_loader_round_trips_the_file(tmp_path, data):
    assert load_claims(_write(tmp_path, data)) == load_claims()


@pytest.mark.parametrize("mutate, message", [
    (lambda d: _claim(d, "fig1")["quantities"][0]["verdict_rule"].update(tolerence=0.1),
     r"claim fig1, quantities\[0\]\.verdict_rule: unknown key 'tolerence'; allowed keys: kind, reference, tolerance, value"),
    (lambda d: _claim(d, "fig2").pop("statement"), r"claim fig2: missing field 'statement'"),
    (lambda d: _claim(d, "fig6")["artifacts"].append("fig9"), r"claim fig6\.artifacts\[1\]: 'fig9' is not an artifact"),
    (lambda d: _claim(d, "fig7")["quantities"][0]["verdict_rule"].update(kind="about"),
     r"claim fig7, quantities\[0\]\.verdict_rule\.kind: 'about' is not a verdict rule; kinds: ratio_ci_contains"),
    (lambda d: _claim(d, "fig7")["quantities"][0]["verdict_rule"].update(expect=">="),
     r"claim fig7, quantities\[0\]\.verdict_rule\.expect: '>=' is not allowed"),
    (lambda d: _claim(d, "fig1")["quantities"][1]["verdict_rule"].pop("tolerance"),
     r"claim fig1, quantities\[1\]\.verdict_rule: missing field 'tolerance'"),
    (lambda d: _claim(d, "fig3")["quantities"][0]["paper"].update(value="a third"),
     r"claim fig3, quantities\[0\]\.paper\.value: expected a number or null, got 'a third'"),
    (lambda d: _claim(d, "fig3")["quantities"][0]["paper"].update(relation=""),
     r"claim fig3, quantities\[0\]\.paper\.value: a value needs a relation"),
    (lambda d: _claim(d, "table3")["quantities"][0]["verdict_rule"].update(at_least=5),
     r"claim table3, quantities\[0\]\.verdict_rule\.at_least: 5 is more than the 4 sites listed"),
    (lambda d: _claim(d, "table3")["quantities"][0].update(panel={"figure": "table3", "title": "x"}),
     r"claim table3, quantities\[0\]\.panel\.figure: 'table3' is a table, not a figure"),
    (lambda d: _claim(d, "fig6")["quantities"][1]["numerator"].update(variant="hz100"),
     r"claim fig6, quantity boot_exits\.numerator: differs from quantity setup_exits's; all panels of fig6"),
    (lambda d: _claim(d, "fig1")["quantities"][0]["numerator"].update(nics="e1000"),
     r"claim fig1, quantities\[0\]\.numerator\.nics: not a column of the measurement table"),
    (lambda d: _claim(d, "fig2")["quantities"][1].pop("denominator"),
     r"claim fig2, quantities\[1\]: missing field 'denominator' \(a ratio needs numerator and denominator\)"),
    (lambda d: d["claims"].append(dict(_claim(d, "fig1"))), r"claim fig1\.id: appears more than once"),
    (lambda d: d["artifacts"]["fig1"].update(kind="chart"), r"artifact fig1\.kind: 'chart' is not allowed"),
    (lambda d: d.update(claim=[]), r"\(top level\): unknown key 'claim'"),
])
def test_loader_errors_name_the_claim_and_field(tmp_path, data, mutate, message):
    mutate(data)
    with pytest.raises(ClaimsError, match=message):
        load_claims(_write(tmp_path, data))


def test_loader_lists_every_problem_at_once_and_rereads_an_edited_file(tmp_path, data):
    path = _write(tmp_path, data)
    assert load_claims(path)["fig1"].quantity("write_throughput").paper.value == 0.5
    _claim(data, "fig1")["quantities"][0]["paper"]["value"] = 0.45
    _claim(data, "fig4").pop("artifacts")
    _claim(data, "fig5")["quantities"][0]["measure"] = "speed"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True) + "\n# edited\n")
    with pytest.raises(ClaimsError, match=r"\(2 problems\)") as err:
        load_claims(path)
    assert "claim fig4: missing field 'artifacts'" in str(err.value)
    assert "claim fig5, quantities[0].measure: 'speed' is not allowed" in str(err.value)
    _claim(data, "fig4")["artifacts"] = ["fig4"]
    _claim(data, "fig5")["quantities"][0]["measure"] = "throughput"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    assert load_claims(path)["fig1"].quantity("write_throughput").paper.value == 0.45
    with pytest.raises(ClaimsError, match="cannot read the claims file"):
        load_claims(tmp_path / "missing.yaml")


# --- figures: output -------------------------------------------------------------------------------------

@pytest.mark.parametrize("fig_id", ["fig1", "fig2", "fig6"])
def test_figure_files_are_written_and_load(tmp_path, df, prov, fig_id):
    pdf, png = tmp_path / f"{fig_id}.pdf", tmp_path / f"{fig_id}.png"
    result = plot_comparison(fig_id, data_for(fig_id, df), prov, pdf, png, seed=SEED)
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    image = matplotlib.image.imread(png)
    assert image.ndim == 3 and image.shape[0] > 500 and image.shape[1] > 1000
    assert image[..., :3].std() > 0.05  # not blank
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([pdf.name, png.name])  # no temp files left
    assert result.outputs == [pdf, png]
    texts = "\n".join(result.texts)
    assert FIGURE_CLAIMS[fig_id].claim in texts.replace("\n", " ")
    assert "n = 5" in texts


def test_labels_name_accelerator_disk_and_variant_and_footer_has_provenance(df, prov):
    result = figures.plot_comparison("fig1", df, prov, None, None, seed=SEED)
    ticks = [t.get_text() for ax in result.figure.axes for t in ax.get_xticklabels()]
    vm = [t for t in ticks if t.startswith("VM")]
    assert vm and all("TCG" in t and "IDE" in t and "baseline" in t for t in vm)
    assert any(t.startswith("native") for t in ticks)
    footer = " ".join(result.texts)
    for needle in ("Accelerator: tcg", "QEMU 7.2.22", "Linux 6.1.192", "AMD EPYC 7B13", "seed 20100101"):
        assert needle in footer, needle


def test_tcg_run_carries_the_emulation_warning_and_kvm_run_does_not(df, prov):
    tcg = figures.plot_comparison("fig1", df, prov, None, None, seed=SEED)
    assert tcg.tcg
    joined = " ".join(tcg.texts)
    assert "QEMU TCG emulation, not KVM" in joined and "not comparable" in joined
    # It is in the title area: above both panels.
    top_of_axes = max(ax.get_position().y1 for ax in tcg.figure.axes)
    warning = [t for t in tcg.figure.texts if "TCG emulation" in t.get_text()]
    assert warning and all(t.get_position()[1] > top_of_axes for t in warning)

    kvm = figures.plot_comparison("fig1", make_df("kvm"), make_provenance("kvm"), None, None, seed=SEED)
    assert not kvm.tcg
    assert "TCG emulation" not in " ".join(kvm.texts)
    assert any("KVM · IDE" in t for t in kvm.texts)
    # The provenance alone saying TCG is enough for the warning.
    assert figures.plot_comparison("fig1", make_df("kvm"), make_provenance("tcg"), None, None, seed=SEED).tcg


@pytest.mark.parametrize("fig_id", ["fig1", "fig6"])
def test_reruns_are_byte_identical(tmp_path, df, prov, fig_id):
    df = data_for(fig_id, df)
    outs = []
    for run in ("a", "b"):
        d = tmp_path / run
        # The second run also gets the rows in another order: repetition order decides, not row order.
        data = df if run == "a" else df.sample(frac=1.0, random_state=3)
        plot_comparison(fig_id, data, prov, d / "f.pdf", d / "f.png", seed=SEED)
        outs.append(((d / "f.pdf").read_bytes(), (d / "f.png").read_bytes()))
    assert outs[0][0] == outs[1][0]
    assert outs[0][1] == outs[1][1]
    assert b"CreationDate" not in outs[0][0] and b"Matplotlib" not in outs[0][0]
    assert b"Software" not in outs[0][1]


def test_rerun_in_a_fresh_process_is_byte_identical(tmp_path, df, prov):
    import json
    import subprocess
    import sys

    csv, pj = tmp_path / "disk.csv", tmp_path / "prov.json"
    df.to_csv(csv, index=False)
    pj.write_text(json.dumps(prov))
    code = ("import json, sys, pandas as pd; from guestio.analysis.figures import plot_comparison; "
            "plot_comparison('fig1', pd.read_csv(sys.argv[1]), json.load(open(sys.argv[2])), sys.argv[3], sys.argv[4], 1)")
    digests = []
    for run in ("a", "b"):
        pdf, png = tmp_path / f"{run}.pdf", tmp_path / f"{run}.png"
        subprocess.run([sys.executable, "-c", code, str(csv), str(pj), str(pdf), str(png)], check=True,
                       env={"PATH": "/usr/bin:/bin", "SOURCE_DATE_EPOCH": str(1000 + ord(run)),
                            "MPLCONFIGDIR": str(tmp_path / f"mpl-{run}")})
        digests.append((pdf.read_bytes(), png.read_bytes()))
    assert digests[0] == digests[1]


def test_annotation_and_bars_are_the_bootstrap_numbers(df, prov):
    result = figures.plot_comparison("fig1", df, prov, None, None, seed=SEED)
    joined = "\n".join(result.texts)
    for metric in ("block_write_throughput", "block_write_cpu"):
        expected = bootstrap_ratio_ci(raw(df, "vm", "baseline", metric), raw(df, "native", "host", metric), SEED)
        (r,) = [r for r in result.ratios if r.panel.metric == metric]
        assert (r.ratio, r.low, r.high) == expected
        assert f"here: {format_ratio(*expected)}" in joined
        p = welch_significance(raw(df, "vm", "baseline", metric), raw(df, "native", "host", metric))
        assert r.p_value == p and r.mark == "*"
    # Bars: mean and CI of the plotted (MiB/s) values, from the same seed.
    bars = result.bars["block_write_throughput"]
    assert [b.condition.target for b in bars] == ["native", "vm"]
    native_mib = raw(df, "native", "host", "block_write_throughput") / 1024.0
    assert (bars[0].mean, bars[0].low, bars[0].high) == bootstrap_mean_ci(native_mib, SEED)
    # The error bars drawn are those numbers.
    ax = result.figure.axes[0]
    segments = [seg for coll in ax.collections for seg in getattr(coll, "get_segments", lambda: [])()]
    spans = sorted((s[0][1], s[1][1]) for s in segments if len(s) == 2 and s[0][0] == s[1][0])
    assert len(spans) == 2
    assert spans[1] == pytest.approx((bars[0].low, bars[0].high), rel=1e-12)
    assert spans[0] == pytest.approx((bars[1].low, bars[1].high), rel=1e-12)
    # The summary table holds the same numbers.
    table = figures.summary_table(df, "fig1", SEED)
    row = table[table.metric == "block_write_throughput"].iloc[0]
    expected = bootstrap_ratio_ci(raw(df, "vm", "baseline", "block_write_throughput"),
                                  raw(df, "native", "host", "block_write_throughput"), SEED)
    assert (row.ratio, row.ci_low, row.ci_high) == expected
    assert row.paper == "about 0.5" and row.n_numerator == 5 and row.n_denominator == 5
    pd.testing.assert_frame_equal(table, result.summary)


def test_fig6_compares_the_32bit_kernels_exits_at_boot(prov):
    df = make_boot_df()
    result = figures.plot_comparison("fig6", df, prov, None, None, seed=SEED)
    (r,) = [r for r in result.ratios if r.panel.metric == "pm_timer_setup_exits"]
    assert (r.numerator.variant, r.denominator.variant) == ("pmtmr-i386", "baseline-i386")
    assert (r.ratio, r.low, r.high) == bootstrap_ratio_ci(raw(df, "vm", "pmtmr-i386", "pm_timer_setup_exits"),
                                                          raw(df, "vm", "baseline-i386", "pm_timer_setup_exits"),
                                                          SEED)
    assert r.ratio < 0.01
    assert not any(t.startswith("native") for t in result.texts)
    assert any(t.startswith("paper: verify_pmtmr_rate's PM-timer and PIT reads gone") for t in result.texts)
    assert [ax.get_ylabel() for ax in result.figure.axes][:2] == ["exits", "exits"]
    # a table of another unit is refused, naming the metric
    with pytest.raises(FigureDataError, match=r"^fig6 .*pm_timer_setup_exits: unit 'KiB/s', expected 'exits'"):
        figures.plot_comparison("fig6", df.assign(unit="KiB/s"), prov, None, None, seed=SEED)


def test_summary_csv_and_markdown(tmp_path, df):
    table = figures.summary_table(df, "fig2", SEED)
    assert list(table.metric) == ["block_read_throughput", "block_read_cpu"]
    for col in ("figure", "ratio_label", "paper", "ratio", "ci_low", "ci_high", "welch_p", "significant",
                "n_numerator", "n_denominator", "seed"):
        assert col in table.columns
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    figures.write_summary_csv(table, a)
    figures.write_summary_csv(figures.summary_table(df, "fig2", SEED), b)
    assert a.read_bytes() == b.read_bytes()
    back = pd.read_csv(a)
    assert back.ratio.tolist() == table.ratio.tolist()
    md = figures.summary_markdown(table)
    assert md.count("\n") == 4 and "| Fig 2 | VM/native block read throughput |" in md


def test_several_vm_settings_give_one_ratio_each(df, prov):
    virtio = make_df(disk="virtio", native=False)
    both = pd.concat([df, virtio], ignore_index=True)
    result = figures.plot_comparison("fig1", both, prov, None, None, seed=SEED)
    assert len(result.ratios) == 4
    assert {r.numerator.disk for r in result.ratios} == {"ide", "virtio"}
    assert any("virtio" in t for t in result.texts)
    boot = pd.concat([make_boot_df(disk="ide"), make_boot_df(disk="virtio")], ignore_index=True)
    fig6 = figures.plot_comparison("fig6", boot, prov, None, None, seed=SEED)
    assert {(r.numerator.disk, r.denominator.disk) for r in fig6.ratios} == {("ide", "ide"), ("virtio", "virtio")}


def test_one_repetition_draws_no_ci(prov):
    result = figures.plot_comparison("fig1", make_df(reps=1), prov, None, None, seed=SEED)
    assert all(math.isnan(r.low) for r in result.ratios)
    assert any("no CI: one repetition" in t for t in result.texts)
    assert any("Welch p n/a" in t for t in result.texts)


def test_nan_values_are_left_out_of_the_counts(df, prov):
    df = df.copy()
    hit = (df.target == "vm") & (df.variant == "baseline") & (df.metric == "block_write_cpu") & (df.repetition == 0)
    df.loc[hit, "value"] = float("nan")
    result = figures.plot_comparison("fig1", df, prov, None, None, seed=SEED)
    (r,) = [r for r in result.ratios if r.panel.metric == "block_write_cpu"]
    assert r.n_numerator == 4 and r.n_denominator == 5


def test_plotting_leaves_global_rcparams_alone(df, prov):
    with matplotlib.rc_context({"font.size": 17.0, "lines.linewidth": 4.0}):
        figures.plot_comparison("fig1", df, prov, None, None, seed=SEED)
        assert matplotlib.rcParams["font.size"] == 17.0
        assert matplotlib.rcParams["lines.linewidth"] == 4.0


def test_missing_provenance_keys_are_labelled_unknown(df):
    result = figures.plot_comparison("fig1", df, {}, None, None, seed=SEED)
    joined = " ".join(result.texts)
    assert "QEMU version unknown" in joined and "guest kernel version unknown" in joined
    assert "unknown CPU" in joined and result.tcg  # the CSV's accelerator column still says TCG


def _assert_readable(fig):
    """Every text lies inside the figure and no two of them (or a text and a panel) overlap."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    page = fig.bbox
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in fig.texts if t.get_text()]
    boxes += [(f"axes {i}", ax.get_tightbbox(renderer)) for i, ax in enumerate(fig.axes)]
    for text, box in boxes:
        assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 and box.y1 <= page.y1, text
    for i, (ta, a) in enumerate(boxes):
        for tb, b in boxes[i + 1:]:
            overlap_x = min(a.x1, b.x1) - max(a.x0, b.x0)
            overlap_y = min(a.y1, b.y1) - max(a.y0, b.y0)
            assert overlap_x <= 1 or overlap_y <= 1, f"{ta!r} overlaps {tb!r}"
    for ax in fig.axes:
        ticks = [t.get_window_extent(renderer) for t in ax.get_xticklabels()]
        for a, b in zip(ticks, ticks[1:]):
            assert a.x1 < b.x0, "tick labels overlap"


@pytest.mark.parametrize("fig_id", ["fig1", "fig2", "fig6"])
def test_layout_is_readable(df, prov, fig_id):
    _assert_readable(plot_comparison(fig_id, data_for(fig_id, df), prov, None, None, seed=SEED).figure)
    # Four bars per panel (IDE and virtio), long provenance strings.
    both = (pd.concat([make_boot_df(disk="ide"), make_boot_df(disk="virtio")], ignore_index=True) if fig_id == "fig6"
            else pd.concat([df, make_df(disk="virtio", native=False)], ignore_index=True))
    long = make_provenance()
    long["accelerator"]["reason"] = "x " * 200
    long["host"]["cpu_model"] = "Intel(R) Xeon(R) Platinum 8480+ CPU @ 2.00GHz with a long name"
    _assert_readable(plot_comparison(fig_id, both, long, None, None, seed=SEED).figure)


# --- figures: missing data ---------------------------------------------------------------------------------

def test_missing_native_rows_error_names_the_figure(tmp_path, prov):
    df = make_df(native=False)
    with pytest.raises(FigureDataError, match=r"^fig1 \(Fig 1.*native rows") as err:
        plot_comparison("fig1", df, prov, tmp_path / "f.pdf", tmp_path / "f.png", seed=SEED)
    assert "block_write_throughput" in str(err.value) and "vm/baseline" in str(err.value)
    assert not list(tmp_path.iterdir())  # nothing half-written
    with pytest.raises(FigureDataError, match=r"^fig2 .*native"):
        figures.summary_table(df, "fig2", SEED)


def test_missing_variant_metric_experiment_or_column_errors_name_the_figure(df, prov):
    with pytest.raises(FigureDataError, match=r"^fig6 .*variant 'pmtmr-i386'"):
        figures.plot_comparison("fig6", make_boot_df(variants=("baseline-i386",)), prov, None, None, seed=SEED)
    with pytest.raises(FigureDataError, match=r"^fig2 .*block_read_cpu"):
        figures.plot_comparison("fig2", df[df.metric != "block_read_cpu"], prov, None, None, seed=SEED)
    with pytest.raises(FigureDataError, match=r"^fig1 .*experiment 'disk'.*net"):
        figures.plot_comparison("fig1", df.assign(experiment="net"), prov, None, None, seed=SEED)
    with pytest.raises(FigureDataError, match=r"^fig1 .*columns clocksource"):
        figures.plot_comparison("fig1", df.drop(columns="clocksource"), prov, None, None, seed=SEED)
    other_clock = make_boot_df()
    other_clock.loc[other_clock.variant == "pmtmr-i386", "clocksource"] = "tsc"
    with pytest.raises(FigureDataError, match=r"^fig6 .*same accelerator, disk, clocksource"):
        figures.plot_comparison("fig6", other_clock, prov, None, None, seed=SEED)
    dup = pd.concat([df, df[df.target == "native"]], ignore_index=True)
    with pytest.raises(FigureDataError, match=r"^fig1 .*more than once"):
        figures.plot_comparison("fig1", dup, prov, None, None, seed=SEED)
    with pytest.raises(ValueError, match="unknown figure 'fig9'"):
        figures.summary_table(df, "fig9", SEED)


# --- the Snakemake script ------------------------------------------------------------------------------------

def test_plot_figure_script(tmp_path, prov):
    import json

    df = make_boot_df()
    csv, pj = tmp_path / "boot.csv", tmp_path / "provenance.json"
    df.to_csv(csv, index=False)
    pj.write_text(json.dumps(prov))
    out = SimpleNamespace(pdf=str(tmp_path / "fig6.pdf"), png=str(tmp_path / "fig6.png"),
                          summary=str(tmp_path / "fig6.csv"), markdown=str(tmp_path / "fig6.md"))
    smk = SimpleNamespace(input=SimpleNamespace(csv=str(csv), provenance=str(pj)),
                          params=SimpleNamespace(figure="fig6", seed=SEED), output=out,
                          log=[str(tmp_path / "fig6.log")])
    script = REPO / "workflow" / "scripts" / "plot_figure.py"
    assert len(script.read_text().splitlines()) < 25
    runpy.run_path(str(script), init_globals={"snakemake": smk})
    for path in (out.pdf, out.png, out.summary, out.markdown, smk.log[0]):
        assert Path(path).stat().st_size > 0
    summary = pd.read_csv(out.summary)
    assert summary.figure.tolist() == ["fig6", "fig6"]
    assert summary.ratio[0] == pytest.approx(
        raw(df, "vm", "pmtmr-i386", "pm_timer_setup_exits").mean()
        / raw(df, "vm", "baseline-i386", "pm_timer_setup_exits").mean())


def test_loader_answers_wrong_types_with_claims_errors(tmp_path, data):
    """A list or mapping where a name belongs, a null where a field is required: a ClaimsError, no crash."""
    quantity = _claim(data, "fig1")["quantities"][0]
    spots = [(quantity, key) for key in quantity] + [(quantity["paper"], k) for k in quantity["paper"]]
    spots += [(quantity["verdict_rule"], k) for k in quantity["verdict_rule"]] + [(quantity["panel"], "figure")]
    spots += [(_claim(data, "fig1"), "artifacts"), (data["artifacts"]["fig1"], "kind")]
    for i, (node, key) in enumerate(spots):
        for bad in (None, [], {"a": 1}):
            original = node[key]
            node[key] = bad
            with pytest.raises(ClaimsError, match=r"claim fig1|artifact fig1"):
                load_claims(_write(tmp_path, data, f"bad{i}.yaml"))
            node[key] = original
