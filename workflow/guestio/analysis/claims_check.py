"""Checking the claims file (``claims.yaml``) into its objects (``guestio.analysis.claim_model``).

``check(data)`` returns the parsed objects and every problem of the file at once, each naming
the claim (or artifact) and the field, e.g.::

    claim fig1, quantities[0].verdict_rule: unknown key 'tolerence'; allowed keys: kind, tolerance, value
    claim fig6.artifacts[1]: 'fig9' is not an artifact; artifacts: fig1, fig2, ...

``guestio.analysis.claims`` raises them as one ``ClaimsError``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Mapping

import yaml

from guestio.analysis.claim_model import (ARTIFACT_KINDS, COMBINES, DIRECTIONS, MEASURES, RELATIONS, ROLES,
                                          TIMING_MEASURES, VERDICT_RULES, Artifact, Claim, FigureClaim, Panel,
                                          Paper, PaperValue, Quantity, Site, VerdictRule, selector_alternatives)
from guestio.analysis.measurements import COLUMNS as MEASUREMENT_COLUMNS

YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)   # libyaml's where PyYAML has it: the same, faster
#: The verdict rules' statement (guestio.report.verdicts applies it); its `requirements` are the
#: names a quantity's or a site's `requires` may use.
VERDICTS_FILE = Path(__file__).resolve().parents[1] / "report" / "verdicts.yaml"


def requirement_names() -> tuple[str, ...]:
    data = yaml.load(VERDICTS_FILE.read_text(encoding="utf-8"), Loader=YAML_LOADER) or {}
    return tuple((data.get("requirements") or {}).keys())


_ID = re.compile(r"^[a-z0-9_]+$")   # claim, artifact and quantity ids

_TOP_KEYS = ({"paper", "artifacts", "claims"}, set())
_PAPER_INFO_KEYS = ({"citation", "testbed"}, set())
_ARTIFACT_KEYS = ({"paper_id", "kind", "what", "workload", "built_by"}, {"title", "notes"})
_CLAIM_KEYS = ({"id", "paper_id", "statement", "artifacts", "quantities"}, {"note"})
_QUANTITY_KEYS = ({"id", "label", "measure", "metric", "paper", "verdict_rule"},
                  {"experiment", "numerator", "denominator", "condition", "panel", "note", "requires", "role",
                   "routes", "not_measured", "combine"})
_PAPER_KEYS = ({"text", "relation", "value"}, {"numbers"})
_PANEL_KEYS = ({"figure", "title"}, set())
_SITE_KEYS = ({"function"}, {"caller", "requires", "reason"})


class _Problems:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, where: str, what: str) -> None:
        self.lines.append(f"{where}: {what}")


def _member(value: Any, allowed) -> bool:
    """``value in allowed`` for a string; False for anything else (a list or mapping is never a name)."""
    return isinstance(value, str) and value in allowed


def _keys(p: _Problems, where: str, node: Any, keys: tuple[set[str], set[str]]) -> bool:
    """Check a mapping's keys; False (and a problem) when node is not a mapping."""
    required, optional = keys
    if not isinstance(node, Mapping):
        p.add(where, f"expected a mapping with keys {', '.join(sorted(required | optional))}, "
                     f"got {type(node).__name__}")
        return False
    allowed = required | optional
    for key in node:
        if key not in allowed:
            p.add(where, f"unknown key {key!r}; allowed keys: {', '.join(sorted(allowed))}")
    for key in sorted(required - set(node)):
        p.add(where, f"missing field {key!r}")
    return True


def _text(p: _Problems, where: str, node: Mapping, key: str, *, empty: bool = False) -> str:
    value = node.get(key)
    if key not in node:
        return ""
    if not isinstance(value, str) or (not empty and not value.strip()):
        p.add(f"{where}.{key}", f"expected {'a' if empty else 'a non-empty'} string, got {value!r}")
        return ""
    return value


def _number(p: _Problems, where: str, value: Any, *, nullable: bool = False, minimum: float | None = None) -> float:
    if value is None and nullable:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        p.add(where, f"expected a number{' or null' if nullable else ''}, got {value!r}")
        return math.nan
    if minimum is not None and value < minimum:
        p.add(where, f"must be at least {minimum:g}, got {value!r}")
    return float(value)


