"""Fig 3, Fig 4 and Fig 7 (the network experiment) and Table 2, from the long-form table.

The figures follow Fig 1/2/6 (guestio.analysis.figures): bars are means with 95%
percentile-bootstrap CIs (guestio.analysis.stats, the caller's seed), every claim of the
figure's row in claims.yaml is printed with the measured ratio, its CI, Welch's test and
the verdict its rule gives (guestio.report.verdicts.judge), and every figure names
the accelerator (with the TCG warning), QEMU, the guest kernel, the host CPU, the link's
shaping and QEMU's e1000 interrupt mitigation.  Same rcParams and metadata as
guestio.analysis.figures, atomic writes: a redraw gives the same bytes.

* Fig 3: mean ping RTT per path (HostA->HostB, HostB->GuestB, HostA->GuestB) with the
  guest on ``network.ping_nic``;
* Fig 4: netperf TCP_STREAM and iperf3 throughput, and TCP_RR mean latency: native
  (HostB sends to HostA) and the guest with each NIC model (GuestB sends to HostA), the
  paper's direction (its netperf client in HostB / GuestB, the server on HostA);
* Fig 7: the same throughputs on e1000, kernel ``network.variant`` (NAPI) against
  ``network.nonapi_variant``, both with the guest NIC's GRO off (guestio.workloads.netbench.GUEST_GRO),
  and the reverse extra (HostA sends to GuestB), labelled as not the paper's.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from guestio.analysis import figure_data, figure_drawing
from guestio.analysis import figures as base
from guestio.analysis.claim_model import Quantity, selector_alternatives
from guestio.analysis.claims import load_artifacts, load_claims
from guestio.analysis.measurements import DEFAULT_COLUMNS, NOT_APPLICABLE
from guestio.analysis.stats import (DEFAULT_N_RESAMPLES, bootstrap_mean_ci, bootstrap_ratio_ci, bootstrap_sum_ratio_ci,
                                    welch_significance)
from guestio.workloads.netbench import GUEST_GRO

__all__ = ["NetFigureError", "RatioRow", "ratios", "plot", "PATH_LABELS", "NIC_LABELS", "SUMMARY_COLUMNS"]

PATH_LABELS = {"hosta-hostb": "HostA→HostB", "hostb-guestb": "HostB→GuestB", "hosta-guestb": "HostA→GuestB"}
NIC_LABELS = {"rtl8139": "rtl8139", "e1000": "e1000", "virtio-net": "virtio-net"}
METRIC_LABELS = {"netperf_tcp_stream_throughput": "netperf TCP_STREAM", "iperf3_throughput": "iperf3",
                 "netperf_tcp_rr_latency": "netperf TCP_RR mean latency", "ping_rtt": "ping RTT",
                 "netperf_tcp_stream_rx_throughput": "extra: netperf TCP_STREAM, HostA sends"}
# The benchmarks' direction, as guestio.workloads.netbench.plan runs them (named on Fig 4 and Fig 7).
DIRECTION_TEXT = ("direction: netperf/iperf3 client (the sender) in GuestB, natively in HostB; netserver and "
                  "iperf3 -s on HostA (the paper's experiment 2)")
# The columns of the figures' ratio summaries (the claims table reads them: guestio.report).
SUMMARY_COLUMNS = ["figure", "claim", "quantity", "label", "metric", "numerator", "denominator", "ratio", "ci_low",
                   "ci_high", "welch_p", "n_numerator", "n_denominator", "accelerator", "paper", "verdict"]


class NetFigureError(ValueError):
    pass


@dataclass
class RatioRow:
    quantity: Quantity
    ratio: float
    low: float
    high: float
    p: float
    n_num: int
    n_den: int
    accelerator: str
    verdict: str

    def text(self) -> str:
        return (f"{self.quantity.label}: {figure_data.format_ratio(self.ratio, self.low, self.high)}, "
                f"{figure_data.welch_p_text(self.p)}; paper: {self.quantity.paper.text} -> {self.verdict}")


def _select(df: pd.DataFrame, side, metric: str, experiment: str | None) -> pd.DataFrame:
    """Rows of *metric* matching a claim selector; unnamed extra columns must be "-" or their
    default (the figures' convention), except nic and peer, which a selector names when it matters."""
    rows = df[df.metric == metric]
    if experiment:
        rows = rows[rows.experiment == experiment]
    mask = pd.Series(False, index=rows.index)
    for alt in selector_alternatives(side):
        m = pd.Series(True, index=rows.index)
        for column, value in alt.items():
            if column not in rows.columns:
                raise NetFigureError(f"selector column {column!r} is not in the table")
            m &= rows[column].astype(str) == str(value)
        mask |= m
    return rows[mask]


def _values(rows: pd.DataFrame) -> np.ndarray:
    """One value per repetition (its mean): intervals are over independent runs, not over the
    samples of one run (a ping run gives one RTT per echo reply)."""
    v = rows.assign(value=pd.to_numeric(rows["value"], errors="coerce")).dropna(subset=["value"])
    return v.groupby("repetition", sort=True)["value"].mean().to_numpy(float)


def ratios(fig_id: str, df: pd.DataFrame, seed: int, n_resamples: int = DEFAULT_N_RESAMPLES) -> list[RatioRow]:
    """Every ratio quantity of the claim whose artifact is *fig_id*, measured."""
    from guestio.report.verdicts import verdict_of

    out = []
    for claim in load_claims().values():
        if fig_id not in claim.artifact_ids:
            continue
        for q in claim.quantities:
            if not q.is_ratio or q.not_measured:  # no run records it: "not measured here", no ratio
                continue
            num = _values(_select(df, q.numerator, q.metric, q.experiment))
            den = _values(_select(df, q.denominator, q.metric, q.experiment))
            if (num.size == 0 or den.size == 0) and q.role != "effect":
                continue   # a mechanism or check this table lacks: the claims table says "not measured here"
            if num.size == 0 or den.size == 0:
                raise NetFigureError(f"{fig_id}: no rows for quantity {q.id} ({q.metric}; numerator {num.size} "
                                     f"values, denominator {den.size})")
            if q.combine == "sum":   # Fig 3's check: the sum of the denominator paths' means
                parts = [_values(_select(df, alt, q.metric, q.experiment)) for alt in selector_alternatives(q.denominator)]
                ratio, low, high = bootstrap_sum_ratio_ci(num, parts, seed, n_resamples)
                p, den = math.nan, min(parts, key=len)
            else:
                ratio, low, high = bootstrap_ratio_ci(num, den, seed, n_resamples)
                p = welch_significance(num, den)
            rows = _select(df, q.numerator, q.metric, q.experiment)
            acc = ",".join(sorted(set(rows.accelerator)))
            # The claims table's verdict (requirements, runs, rule); "" (does not vote): not tested.
            verdict = verdict_of(q, ratio, low, high, int(num.size), int(den.size), acc).verdict or "not tested"
            out.append(RatioRow(q, ratio, low, high, p, int(num.size), int(den.size), acc, verdict))
    return out


def summary_frame(fig_id: str, rows: Sequence[RatioRow]) -> pd.DataFrame:
    def side(s):
        return " or ".join(", ".join(f"{k}={v}" for k, v in alt.items()) for alt in selector_alternatives(s))
    claim_of = {q.id: c.id for c in load_claims().values() for q in c.quantities}
    return pd.DataFrame([{
        "figure": fig_id, "claim": claim_of.get(r.quantity.id, ""), "quantity": r.quantity.id,
        "label": r.quantity.label, "metric": r.quantity.metric, "numerator": side(r.quantity.numerator),
        "denominator": side(r.quantity.denominator), "ratio": r.ratio, "ci_low": r.low, "ci_high": r.high,
        "welch_p": r.p, "n_numerator": r.n_num, "n_denominator": r.n_den, "accelerator": r.accelerator,
        "paper": r.quantity.paper.text, "verdict": r.verdict} for r in rows], columns=SUMMARY_COLUMNS)


# --------------------------------------------------------------------------------------------
# Drawing


@dataclass
class Bar:
    label: str
    mean: float
    low: float
    high: float
    n: int
    colour: tuple
    hatch: str = ""


def _bar(label: str, values: np.ndarray, seed: int, n_resamples: int, colour, hatch: str = "") -> Bar:
    if values.size == 0:
        return Bar(label, math.nan, math.nan, math.nan, 0, colour, hatch)
    if values.size == 1:
        return Bar(label, float(values[0]), math.nan, math.nan, 1, colour, hatch)
    mean, low, high = bootstrap_mean_ci(values, seed, n_resamples)
    return Bar(label, mean, low, high, int(values.size), colour, hatch)


def _rows(df: pd.DataFrame, metric: str, **columns) -> np.ndarray:
    rows = df[(df.metric == metric) & (df.experiment == "net")]
    for c, v in columns.items():
        rows = rows[rows[c].astype(str) == str(v)]
    return _values(rows)


def _draw_bars(ax, bars: Sequence[Bar], ylabel: str, title: str) -> None:
    x = np.arange(len(bars))
    means = [b.mean for b in bars]
    ax.bar(x, means, color=[b.colour for b in bars], hatch=None, edgecolor="black", linewidth=0.6, width=0.7)
    for i, b in enumerate(bars):
        if b.hatch:
            ax.patches[i].set_hatch(b.hatch)
        if not math.isnan(b.low):
            ax.errorbar([i], [b.mean], yerr=[[b.mean - b.low], [b.high - b.mean]], color="black", capsize=3,
                        linewidth=0.9)
        top = b.high if not math.isnan(b.high) else b.mean
        if not math.isnan(b.mean):
            ax.annotate(f"{b.mean:.3g}\nn={b.n}", (i, top), textcoords="offset points", xytext=(0, 2),
                        ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, [b.label for b in bars])
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9.5)
    finite = [b.high if not math.isnan(b.high) else b.mean for b in bars if not math.isnan(b.mean)]
    ax.set_ylim(0, max(finite) * 1.3 if finite else 1)
    ax.grid(axis="y", linewidth=0.4, alpha=0.5)
    ax.set_axisbelow(True)


