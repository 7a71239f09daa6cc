"""A comparison written out: compare.md, compare.csv, compare-provenance.csv and compare.html."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import pandas as pd

from guestio.report.compare_rows import CONDITION, Row, geometric_mean_ratio
from guestio.report.compare_runs import NOT_RECORDED, SECTION_TITLES, ProvenanceDiff
from guestio.report.compare_stats import Options
from guestio.util import write_text_atomic

if TYPE_CHECKING:
    from guestio.report.compare import Comparison

CSV_COLUMNS = ["section", "table", "experiment", *CONDITION, "quantity", "unit", "accelerator_a", "accelerator_b",
               "n_a", "centre_a", "ci_low_a", "ci_high_a", "n_b", "centre_b", "ci_low_b", "ci_high_b",
               "ratio", "change_pct", "test", "p_value", "mark", "verdict_a", "verdict_b", "note"]


def _num(v: float) -> str:
    if not math.isfinite(v):
        return "-"
    if abs(v) >= 1000:
        return f"{v:.0f}"
    return f"{v:.4g}"


def _estimate(est: tuple[float, float, float], n: str) -> str:
    centre, low, high = est
    if not math.isfinite(centre):
        return "-"
    ci = f" [{_num(low)}, {_num(high)}]" if math.isfinite(low) and math.isfinite(high) else ""
    return f"{_num(centre)}{ci} (n={n})"


def _ratio_text(r: Row) -> str:
    return f"{r.ratio:.3f} ({r.change_pct:+.1f}%)" if math.isfinite(r.ratio) else "-"


def _ratio(v: float) -> str:
    return f"{v:.4f}" if math.isfinite(v) else "-"


def _p_text(p: float) -> str:
    return f"{p:.3g}" if math.isfinite(p) else "-"


def condition_text(r: Row) -> str:
    c = r.condition
    if r.section == "claims":
        return f"{r.table}: {c.get('quantity', '')}"
    head = " ".join(c[k] for k in ("target", "variant", "disk") if c.get(k, "-") != "-")
    rest = " ".join(f"{k}={c[k]}" for k in CONDITION if k not in ("target", "variant", "disk")
                    and c.get(k, "-") != "-")
    return " ".join(x for x in (head, rest) if x)


def _accelerators(r: Row) -> str:
    if r.accelerator_a == r.accelerator_b or not (r.accelerator_a and r.accelerator_b):
        return r.accelerator_a or r.accelerator_b or "-"
    return f"{r.accelerator_a} / {r.accelerator_b}"


def table_cells(r: Row) -> list[str]:
    what = r.quantity + (f" ({r.unit})" if r.unit else "")
    verdict = ""
    if r.verdict_a or r.verdict_b:
        verdict = r.verdict_a if r.verdict_a == r.verdict_b else f"{r.verdict_a or '-'} / {r.verdict_b or '-'}"
    return [condition_text(r), what, _accelerators(r), _estimate(r.a, r.n_a), _estimate(r.b, r.n_b),
            _ratio_text(r), _p_text(r.p), r.mark, "; ".join(x for x in (verdict, r.note) if x)]


HEADERS = ["condition", "quantity", "accelerator A / B", "A {centre} [95% CI] (n)", "B {centre} [95% CI] (n)",
           "B/A", "p", "sig", "note"]


def headers(opts: Options, section: str = "measurements") -> list[str]:
    centre = "value" if section == "claims" else "median" if opts.robust else "mean"
    return [h.format(centre=centre) for h in HEADERS]


def groups(c: Comparison) -> list[tuple[str, list[Row]]]:
    """The tables of the page: the claims first, then one per measurement table and experiment."""
    out = []
    if c.claims:
        out.append(("Claims quantities (ratios as the claims table measures them)", c.claims))
    by: dict[tuple[str, str], list[Row]] = {}
    for r in c.measurements:
        by.setdefault((r.table, r.experiment), []).append(r)
    for (table, experiment), rows in sorted(by.items()):
        title = f"tables/{table}.csv" + (f", experiment {experiment}" if experiment != table else "")
        out.append((title, rows))
    return out


def method_text(c: Comparison) -> str:
    o = c.opts
    if o.robust:
        how = ("median of the runs, 95% percentile-bootstrap CI of the median, two-sided Mann-Whitney U test "
               "(it cannot reach p < 0.05 with 3 runs a side: its smallest two-sided p is then 0.1)")
    else:
        how = "mean of the runs, 95% percentile-bootstrap CI of the mean, Welch's two-sided t-test"
    return (f"{how}; bootstrap seed {o.seed}, {o.n_resamples} resamples. `*`: p < {o.alpha:g} "
            "(one test per row, not corrected for the number of rows: at this level about one row in "
            f"{round(1 / o.alpha)} is marked by chance alone). n counts runs (repetitions); a run's "
            "values are averaged first. Claims quantities have a CI and no samples: their p is a z-test "
            "on the two CIs (log scale for positive ratios).")


def summary_text(c: Comparison) -> str:
    gm, n = geometric_mean_ratio(c.measurements)
    gm_c, n_c = geometric_mean_ratio(c.claims)
    marked = [r for r in c.rows if r.mark]
    higher = sum(r.direction == "higher" for r in marked)
    text = (f"Geometric mean of B/A over {n} measurement rows: {_ratio(gm)}"
            + (f"; over {n_c} claims quantities: {_ratio(gm_c)}" if n_c else "")
            + f". {len(marked)} of {len(c.rows)} rows marked significant ({higher} higher in B, "
            f"{len(marked) - higher} lower).")
    return text


def provenance_rows(d: ProvenanceDiff) -> list[tuple[str, str, str, str]]:
    rows = [(SECTION_TITLES.get(s, s), k, va, vb) for s, k, va, vb in d.rows]
    rows += [(SECTION_TITLES.get(s, s), "(whole section)", NOT_RECORDED if side == "A" else "recorded",
              NOT_RECORDED if side == "B" else "recorded") for s, side in d.missing]
    return rows


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(c: Comparison) -> str:
    lines = [f"# Comparison: A = {c.a.given}, B = {c.b.given}", "", method_text(c), "", summary_text(c), "",
             "## What differs between the runs", ""]
    prov = provenance_rows(c.provenance)
    if prov:
        lines += ["| section | key | A | B |", "|---|---|---|---|"]
        lines += ["| " + " | ".join(_md_cell(_short(x)) for x in row) + " |" for row in prov]
    else:
        lines.append("Nothing: every provenance and config key both runs record is the same.")
    lines += ["", f"{c.provenance.same} keys are the same in both.", ""]
    for title, rows in groups(c):
        lines += [f"## {title}", "", "| " + " | ".join(headers(c.opts, rows[0].section)) + " |",
                  "|" + "---|" * len(HEADERS)]
        lines += ["| " + " | ".join(_md_cell(x) for x in table_cells(r)) + " |" for r in rows]
        lines.append("")
    extra = list(c.notes) + [f"{side}: not a long-form measurement table, not compared: {', '.join(files)}"
                             for side, files in sorted(c.skipped.items()) if files]
    if extra:
        lines += ["## Not compared", ""] + [f"- {x}" for x in extra] + [""]
    return "\n".join(lines).rstrip() + "\n"


def frame(c: Comparison) -> pd.DataFrame:
    def record(r: Row) -> dict:
        return {"section": r.section, "table": r.table, "experiment": r.experiment,
                **{k: r.condition.get(k, "-") for k in CONDITION}, "quantity": r.quantity, "unit": r.unit,
                "accelerator_a": r.accelerator_a, "accelerator_b": r.accelerator_b, "n_a": r.n_a,
                "centre_a": r.a[0], "ci_low_a": r.a[1], "ci_high_a": r.a[2], "n_b": r.n_b, "centre_b": r.b[0],
                "ci_low_b": r.b[1], "ci_high_b": r.b[2], "ratio": r.ratio, "change_pct": r.change_pct,
                "test": r.test, "p_value": r.p, "mark": r.mark, "verdict_a": r.verdict_a,
                "verdict_b": r.verdict_b, "note": r.note}
    return pd.DataFrame([record(r) for r in c.rows], columns=CSV_COLUMNS)


def provenance_frame(c: Comparison) -> pd.DataFrame:
    return pd.DataFrame(provenance_rows(c.provenance), columns=["section", "key", "a", "b"])


_CSS = """body{font-family:sans-serif;margin:2em;max-width:110em}
table{border-collapse:collapse;margin-bottom:1.5em}th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#eee}tr.sig td{background:#fff3cd}td.num{text-align:right;font-variant-numeric:tabular-nums}
p.summary{font-weight:bold}"""


def _html_table(head: Sequence[str], rows: Iterable[tuple[Sequence[str], str]], numeric: set[int] = frozenset()) -> list[str]:
    out = ["<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for cells, css in rows:
        tds = "".join(("<td class=\"num\">" if i in numeric else "<td>") + html.escape(str(x)) + "</td>"
                      for i, x in enumerate(cells))
        out.append((f'<tr class="{css}">' if css else "<tr>") + tds + "</tr>")
    out.append("</table>")
    return out


def html_page(c: Comparison) -> str:
    title = f"Comparison: A = {c.a.given}, B = {c.b.given}"
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>{html.escape(title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
             f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(method_text(c))}</p>",
             f'<p class="summary">{html.escape(summary_text(c))}</p>', "<h2>What differs between the runs</h2>"]
    prov = provenance_rows(c.provenance)
    if prov:
        parts += _html_table(["section", "key", "A", "B"], [([s, k, _short(a, 300), _short(b, 300)], "")
                                                            for s, k, a, b in prov])
    else:
        parts.append("<p>Nothing: every provenance and config key both runs record is the same.</p>")
    parts.append(f"<p>{c.provenance.same} keys are the same in both.</p>")
    for title_, rows in groups(c):
        parts.append(f"<h2>{html.escape(title_)}</h2>")
        parts += _html_table(headers(c.opts, rows[0].section), [(table_cells(r), "sig" if r.mark else "") for r in rows],
                             numeric={3, 4, 5, 6})
    extra = list(c.notes) + [f"{side}: not a long-form measurement table, not compared: {', '.join(files)}"
                             for side, files in sorted(c.skipped.items()) if files]
    if extra:
        parts += ["<h2>Not compared</h2>", "<ul>"] + [f"<li>{html.escape(x)}</li>" for x in extra] + ["</ul>"]
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"


OUTPUTS = {"markdown": "compare.md", "csv": "compare.csv", "provenance": "compare-provenance.csv",
           "html": "compare.html"}


def write(c: Comparison, out: str | Path) -> dict[str, Path]:
    out = Path(out)
    paths = {k: out / v for k, v in OUTPUTS.items()}
    write_text_atomic(paths["csv"], frame(c).to_csv(index=False, lineterminator="\n"))
    write_text_atomic(paths["provenance"], provenance_frame(c).to_csv(index=False, lineterminator="\n"))
    write_text_atomic(paths["html"], html_page(c))
    write_text_atomic(paths["markdown"], markdown(c))
    return paths
