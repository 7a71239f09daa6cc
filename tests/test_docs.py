"""The documentation stays true to the repository: the generated configuration reference matches
the schema, every schema key is described, relative links lead to files that exist, and the README
keeps the two commands CI runs, and the verdicts it quotes are a recorded run's own."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO
from guestio.report import results_page

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
GENERATOR = REPO / "workflow" / "scripts" / "config_reference.py"
CONFIG_README = REPO / "config" / "README.md"

# Pages whose relative links must resolve: the README and every page under docs/, plus the two
# READMEs of config/ and results/ that the docs link to.
PAGES = sorted([REPO / "README.md", CONFIG_README, REPO / "results" / "README.md",
                *(REPO / "docs").rglob("*.md")])

# The two commands at the top of README.md: .ci/run runs the second one as it stands.
README_COMMANDS = (
    "./envs/setup.sh && .venv/bin/snakemake --cores all",
    "./envs/setup.sh && .venv/bin/pytest",
)

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def schema_keys_without_description(node: dict, path: tuple = ()) -> list[str]:
    """Dotted names of every key under node's properties (recursively) that has no description."""
    missing = []
    for key, child in (node.get("properties") or {}).items():
        here = path + (key,)
        if not str(child.get("description", "")).strip():
            missing.append(".".join(here))
        missing += schema_keys_without_description(child, here)
    return missing


def relative_links(page: Path) -> list[str]:
    """Link and image targets of a Markdown page outside fenced code: no URLs, no in-page anchors."""
    targets, in_code = [], False
    for line in page.read_text().splitlines():
        if FENCE.match(line):
            in_code = not in_code
            continue
        if in_code:
            continue
        for target in LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue
            targets.append(target)
    return targets


def broken_links(page: Path) -> list[str]:
    """The relative links of page whose file (anchor dropped) does not exist."""
    return [t for t in relative_links(page) if not (page.parent / t.split("#", 1)[0]).exists()]


def test_config_reference_is_generated_from_the_current_schema(tmp_path):
    fresh = tmp_path / "README.md"
    subprocess.run([sys.executable, str(GENERATOR), "--out", str(fresh)], check=True, capture_output=True)
    assert CONFIG_README.read_text() == fresh.read_text(), (
        "config/README.md is out of date with workflow/schemas/config.schema.yaml or config/config.yaml: "
        "run .venv/bin/python workflow/scripts/config_reference.py and commit the result")


def test_config_reference_names_every_schema_key():
    schema = yaml.safe_load(SCHEMA.read_text())
    text = CONFIG_README.read_text()

    def names(node, path=()):
        for key, child in (node.get("properties") or {}).items():
            yield ".".join(path + (key,))
            yield from names(child, path + (key,))

    # A key is a table row; a top-level section is a heading of its own.
    absent = [name for name in names(schema) if f"| `{name}` |" not in text and f"\n## `{name}`\n" not in text]
    assert not absent, f"config/README.md has no row or heading for {absent}"


def test_every_schema_key_has_a_description():
    missing = schema_keys_without_description(yaml.safe_load(SCHEMA.read_text()))
    assert not missing, (f"{SCHEMA.relative_to(REPO)}: add a description to {', '.join(missing)}, "
                         "then rerun workflow/scripts/config_reference.py")


def test_the_description_check_finds_an_undescribed_key():
    schema = {"properties": {"a": {"type": "object", "description": "x",
                                   "properties": {"b": {"type": "integer"}, "c": {"description": "y"}}}}}
    assert schema_keys_without_description(schema) == ["a.b"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_point_to_existing_files(page):
    assert page.exists(), f"{page.relative_to(REPO)} is missing"
    broken = broken_links(page)
    assert not broken, f"{page.relative_to(REPO)} links to missing files: {broken}"


def test_the_link_check_finds_a_broken_link(tmp_path):
    (tmp_path / "there.md").write_text("x")
    page = tmp_path / "page.md"
    page.write_text("[ok](there.md#a) [url](https://example.org/x) [anchor](#top) ![img](gone.png)\n"
                    "```\n[in code](gone.md)\n```\n[broken](gone.md) and [also](sub/none.md \"title\")\n")
    assert broken_links(page) == ["gone.png", "gone.md", "sub/none.md"]


def test_readme_keeps_the_two_commands_ci_runs():
    readme = (REPO / "README.md").read_text()
    for command in README_COMMANDS:
        assert re.search(rf"^{re.escape(command)}(\s|$)", readme, re.M), f"README.md lost the command {command!r}"
    assert README_COMMANDS[1] in (REPO / ".ci" / "run").read_text()


# --------------------------------------------------------------------------------------------
# The verdicts the docs quote are a run's own files (guestio.report.results_page)

RECORDED_RUN = REPO / "tests" / "data" / "run-5621724"   # claims files of a complete default run


def test_the_verdict_table_of_the_results_page_is_the_recorded_runs():
    page = (REPO / "docs" / "results.md").read_text()
    assert results_page.generated_block(page) == results_page.read_run(RECORDED_RUN), (
        "docs/results.md's table is not the recorded run's: run "
        "`.venv/bin/python -m guestio.report.results_page tests/data/run-5621724 --docs docs/results.md`")


def test_the_readme_quotes_the_recorded_totals():
    totals = re.search(r"^Totals: (.*)\.$", results_page.read_run(RECORDED_RUN), re.M).group(1)
    readme = " ".join((REPO / "README.md").read_text().split())
    for count in totals.split(", "):
        if not count.startswith("0 "):
            assert count in readme, count


def test_the_results_page_generator_fills_only_its_block_and_refuses_unknown_verdicts():
    claims = pd.read_csv(RECORDED_RUN / "claims.csv", dtype=str, keep_default_na=False)
    quantities = pd.read_csv(RECORDED_RUN / "claims-quantities.csv", dtype=str, keep_default_na=False)
    table = results_page.verdict_table(claims, quantities)
    page = f"intro\n{results_page.BEGIN}\nold\n{results_page.END}\noutro\n"
    new = results_page.replace_block(page, table)
    assert new.startswith("intro\n") and new.endswith("\noutro\n") and "old" not in new
    assert results_page.generated_block(new) == table
    claims.loc[0, "verdict"] = "sort of"
    with pytest.raises(ValueError, match="sort of"):
        results_page.verdict_table(claims, quantities)
    with pytest.raises(ValueError, match="no generated block"):
        results_page.replace_block("no markers", table)