def _setting_lines(provenance: Mapping, net: Mapping, variants: Sequence[str], nics: Sequence[str],
                   benchmarks: bool = True) -> list[str]:
    acc, reason = figure_drawing.accelerator_text(provenance)
    lines = [f"accelerator: {(acc or 'unknown').upper()}" + (f" ({reason})" if reason else "")]
    if acc == "tcg":
        lines.append(figure_drawing.TCG_WARNING)
    link = net.get("link", {})
    mitigation = "on" if net.get("e1000_mitigation", True) else "off"
    qemu = figure_drawing.qemu_text(provenance)
    lines.append(f"{qemu if qemu.startswith('QEMU') else 'QEMU ' + qemu} · "
                 f"{figure_drawing.kernel_text(provenance, variants)} "
                 f"(variants {', '.join(variants)}) · {figure_drawing.host_text(provenance)}")
    lines.append(f"testbed: HostA and HostB in network namespaces, veth pair shaped by tc "
                 f"(rate {link.get('rate') or 'none'}, delay {link.get('delay') or 'none'}); GuestB on a tap "
                 f"bridged in HostB; {', '.join(nics)}" + (f"; QEMU e1000 mitigation={mitigation}"
                                                            if "e1000" in nics else ""))
    if benchmarks:
        lines.append(f"{DIRECTION_TEXT}; guest NIC GRO {GUEST_GRO} (set with ethtool and read back: the paper's "
                     "2.6.27 guest had no GRO)")
    return lines