def _selector(p: _Problems, where: str, node: Any, drawn: bool):
    """column -> value pairs; or, for a list of mappings (any of them), a tuple of those."""
    if isinstance(node, list):
        if not node:
            p.add(where, "expected a non-empty list of mappings of column -> value")
            return None
        alternatives = [_selector(p, f"{where}[{i}]", item, drawn) for i, item in enumerate(node)]
        return tuple(alternatives) if all(a is not None for a in alternatives) else None
    if not isinstance(node, Mapping) or not node:
        p.add(where, f"expected a non-empty mapping of column -> value, got {node!r}")
        return None
    out = []
    for column, value in node.items():
        if not isinstance(column, str) or not column:
            p.add(where, f"column {column!r} is not a name")
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            p.add(f"{where}.{column}", f"expected a string or number, got {value!r}")
            continue
        if drawn and column not in MEASUREMENT_COLUMNS:
            p.add(f"{where}.{column}", f"not a column of the measurement table (a figure draws this "
                                       f"quantity); columns: {', '.join(MEASUREMENT_COLUMNS)}")
        out.append((column, str(value)))
    return tuple(out)


def _as_side(selector):
    """A selector as a figure uses it: one mapping, or a list of mappings."""
    alternatives = selector_alternatives(selector)
    return alternatives[0] if len(alternatives) == 1 else alternatives


def _verdict_rule(p: _Problems, where: str, node: Any, measure: str) -> VerdictRule | None:
    if not isinstance(node, Mapping) or "kind" not in node:
        p.add(where, f"expected a mapping with a 'kind' ({', '.join(VERDICT_RULES)}), got {node!r}")
        return None
    kind = node["kind"]
    if not _member(kind, VERDICT_RULES):
        p.add(f"{where}.kind", f"{kind!r} is not a verdict rule; kinds: {', '.join(VERDICT_RULES)}")
        return None
    required, optional = VERDICT_RULES[kind]
    _keys(p, where, node, ({"kind", *required}, set(optional)))
    params: dict[str, Any] = {}
    if kind == "ratio_ci_contains":
        params["value"] = _number(p, f"{where}.value", node.get("value"))
        params["tolerance"] = _number(p, f"{where}.tolerance", node.get("tolerance"), minimum=0.0)
        if "reference" in node:
            params["reference"] = _number(p, f"{where}.reference", node.get("reference"))
    elif kind == "direction":
        expect = node.get("expect")
        if not _member(expect, DIRECTIONS):
            p.add(f"{where}.expect", f"{expect!r} is not allowed; allowed values: {', '.join(DIRECTIONS)}")
        params["expect"] = expect
        params["reference"] = _number(p, f"{where}.reference", node.get("reference"))
        if "value" in node:
            params["value"] = _number(p, f"{where}.value", node.get("value"))
        if "tolerance" in node:
            params["tolerance"] = _number(p, f"{where}.tolerance", node.get("tolerance"), minimum=0.0)
        if expect == "!=" and "value" in node:
            p.add(f"{where}.value", "'!=' takes no value: its tolerance is the least change that is noticeable")
    elif kind == "sites_include":
        sites = node.get("sites")
        parsed = []
        if not isinstance(sites, list) or not sites:
            p.add(f"{where}.sites", f"expected a non-empty list of {{function, caller}}, got {sites!r}")
        else:
            for i, site in enumerate(sites):
                sw = f"{where}.sites[{i}]"
                if _keys(p, sw, site, _SITE_KEYS):
                    requires = _requires(p, sw, site)
                    reason = _text(p, sw, site, "reason")
                    if requires and not reason:
                        p.add(f"{sw}.reason", "a site with 'requires' needs the reason it may not exist")
                    parsed.append(Site(_text(p, sw, site, "function"), _text(p, sw, site, "caller") or None,
                                       requires, reason))
        params["sites"] = tuple(parsed)
        for key in ("top", "at_least"):
            if key in node:
                value = node[key]
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    p.add(f"{where}.{key}", f"expected a positive integer, got {value!r}")
                params[key] = value
        if isinstance(params.get("at_least"), int) and parsed and params["at_least"] > len(parsed):
            p.add(f"{where}.at_least", f"{params['at_least']} is more than the {len(parsed)} sites listed")
        if measure != "sites":
            p.add(f"{where}.kind", f"sites_include judges exit sites; the quantity's measure is {measure!r}")
    elif kind == "not_tested":
        params["reason"] = _text(p, where, node, "reason")
    if kind in ("ratio_ci_contains", "direction") and measure == "sites":
        p.add(f"{where}.kind", f"{kind} judges a number; a quantity of measure 'sites' needs sites_include")
    return VerdictRule(kind, tuple(params.items()))


