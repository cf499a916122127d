"""The README's Results section may only show tables that a `linfilt reproduce` or `linfilt bench`
run wrote.

Each Markdown table in it must appear, row for row, in one of the reports under results/, so a
number cannot be typed in, nor go stale when a report is regenerated and the README is not.
"""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _section(text: str, heading: str) -> str:
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + len(heading) + 2)
    return text[start: end if end >= 0 else len(text)]


def _tables(text: str) -> list[str]:
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line.rstrip())
        elif current:
            tables.append("\n".join(current))
            current = []
    return tables


README_TABLES = _tables(_section((ROOT / "README.md").read_text(), "## Results"))
REPORTS = {p.relative_to(ROOT).as_posix(): "\n".join(l.rstrip() for l in p.read_text().splitlines())
           for p in sorted((ROOT / "results").glob("*/*.md"))}


def test_the_results_section_has_tables_and_reports_exist():
    assert len(README_TABLES) >= 8 and len(REPORTS) >= 4


@pytest.mark.parametrize("table", README_TABLES, ids=[t.splitlines()[2][:40] for t in README_TABLES])
def test_every_results_table_is_copied_from_a_report(table):
    sources = [name for name, text in REPORTS.items() if table in text]
    assert sources, "this README table is in no results/*/report.md; copy it from the report that " \
                    "the command above it wrote:\n" + table
