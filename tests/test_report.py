"""`snakemake --report report.html`: after a partial run it says what is missing instead of
failing; captions give the claim, the measured ratio, the accelerator and the variants.
(The report of a complete run is checked in test_bundle.py, on the run it bundles.)"""

from __future__ import annotations

import shutil
import subprocess
import uuid

import pandas as pd
import pytest

from conftest import REPO, SNAKEMAKE
from guestio.report.captions import ReportFacts, provenance_line

DATA = REPO / "tests" / "data" / "report"


def test_report_after_a_partial_run_says_what_is_missing(tmp_path):
    """Only the long-form disk table and an exit run exist: no figure, no Table 3, no claims table."""
    rel = f"build/test-report/{uuid.uuid4().hex[:8]}"
    results = REPO / rel
    shutil.copytree(DATA / "results", results)
    html = tmp_path / "report.html"
    try:
        proc = subprocess.run([str(SNAKEMAKE), "--cores", "1", "--configfile", str(DATA / "config.yaml"),
                               "--config", f"results_dir={rel}", "--report", str(html)],
                              cwd=REPO, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-4000:]
        text = html.read_text()
        assert "claims table has not been made yet" in text
        assert "Missing from this run" in text
        for missing in ("fig1.pdf", "fig2.png", "table3.md"):
            assert f"{rel}/" in text and missing in text
        # Artifacts no rule builds here (or report.artifacts leaves out) are named as such.
        assert "Not built by any rule of this workflow" in text and "Fig 3 (fig3)" in text
        assert "Long-form measurement table" in text       # what exists is shown
    finally:
        shutil.rmtree(results, ignore_errors=True)


def test_figure_caption_has_claim_ratio_accelerator_and_variants(tmp_path):
    ratios = tmp_path / "fig1-ratios.csv"
    pd.DataFrame([{"ratio_label": "VM/native block write throughput", "numerator": "VM baseline (TCG · IDE)",
                   "denominator": "native", "ratio": 0.169, "ci_low": 0.143, "ci_high": 0.203, "paper": "about 0.5",
                   "accelerator": "tcg", "n_numerator": 2, "n_denominator": 2}]).to_csv(ratios, index=False)
    claims = tmp_path / "claims.csv"
    pd.DataFrame([{"claim": "fig1", "verdict": "not reproduced", "from_emulation": True}]).to_csv(claims, index=False)
    facts = ReportFacts(claims_csv=str(claims))
    facts.figures["fig1"] = {"ratios": str(ratios), "provenance": str(DATA / "results" / "tables" / "disk.provenance.json")}
    text = facts.caption("figure-fig1")
    assert "*Paper:* VM throughput and CPU utilisation are both about half of native" in text
    assert "0.169 [0.143, 0.203], paper: about 0.5; accelerator tcg" in text
    assert "*Verdict here:* **not reproduced (from emulation, TCG)**" in text
    assert "QEMU stock 7.2.22" in text and "kernels baseline (base+hz1000" in text
    assert repr(facts) == "ReportFacts()"   # params are a rerun trigger: the repr never changes


def test_network_figure_caption_reads_the_network_summary(tmp_path):
    """Fig 3/4/7's summaries (guestio.net.figures) name the ratio "label", not "ratio_label":
    the report of a complete default run failed on them (AttributeError in the caption)."""
    from guestio.net.figures import SUMMARY_COLUMNS

    ratios = tmp_path / "fig3-ratios.csv"
    row = {"figure": "fig3", "claim": "fig3", "quantity": "virtualisation_share",
           "label": "HostB->GuestB / HostA->GuestB ping round-trip time", "metric": "ping_rtt",
           "numerator": "peer=hostb-guestb", "denominator": "peer=hosta-guestb", "ratio": 0.950, "ci_low": 0.889,
           "ci_high": 1.014, "welch_p": 0.14, "n_numerator": 600, "n_denominator": 600, "accelerator": "tcg",
           "paper": "about 0.33", "verdict": "differs"}
    pd.DataFrame([row], columns=SUMMARY_COLUMNS).to_csv(ratios, index=False)
    facts = ReportFacts()
    facts.figures["fig3"] = {"ratios": str(ratios)}
    text = facts.caption("figure-fig3")
    assert ("- HostB->GuestB / HostA->GuestB ping round-trip time (peer=hostb-guestb / peer=hosta-guestb): "
            "0.950 [0.889, 1.014], paper: about 0.33; accelerator tcg, n = 600 / 600") in text, text


def test_provenance_line_names_every_qemu_of_a_table():
    line = provenance_line({"accelerator": {"accelerator": "kvm"},
                            "qemus": {"stock": {"version": "7.2.22"},
                                      "pit-scale": {"version": "7.2.22", "patches": [{"file": "a/0001-pit.patch"}]}}})
    assert line == "accelerator kvm; QEMU stock 7.2.22, pit-scale 7.2.22 (patches: 0001-pit.patch)"