def _render(fig: Figure, out_pdf: Path, out_png: Path) -> None:
    def pdf(tmp):
        fig.savefig(tmp, format="pdf", metadata=base.PDF_METADATA)

    def png(tmp):
        fig.savefig(tmp, format="png", metadata=base.PNG_METADATA)

    base.write_atomic(Path(out_pdf), pdf)
    base.write_atomic(Path(out_png), png)


def _wrap(lines: Sequence[str], width_in: float) -> list[str]:
    import textwrap
    out = []
    for line in lines:
        out += textwrap.wrap(line, int(width_in * 16), subsequent_indent="    ") or [""]
    return out


def _layout(n_panels: int, lines: Sequence[str]) -> tuple[Figure, list]:
    """Panels side by side above a block of text (claims, ratios, setting)."""
    width = max(6.4, 3.4 * n_panels + 0.6)  # room for the title and the text block
    text = _wrap(lines, width)
    text_h = 0.125 * len(text) + 0.15
    plot_h, top_h, tick_h = 2.5, 0.55, 0.55
    height = text_h + tick_h + plot_h + top_h
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    slot = (width - 0.1) / n_panels
    axes = [fig.add_axes([(0.1 + i * slot + 0.75) / width, (text_h + tick_h) / height,
                          (slot - 0.95) / width, plot_h / height]) for i in range(n_panels)]
    fig.text(0.01, 0.1 / height, "\n".join(text), fontsize=6.5, va="bottom", ha="left", linespacing=1.25)
    return fig, axes