def _requires(p: _Problems, where: str, node: Mapping) -> tuple[str, ...]:
    """The requirement names of a quantity or site (verdicts.yaml `requirements`)."""
    raw = node.get("requires", [])
    known = requirement_names()
    if not isinstance(raw, list) or not all(isinstance(r, str) for r in raw):
        p.add(f"{where}.requires", f"expected a list of requirement names ({', '.join(known)}), got {raw!r}")
        return ()
    for r in raw:
        if r not in known:
            p.add(f"{where}.requires", f"{r!r} is not a requirement of {VERDICTS_FILE.name}; known: {', '.join(known)}")
    return tuple(raw)


def _paper(p: _Problems, where: str, node: Any) -> PaperValue | None:
    if not _keys(p, where, node, _PAPER_KEYS):
        return None
    text = _text(p, where, node, "text")
    relation = node.get("relation", "")
    if not _member(relation, RELATIONS):
        p.add(f"{where}.relation", f"{relation!r} is not allowed; allowed values: "
                                   f"{', '.join(repr(r) for r in RELATIONS)}")
    value = _number(p, f"{where}.value", node.get("value"), nullable=True) if "value" in node else math.nan
    if relation == "" and not math.isnan(value):
        p.add(f"{where}.value", "a value needs a relation (relation '' means the text states no number)")
    if relation in RELATIONS and relation != "" and node.get("value", 0) is None:
        p.add(f"{where}.value", f"relation {relation!r} needs the number it refers to")
    numbers = []
    raw = node.get("numbers", {})
    if not isinstance(raw, Mapping):
        p.add(f"{where}.numbers", f"expected a mapping of name -> number, got {raw!r}")
    else:
        for name, number in raw.items():
            numbers.append((str(name), _number(p, f"{where}.numbers.{name}", number)))
    return PaperValue(text, relation if relation in RELATIONS else "", value, tuple(numbers))


def _artifacts(p: _Problems, node: Any) -> dict[str, Artifact]:
    out: dict[str, Artifact] = {}
    if not isinstance(node, Mapping) or not node:
        p.add("artifacts", "expected a non-empty mapping of artifact id -> artifact")
        return out
    for aid, a in node.items():
        where = f"artifact {aid}"
        if not isinstance(aid, str) or not _ID.match(aid):
            p.add(where, f"id {aid!r} does not match {_ID.pattern}")
            continue
        if not _keys(p, where, a, _ARTIFACT_KEYS):
            continue
        kind = a.get("kind")
        if "kind" in a and not _member(kind, ARTIFACT_KINDS):
            p.add(f"{where}.kind", f"{kind!r} is not allowed; allowed values: {', '.join(ARTIFACT_KINDS)}")
        built_by = a.get("built_by")
        if built_by is not None and (not isinstance(built_by, str) or not built_by):
            p.add(f"{where}.built_by", f"expected a rule name or null, got {built_by!r}")
        title = _text(p, where, a, "title")
        if title and kind != "figure":
            p.add(f"{where}.title", "only figures have a title")
        notes = a.get("notes", [])
        if not isinstance(notes, list) or not all(isinstance(n, str) and n.strip() for n in notes):
            p.add(f"{where}.notes", f"expected a list of non-empty strings, got {notes!r}")
            notes = []
        if notes and kind != "figure":
            p.add(f"{where}.notes", "only figures print notes")
        out[aid] = Artifact(aid, _text(p, where, a, "paper_id"), kind, _text(p, where, a, "what"),
                            _text(p, where, a, "workload"), built_by, title, tuple(n.strip() for n in notes))
    return out


