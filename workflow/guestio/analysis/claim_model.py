"""The objects of the paper's claims file (``claims.yaml``): what a claim, its quantities, their
verdict rules and the figures that draw them are, and the vocabularies their fields take.

Selectors (numerator, denominator, condition) and the paper's numbers are kept
as tuples of (name, value) pairs, so that every object is immutable; ``dict()``
of one gives the mapping (``selector_alternatives()`` the mappings a selector accepts).
``guestio.analysis.claims`` loads and checks the file into these objects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple

__all__ = ["Paper", "Artifact", "PaperValue", "Site", "VerdictRule", "Quantity", "Claim", "Panel", "FigureClaim",
           "ARTIFACT_KINDS", "MEASURES", "ROLES", "RELATIONS", "DIRECTIONS", "VERDICT_RULES", "TIMING_MEASURES",
           "COMBINES", "selector_alternatives"]

ARTIFACT_KINDS = ("figure", "table", "text")
MEASURES = ("throughput", "cpu", "latency", "exits", "share", "sites")
RELATIONS = ("~", ">", "<", "=", "!=", "")
DIRECTIONS = (">", "<", "!=")
#: verdict rule kind -> (required fields, optional fields), besides "kind".
VERDICT_RULES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "ratio_ci_contains": (("value", "tolerance"), ("reference",)),
    "direction": (("expect", "reference"), ("value", "tolerance")),
    "sites_include": (("sites",), ("top", "at_least")),
    "not_tested": (("reason",), ()),
}

#: what a quantity may be (claims.yaml `role`): the paper's claimed effect, the mechanism of a
#: modification (the exits or interrupts it removes), which can be tested where the effect cannot,
#: or a check of a premise of the paper's method that this testbed can test (Fig 3's paths add up).
ROLES = ("effect", "mechanism", "check")
#: measures that are timing: under TCG they are the emulator's, so a quantity of them requires kvm
TIMING_MEASURES = ("throughput", "cpu", "latency")
#: how a quantity's denominator alternatives combine: rows of any of them, or the sum of their means
COMBINES = ("any", "sum")


@dataclass(frozen=True)


class Paper:
    citation: str
    testbed: str     # one line, as the figures print it beside the paper's claim


@dataclass(frozen=True)


class Artifact:
    id: str
    paper_id: str
    kind: str                 # figure | table | text
    what: str                 # PAPER.md's "what" column
    workload: str             # PAPER.md's "workload" column
    built_by: str | None      # the Snakemake rule that makes guestio's version, None if none yet
    title: str = ""           # figures: guestio's figure title
    notes: tuple[str, ...] = ()  # figures: lines the figure prints under the claim (what a reader must know)


@dataclass(frozen=True)


class PaperValue:
    text: str                          # in words, as a figure prints it
    relation: str                      # one of RELATIONS
    value: float                       # nan when the text states no number
    numbers: tuple[tuple[str, float], ...] = ()   # the text's own numbers, by name


class Site(NamedTuple):
    """An exit site a sites_include rule looks for: its guest function and, where given, its caller;
    ``requires``: what a run needs for the site to exist at all (verdicts.yaml requirements), with
    ``reason`` saying why."""

    function: str
    caller: str | None = None
    requires: tuple[str, ...] = ()
    reason: str = ""


@dataclass(frozen=True)


class VerdictRule:
    kind: str                                   # one of VERDICT_RULES
    params: tuple[tuple[str, Any], ...] = ()    # its fields, in the file's order

    def __getitem__(self, key: str) -> Any:
        return dict(self.params)[key]

    def get(self, key: str, default: Any = None) -> Any:
        return dict(self.params).get(key, default)


@dataclass(frozen=True)


class Panel:
    """One panel of a figure: a ratio drawn with the paper's value of it."""

    metric: str        # CSV metric
    quantity: str      # "throughput" (plotted in MiB/s) or "cpu" (%)
    title: str         # panel title
    ratio_label: str   # what the ratio is, e.g. "VM/native block write throughput"
    paper: str         # the paper's value of that ratio, in words
    paper_relation: str = ""          # machine-readable: "~" (about), ">" , "<" or "" (not stated)
    paper_value: float = math.nan     # the number the relation refers to


@dataclass(frozen=True)


class Quantity:
    id: str
    label: str
    measure: str                                  # one of MEASURES
    metric: str
    paper: PaperValue
    verdict_rule: VerdictRule
    experiment: str | None = None
    numerator: tuple[tuple[str, str], ...] | None = None     # column -> value selectors
    denominator: tuple[tuple[str, str], ...] | None = None
    condition: tuple[tuple[str, str], ...] | None = None
    figure: str | None = None                     # the artifact id of the figure drawing it
    panel: Panel | None = None                    # how that figure draws it
    note: str = ""
    requires: tuple[str, ...] = ()                # verdicts.yaml requirements (kvm, two_hosts, x86_32, ...)
    role: str = "effect"                          # one of ROLES
    routes: tuple[str, ...] = ()                  # names of the numerator's alternatives, judged apart
    not_measured: str = ""                        # why no run records it (then it is "not measured here")
    combine: str = "any"                          # one of COMBINES: the denominator's alternatives

    @property
    def is_ratio(self) -> bool:
        return self.numerator is not None


@dataclass(frozen=True)


class Claim:
    """One row of PAPER.md's table: the paper's statement and the quantities that test it."""

    id: str
    paper_id: str
    statement: str                      # PAPER.md's "claim in the text", verbatim
    artifacts: tuple[Artifact, ...]     # the artifacts that test it
    quantities: tuple[Quantity, ...]
    note: str = ""

    @property
    def artifact_ids(self) -> tuple[str, ...]:
        return tuple(a.id for a in self.artifacts)

    @property
    def figure_panels(self) -> tuple[Panel, ...]:
        """The panels of the figures that draw this claim (empty when no figure does), in order."""
        return tuple(q.panel for q in self.quantities if q.figure is not None)

    def quantity(self, quantity_id: str) -> Quantity:
        for q in self.quantities:
            if q.id == quantity_id:
                return q
        raise KeyError(f"claim {self.id}: no quantity {quantity_id!r}; quantities: "
                       f"{', '.join(q.id for q in self.quantities)}")


@dataclass(frozen=True)


class FigureClaim:
    """What one figure draws: its claim and the panels, all with one numerator and denominator."""

    fig_id: str             # "fig1"
    paper_id: str           # "Fig 1"
    title: str
    claim: str              # the claim as the paper's text states it (PAPER.md)
    experiment: str         # CSV experiment
    numerator: Mapping[str, str] = field(hash=False)    # column -> value: {"target": "vm", "variant": "baseline"}
    denominator: Mapping[str, str] = field(hash=False)  # {"target": "native"}; a VM one pairs by setting
    panels: tuple[Panel, ...] = ()
    claim_id: str = ""
    testbed: str = ""       # the paper's testbed, printed beside its claim
    notes: tuple[str, ...] = ()  # the artifact's notes, printed under the claim


def selector_alternatives(selector) -> list[dict[str, str]]:
    """A selector as the list of column -> value mappings it accepts (rows match any of them).

    A selector is a mapping, a tuple of (column, value) pairs, or a list/tuple of either.
    """
    if isinstance(selector, Mapping):
        return [dict(selector)]
    items = list(selector)
    if items and all(isinstance(i, tuple) and len(i) == 2 and isinstance(i[0], str) for i in items):
        return [dict(items)]
    return [alt for item in items for alt in selector_alternatives(item)]