def plot(fig_id: str, df: pd.DataFrame, provenance: Mapping, net: Mapping, out_pdf, out_png, seed: int,
         n_resamples: int = DEFAULT_N_RESAMPLES) -> pd.DataFrame:
    """Draw *fig_id* (fig3, fig4 or fig7); returns its ratio summary (SUMMARY_COLUMNS)."""
    import matplotlib

    if fig_id not in ("fig3", "fig4", "fig7"):
        raise NetFigureError(f"unknown network figure {fig_id!r}")
    for c in DEFAULT_COLUMNS:
        if c not in df.columns:
            df[c] = NOT_APPLICABLE
    df = df.astype({c: str for c in DEFAULT_COLUMNS})
    with matplotlib.rc_context(base.RC):
        rows = ratios(fig_id, df, seed, n_resamples)
        artifact = load_artifacts()[fig_id]
        claim = next(c for c in load_claims().values() if fig_id in c.artifact_ids)
        palette = figure_drawing.VARIANT_COLOURS
        variant, nonapi = net["variant"], net["nonapi_variant"]
        panels: list[tuple[list[Bar], str, str]] = []
        if fig_id == "fig3":
            nic = net["ping_nic"]
            bars = [_bar(PATH_LABELS[p], _rows(df, "ping_rtt", target="vm", variant=variant, nic=nic, peer=p),
                         seed, n_resamples, palette[i]) for i, p in enumerate(PATH_LABELS)]
            panels.append((bars, "mean round-trip time (ms)", f"ping, GuestB on {nic} (kernel {variant})"))
            variants, nics = [variant], [nic]
        elif fig_id == "fig4":
            nics = list(net["nics"])
            for metric, unit in (("netperf_tcp_stream_throughput", "Mbit/s"), ("iperf3_throughput", "Mbit/s"),
                                 ("netperf_tcp_rr_latency", "µs")):
                bars = [_bar("native", _rows(df, metric, target="native"), seed, n_resamples,
                             figure_drawing.NATIVE_COLOUR)]
                bars += [_bar(NIC_LABELS[n], _rows(df, metric, target="vm", variant=variant, nic=n), seed,
                              n_resamples, palette[i]) for i, n in enumerate(nics)]
                panels.append((bars, f"{METRIC_LABELS[metric]} ({unit})", METRIC_LABELS[metric]))
            variants = [variant]
        else:
            nics = ["e1000"]
            for metric in ("netperf_tcp_stream_throughput", "iperf3_throughput", "netperf_tcp_stream_rx_throughput"):
                bars = [_bar(f"{v}\n({'NAPI' if v == variant else 'no NAPI'})",
                             _rows(df, metric, target="vm", variant=v, nic="e1000"), seed, n_resamples,
                             palette[i]) for i, v in enumerate((variant, nonapi))]
                panels.append((bars, f"{METRIC_LABELS[metric]} (Mbit/s)", f"{METRIC_LABELS[metric]}, e1000"))
            variants = [variant, nonapi]
        lines = [f"Paper ({claim.paper_id}): {claim.statement}"]
        lines += [f"  {r.text()}" for r in rows]
        lines += _setting_lines(provenance, net, variants, nics, benchmarks=fig_id != "fig3")
        lines.append(f"Bars: mean, 95% CI (percentile bootstrap, {n_resamples} resamples, seed {seed}); "
                     "n = samples (ping: echo replies of all repetitions; benchmarks: repetitions).")
        fig, axes = _layout(len(panels), lines)
        for ax, (bars, ylabel, title) in zip(axes, panels):
            _draw_bars(ax, bars, ylabel, title)
        fig.suptitle(f"{artifact.paper_id}: {artifact.what}", fontsize=10.5, y=1 - 0.12 / fig.get_figheight(),
                     va="top")
        _render(fig, Path(out_pdf), Path(out_png))
    return summary_frame(fig_id, rows)