def _quantity(p: _Problems, where: str, node: Any, claim_artifacts: list[str],
              artifacts: Mapping[str, Artifact]) -> Quantity | None:
    if not _keys(p, where, node, _QUANTITY_KEYS):
        return None
    qid = node.get("id")
    if "id" in node and (not isinstance(qid, str) or not _ID.match(qid)):
        p.add(f"{where}.id", f"{qid!r} does not match {_ID.pattern}")
    measure = node.get("measure")
    if "measure" in node and not _member(measure, MEASURES):
        p.add(f"{where}.measure", f"{measure!r} is not allowed; allowed values: {', '.join(MEASURES)}")
    figure = title = None
    if "panel" in node:
        pw = f"{where}.panel"
        if _keys(p, pw, node["panel"], _PANEL_KEYS):
            figure, title = node["panel"].get("figure"), _text(p, pw, node["panel"], "title")
            if not _member(figure, artifacts):
                p.add(f"{pw}.figure", f"{figure!r} is not an artifact; artifacts: {', '.join(artifacts)}")
                figure = None
            elif artifacts[figure].kind != "figure":
                p.add(f"{pw}.figure", f"{figure!r} is a {artifacts[figure].kind}, not a figure")
                figure = None
            elif figure not in claim_artifacts:
                p.add(f"{pw}.figure", f"{figure!r} is not among the claim's artifacts "
                                      f"({', '.join(claim_artifacts)})")
            if "experiment" not in node:
                p.add(f"{where}.experiment", "missing field 'experiment' (a figure draws this quantity)")
    drawn = figure is not None
    has_ratio = "numerator" in node or "denominator" in node
    numerator = denominator = condition = None
    if has_ratio and "condition" in node:
        p.add(where, "has both numerator/denominator and condition; a quantity is a ratio or one condition")
    if has_ratio:
        for key in ("numerator", "denominator"):
            if key not in node:
                p.add(where, f"missing field {key!r} (a ratio needs numerator and denominator)")
        numerator = _selector(p, f"{where}.numerator", node.get("numerator"), drawn) if "numerator" in node else None
        denominator = (_selector(p, f"{where}.denominator", node.get("denominator"), drawn)
                       if "denominator" in node else None)
    elif "condition" in node:
        condition = _selector(p, f"{where}.condition", node["condition"], drawn)
    else:
        p.add(where, "missing field 'numerator'/'denominator' (a ratio) or 'condition' (one condition)")
    if drawn and not has_ratio:
        p.add(f"{where}.panel", "a figure draws ratios: the quantity needs numerator and denominator")
    experiment = _text(p, where, node, "experiment") or None
    paper = _paper(p, f"{where}.paper", node.get("paper")) if "paper" in node else None
    rule = (_verdict_rule(p, f"{where}.verdict_rule", node["verdict_rule"], measure)
            if "verdict_rule" in node else None)
    if paper is None or rule is None:
        return None
    label, metric = _text(p, where, node, "label"), _text(p, where, node, "metric")
    panel = (Panel(metric, measure, title or "", label, paper.text, paper.relation, paper.value)
             if drawn else None)
    role = node.get("role", "effect")
    if not _member(role, ROLES):
        p.add(f"{where}.role", f"{role!r} is not allowed; allowed values: {', '.join(ROLES)}")
    routes = node.get("routes", [])
    if not isinstance(routes, list) or not all(isinstance(r, str) and r.strip() for r in routes):
        p.add(f"{where}.routes", f"expected a list of names, one per numerator alternative, got {routes!r}")
        routes = []
    elif routes and (numerator is None or len(selector_alternatives(numerator)) != len(routes)):
        p.add(f"{where}.routes", f"{len(routes)} names for "
                                 f"{len(selector_alternatives(numerator)) if numerator else 0} numerator alternatives")
    requires = _requires(p, where, node)
    if (measure in TIMING_MEASURES and role != "check" and "kvm" not in requires
            and (rule is None or rule.kind != "not_tested" or "requires" in node)):
        p.add(f"{where}.requires", f"a {measure} quantity is timing, which TCG cannot test: it needs "
                                   "'requires: [kvm]' (or role: check, for a premise that does not time virtualisation)")
    combine = node.get("combine", "any")
    if not _member(combine, COMBINES):
        p.add(f"{where}.combine", f"{combine!r} is not allowed; allowed values: {', '.join(COMBINES)}")
    elif combine == "sum" and (denominator is None or len(selector_alternatives(denominator)) < 2):
        p.add(f"{where}.combine", "sum needs a denominator of two or more alternatives")
    return Quantity(id=qid, label=label, measure=measure, metric=metric, paper=paper, verdict_rule=rule,
                    experiment=experiment, numerator=numerator, denominator=denominator, condition=condition,
                    figure=figure, panel=panel, note=_text(p, where, node, "note"),
                    requires=requires, role=role if role in ROLES else "effect",
                    routes=tuple(routes), not_measured=_text(p, where, node, "not_measured"),
                    combine=combine if combine in COMBINES else "any")


