"""Figures 1, 2 and 6 of Zhang et al. (2010), reproduced from the long-form results CSV.

What each figure is about (``FIGURE_CLAIMS``: its title, the paper's claim, the
ratios it states and the paper's values of them) comes from the claims file
(``guestio.analysis.claims``, ``claims.yaml``).  Every number drawn or written comes from
``guestio.analysis.stats`` with the caller's seed, so the bars, the error bars, the
annotation and the summary table agree and are identical on every rerun.

Input: the long-form CSV (one row per measurement) with the columns of
``COLUMNS`` and the run's provenance dict.  Values are taken per condition in
repetition order; NaN values (a benchmark that reported nothing) are left out
and the repetition counts shown on the figure count only real values.

Output files are byte-identical for identical inputs: matplotlib's own
defaults (not the user's matplotlibrc) plus pinned settings, the Agg/PDF
renderers, no dates or software strings in the metadata, and an atomic write
(temporary file in the same directory, then rename).

This module draws and writes; beside it ``figure_data`` selects the rows and computes the bars
and ratios, and ``figure_drawing`` lays out the figure.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import matplotlib
import pandas as pd
from matplotlib.figure import Figure

from guestio.analysis.claim_model import FigureClaim
from guestio.analysis.figure_data import Bar, Ratio, compute, figure_spec, format_ratio
from guestio.analysis.figure_drawing import draw, figure_texts, tick_line
from guestio.analysis.placeholders import resolve_placeholders
from guestio.analysis.stats import DEFAULT_CONFIDENCE, DEFAULT_N_RESAMPLES
from guestio.util import atomic_path

# Pinned on top of matplotlib's built-in defaults (a user's matplotlibrc is ignored).
RC = {
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],   # ships with matplotlib
    "font.size": 9.0,
    "axes.titlesize": 11.0,
    "axes.labelsize": 9.5,
    "xtick.labelsize": 8.5,
    "ytick.labelsize": 8.5,
    "axes.unicode_minus": True,
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "savefig.bbox": None,                 # keep the computed layout; "tight" would re-measure text
    "pdf.fonttype": 42,                   # embedded TrueType: text stays selectable and searchable
    "pdf.compression": 6,
    "path.simplify": True,
    "svg.hashsalt": "guestio",
}
PDF_METADATA = {"Creator": "guestio figures.py", "Producer": None, "CreationDate": None, "ModDate": None}
PNG_METADATA = {"Software": None}


@dataclass
class FigureResult:
    fig_id: str
    figure: Figure
    texts: list[str]                 # every text drawn: titles, annotations, tick labels, footer
    ratios: list[Ratio]
    bars: dict[str, list[Bar]]       # metric -> bars in drawing order
    tcg: bool
    summary: pd.DataFrame            # the same numbers as summary_table()
    outputs: list[Path] = field(default_factory=list)


def summary_table(df: pd.DataFrame, fig_id: str, seed: int, n_resamples: int = DEFAULT_N_RESAMPLES,
                  confidence: float = DEFAULT_CONFIDENCE) -> pd.DataFrame:
    """The reproduced ratios of one figure with their bootstrap CIs, one row per ratio."""
    spec = resolve_placeholders(figure_spec(fig_id))
    _, _, ratios = compute(df, spec, seed, n_resamples, confidence)
    return summary_frame(spec, ratios, seed, n_resamples, confidence)


def summary_frame(spec: FigureClaim, ratios: list[Ratio], seed: int, n_resamples: int,
             confidence: float) -> pd.DataFrame:
    records = [{
        "figure": spec.fig_id, "paper_figure": spec.paper_id, "metric": r.panel.metric,
        "ratio_label": r.panel.ratio_label, "numerator": r.numerator.short(), "denominator": r.denominator.short(),
        "paper": r.panel.paper, "paper_relation": r.panel.paper_relation, "paper_value": r.panel.paper_value,
        "ratio": r.ratio, "ci_low": r.low, "ci_high": r.high, "confidence": confidence,
        "n_numerator": r.n_numerator, "n_denominator": r.n_denominator,
        "mean_numerator": r.mean_numerator, "mean_denominator": r.mean_denominator, "unit": r.unit,
        "welch_p": r.p_value, "significant": bool(r.mark), "accelerator": r.numerator.accelerator,
        "n_resamples": n_resamples, "seed": seed,
    } for r in ratios]
    return pd.DataFrame.from_records(records)


def summary_markdown(table: pd.DataFrame) -> str:
    """A Markdown table of ``summary_table``'s result (no tabulate needed)."""
    head = ["figure", "ratio", "numerator / denominator", "paper", "here (95% CI)", "Welch p", "n"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table.itertuples(index=False):
        p = "n/a" if math.isnan(r.welch_p) else f"{r.welch_p:.3g}{' *' if r.significant else ''}"
        lines.append("| " + " | ".join([
            r.paper_figure, r.ratio_label, f"{r.numerator} / {r.denominator}", r.paper,
            format_ratio(r.ratio, r.ci_low, r.ci_high), p, f"{r.n_numerator} / {r.n_denominator}"]) + " |")
    return "\n".join(lines) + "\n"


def write_summary_csv(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    return write_atomic(Path(path), lambda tmp: table.to_csv(tmp, index=False, lineterminator="\n"))


# --- writing ---------------------------------------------------------------------------------------

def write_atomic(path: Path, write) -> Path:
    with atomic_path(path) as tmp:
        write(tmp)
    return path


def plot_comparison(fig_id: str, df: pd.DataFrame, provenance: Mapping | None,
                    out_pdf: str | os.PathLike | None, out_png: str | os.PathLike | None, seed: int,
                    n_resamples: int = DEFAULT_N_RESAMPLES,
                    confidence: float = DEFAULT_CONFIDENCE,
                    defaults: Mapping[str, str] | None = None) -> FigureResult:
    """Draw figure ``fig_id`` ("fig1", "fig2", "fig6") and write it as PDF and PNG.

    Raises FigureDataError (naming the figure) when ``df`` lacks rows it needs.
    Returns the figure, its texts and the numbers drawn.  ``out_pdf``/``out_png``
    may be None to skip that file.  ``defaults``: the default condition's value of the extra
    columns (qemu, guest_scheduler, ...) that a claim's selector leaves unnamed.
    """
    spec = resolve_placeholders(figure_spec(fig_id), defaults)   # e.g. the host scheduler in CFQ's place
    provenance = provenance or {}
    pairs, bars, ratios = compute(df, spec, seed, n_resamples, confidence, defaults)
    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        matplotlib.rcParams.update(RC)
        tick = tick_line(df, [c for pair in pairs for c in pair])
        fig, tcg = draw(spec, provenance, pairs, bars, ratios, seed, n_resamples, confidence,
                         notes=[tick] if tick else [])
        outputs = []
        if out_pdf is not None:
            outputs.append(write_atomic(Path(out_pdf), lambda tmp: fig.savefig(tmp, format="pdf",
                                                                           metadata=PDF_METADATA)))
        if out_png is not None:
            outputs.append(write_atomic(Path(out_png), lambda tmp: fig.savefig(tmp, format="png",
                                                                           metadata=PNG_METADATA)))
    summary = summary_frame(spec, ratios, seed, n_resamples, confidence)
    return FigureResult(fig_id, fig, figure_texts(fig), ratios, bars, tcg, summary, outputs)
