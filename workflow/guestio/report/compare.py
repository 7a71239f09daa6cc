"""Two guestio runs side by side, the way mmtests' compare-mmtests.pl lays out two kernels.

    .venv/bin/python -m guestio.report.compare A B --out DIR [--robust] [--alpha 0.05]

A and B are each a results directory, an unpacked bundle (``guestio-bundle/`` or the directory
it was unpacked in) or a bundle archive (``.tar.gz``).  DIR gets ``compare.md``,
``compare.csv`` (one row per compared quantity), ``compare-provenance.csv`` (what differs in
the runs' provenance and config) and ``compare.html`` (a standalone page with the same content).

Every row holds both runs' centre (mean; median with ``--robust``) with its 95% percentile
bootstrap CI (seeded, as everywhere in guestio) and n, the ratio B/A, a two-sided p-value
(Welch's t-test; Mann-Whitney U with ``--robust``) and mmtests' mark ``*`` where p < alpha.
n counts independent runs (repetitions), never samples inside one run: the values of one
repetition are averaged first.  Below the header one line gives the geometric mean of B/A.

Claims quantities (``claims-quantities.csv``) are ratios with a CI and no samples; their test
is a z-test on the two CIs (on the log scale where the values are positive), labelled as such.
See docs/compare.md.  This module holds the comparison and the command line; beside it
``compare_runs`` (where a run's files are, its provenance), ``compare_stats`` (one row's
statistics), ``compare_rows`` (the rows of measurements and claims) and ``compare_output``
(markdown, CSV, HTML).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from dataclasses import dataclass
from typing import Sequence

from guestio.analysis.stats import SIGNIFICANCE_LEVEL
from guestio.report.compare_output import summary_text, write
from guestio.report.compare_rows import Row, claim_rows, load_claims, load_measurements, measurement_rows
from guestio.report.compare_runs import CLAIMS_QUANTITIES, ProvenanceDiff, Run, diff_provenance, locate, provenance
from guestio.report.compare_stats import DEFAULT_N_RESAMPLES, DEFAULT_SEED, Options


@dataclass
class Comparison:
    a: Run
    b: Run
    opts: Options
    provenance: ProvenanceDiff
    claims: list[Row]
    measurements: list[Row]
    skipped: dict[str, list[str]]     # "A"/"B" -> files not compared
    notes: list[str]

    @property
    def rows(self) -> list[Row]:
        return [*self.claims, *self.measurements]


def compare(a: Run, b: Run, opts: Options) -> Comparison:
    ma, skipped_a = load_measurements(a.root)
    mb, skipped_b = load_measurements(b.root)
    ca, cb = load_claims(a.root), load_claims(b.root)
    notes = []
    for side, run, claims in (("A", a, ca), ("B", b, cb)):
        if claims is None:
            notes.append(f"{side} ({run.given}) has no readable {CLAIMS_QUANTITIES}: its claims are not compared "
                         "(make it with `snakemake claims`)")
    for side, run, df in (("A", a, ma), ("B", b, mb)):
        if df.empty:
            notes.append(f"{side} ({run.given}) has no long-form measurement table under tables/")
    return Comparison(a, b, opts, diff_provenance(provenance(a), provenance(b)),
                      claim_rows(ca, cb, opts), measurement_rows(ma, mb, opts),
                      {"A": skipped_a, "B": skipped_b}, notes)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m guestio.report.compare", description=__doc__.split("\n\n")[0])
    ap.add_argument("a", help="run A (the baseline): a results dir, an unpacked bundle or a bundle .tar.gz")
    ap.add_argument("b", help="run B (compared with A): the same kinds")
    ap.add_argument("--out", required=True, help="directory for compare.{md,csv,html} and compare-provenance.csv")
    ap.add_argument("--robust", action="store_true", help="median and Mann-Whitney U instead of mean and Welch")
    ap.add_argument("--alpha", type=float, default=SIGNIFICANCE_LEVEL, help="significance level of the mark")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED, help="bootstrap seed")
    ap.add_argument("--resamples", type=int, default=DEFAULT_N_RESAMPLES, help="bootstrap resamples")
    args = ap.parse_args(argv)
    if not 0.0 < args.alpha < 1.0:
        ap.error(f"--alpha must be in (0, 1), not {args.alpha}")
    opts = Options(robust=args.robust, alpha=args.alpha, seed=args.seed, n_resamples=args.resamples)
    with contextlib.ExitStack() as scratch:
        c = compare(locate(args.a, scratch), locate(args.b, scratch), opts)
        paths = write(c, args.out)
    print(summary_text(c))
    for p in paths.values():
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