def _claims(p: _Problems, node: Any, artifacts: Mapping[str, Artifact]) -> dict[str, Claim]:
    out: dict[str, Claim] = {}
    if not isinstance(node, list) or not node:
        p.add("claims", "expected a non-empty list of claims")
        return out
    for i, c in enumerate(node):
        cid = c.get("id") if isinstance(c, Mapping) else None
        where = f"claim {cid}" if isinstance(cid, str) else f"claims[{i}]"
        if not _keys(p, where, c, _CLAIM_KEYS):
            continue
        if "id" not in c:
            continue  # reported as a missing field
        if not isinstance(cid, str) or not _ID.match(cid):
            p.add(f"{where}.id", f"{cid!r} does not match {_ID.pattern}")
            continue
        if cid in out:
            p.add(f"{where}.id", "appears more than once")
            continue
        ids = c.get("artifacts")
        claim_artifacts: list[str] = []
        if "artifacts" not in c:
            pass  # reported as a missing field
        elif not isinstance(ids, list) or not ids:
            p.add(f"{where}.artifacts", f"expected a non-empty list of artifact ids, got {ids!r}")
        else:
            for j, aid in enumerate(ids):
                if not _member(aid, artifacts):
                    p.add(f"{where}.artifacts[{j}]", f"{aid!r} is not an artifact; artifacts: "
                                                     f"{', '.join(artifacts)}")
                else:
                    claim_artifacts.append(aid)
        quantities: list[Quantity] = []
        raw = c.get("quantities")
        if "quantities" not in c:
            pass  # reported as a missing field
        elif not isinstance(raw, list) or not raw:
            p.add(f"{where}.quantities", "expected a non-empty list of quantities")
        else:
            for j, q in enumerate(raw):
                quantity = _quantity(p, f"{where}, quantities[{j}]", q, claim_artifacts, artifacts)
                if quantity is None:
                    continue
                if any(quantity.id == other.id for other in quantities):
                    p.add(f"{where}, quantities[{j}].id", f"{quantity.id!r} appears more than once")
                quantities.append(quantity)
        out[cid] = Claim(cid, _text(p, where, c, "paper_id"), _text(p, where, c, "statement"),
                         tuple(artifacts[a] for a in claim_artifacts), tuple(quantities),
                         _text(p, where, c, "note"))
    return out


def _figures(p: _Problems, claims: Mapping[str, Claim], artifacts: Mapping[str, Artifact],
             paper: Paper) -> dict[str, FigureClaim]:
    """Group the drawn quantities by figure; one claim, experiment, numerator and denominator each."""
    drawn: dict[str, list[tuple[Claim, Quantity]]] = {}
    for claim in claims.values():
        for q in claim.quantities:
            if q.figure is not None:
                drawn.setdefault(q.figure, []).append((claim, q))
    out: dict[str, FigureClaim] = {}
    for fig_id, items in drawn.items():
        artifact = artifacts[fig_id]
        owners = sorted({c.id for c, _ in items})
        if len(owners) > 1:
            p.add(f"artifact {fig_id}", f"panels come from several claims ({', '.join(owners)}); a figure "
                                        "shows one claim")
            continue
        claim = items[0][0]
        first = items[0][1]
        if any(q.numerator is None or q.denominator is None for _, q in items):
            continue  # already reported: a figure draws ratios
        for _, q in items[1:]:
            for field in ("experiment", "numerator", "denominator"):
                if getattr(q, field) != getattr(first, field):
                    p.add(f"claim {claim.id}, quantity {q.id}.{field}",
                          f"differs from quantity {first.id}'s; all panels of {fig_id} share it")
        if not artifact.title:
            p.add(f"artifact {fig_id}", "missing field 'title' (a figure draws it)")
        out[fig_id] = FigureClaim(fig_id, artifact.paper_id, artifact.title, claim.statement, first.experiment,
                                  _as_side(first.numerator), _as_side(first.denominator),
                                  tuple(q.panel for _, q in items), claim.id, paper.testbed, artifact.notes)
    return out


def check(data: Any) -> tuple[tuple[Paper, dict[str, Artifact], dict[str, Claim], dict[str, FigureClaim]] | None,
                              list[str]]:
    """The claims file's objects (paper, artifacts, claims, figures) and its problems; no objects
    when the top level is not a mapping (the one problem says so)."""
    p = _Problems()
    if not _keys(p, "(top level)", data, _TOP_KEYS):
        return None, p.lines
    paper = Paper("", "")
    if _keys(p, "paper", data.get("paper"), _PAPER_INFO_KEYS):
        paper = Paper(_text(p, "paper", data["paper"], "citation"), _text(p, "paper", data["paper"], "testbed"))
    artifacts = _artifacts(p, data.get("artifacts"))
    claims = _claims(p, data.get("claims"), artifacts)
    figures = _figures(p, claims, artifacts, paper)
    return (paper, artifacts, claims, figures), p.lines
