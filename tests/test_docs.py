"""The README is a user's page and the reference docs describe the code as it is.

- Every figure in the README (a percentage, a rate, a latency, a duration, a size, a speed-up) sits
  in a table row that names the command producing it: a `benchmarks/*.py` script that exists, a
  `make` target of the Makefile, or a `robot-calql <command>` the CLI knows. Every row of a table
  with a "command" column names one.
- The README stays short (at most 200 lines).
- No reference doc (docs/*.md) or the README reads like a lab notebook; experiment history lives
  in docs/experiments/, which has an index line per file.
- Every relative link in the README and the docs points to a file that exists.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from robot_calql.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
EXPERIMENTS = DOCS / "experiments"
MAX_README_LINES = 200

# a measured figure: 74%, 8.19 upd/s, 0.58 ms, 7.8-10.3 min, 85 MB, 3.1x (not 3x256 or 640x480)
FIGURE = re.compile(
    r"\d(?:[\d.,]*\d)?\s*(?:%|(?:upd|updates|steps|frames|GFLOP)/s\b|ms\b|min\b|minutes\b|hours\b|[KMG]B\b|x(?![\w]))"
)
# phrases of a lab notebook: which working session or clone measured what
NOTEBOOK = re.compile(
    r"fresh[- ]clone|\b(?:first|second|third|\w+th|this|last|next|previous|earlier) session\b|\bwe tried\b",
    re.IGNORECASE,
)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE = re.compile(r"`([^`]+)`")


def _make_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))


def producing_command(text: str) -> str | None:
    """The first inline-code span of `text` that is a command producing figures, or None."""
    targets = _make_targets()
    for span in CODE.findall(text):
        words = span.split()
        if not words:
            continue
        if words[0].startswith("benchmarks/") and words[0].endswith(".py") and (ROOT / words[0]).is_file():
            return span
        if words[0] == "make" and len(words) > 1 and words[1] in targets:
            return span
        if words[0] == "robot-calql" and len(words) > 1 and words[1] in COMMANDS:
            return span
    return None


def _prose_and_tables(text: str) -> tuple[list[tuple[int, str]], list[list[tuple[int, str]]]]:
    """(numbered lines outside code fences and tables, tables as lists of numbered rows)."""
    prose: list[tuple[int, str]] = []
    tables: list[list[tuple[int, str]]] = []
    fenced = False
    current: list[tuple[int, str]] = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            continue
        if line.lstrip().startswith("|"):
            current.append((n, line))
            continue
        if current:
            tables.append(current)
            current = []
        prose.append((n, line))
    if current:
        tables.append(current)
    return prose, tables


def _cells(row: str) -> list[str]:
    return [c.strip() for c in row.strip().strip("|").split("|")]


def readme_problems(text: str) -> list[str]:
    """What keeps a README text from being a user's page: each problem as one line."""
    problems = []
    lines = text.splitlines()
    if len(lines) > MAX_README_LINES:
        problems.append(f"README has {len(lines)} lines (at most {MAX_README_LINES})")
    prose, tables = _prose_and_tables(text)
    for n, line in prose:
        if m := FIGURE.search(line):
            problems.append(f"line {n}: figure '{m.group(0)}' outside a table row that names its command: {line.strip()[:100]}")
        if m := NOTEBOOK.search(line):
            problems.append(f"line {n}: lab-notebook phrase '{m.group(0)}'")
    for table in tables:
        header = [c.lower() for c in _cells(table[0][1])]
        column = header.index("command") if "command" in header else None
        for n, row in table[2:]:
            cells = _cells(row)
            if column is not None and (column >= len(cells) or producing_command(cells[column]) is None):
                problems.append(f"line {n}: the row's command cell names no benchmarks/*.py, make target or "
                                f"robot-calql command: {row.strip()[:100]}")
            if (m := FIGURE.search(row)) and producing_command(row) is None:
                problems.append(f"line {n}: figure '{m.group(0)}' in a row that names no command producing it")
            if m := NOTEBOOK.search(row):
                problems.append(f"line {n}: lab-notebook phrase '{m.group(0)}'")
    return problems


def test_readme_is_a_users_page():
    assert readme_problems(README.read_text()) == []


def test_readme_checks_catch_figures_without_commands_and_long_pages():
    """The checks above fail on what they are meant to catch."""
    good = "| what | figure | command |\n| --- | --- | --- |\n| env steps/s | 500-1460 | `benchmarks/bench_env.py` |\n"
    assert readme_problems(good) == []
    assert readme_problems("The demo reached **74%** after fine-tuning.\n")  # a figure in a paragraph
    assert readme_problems("It takes 7.8-10.3 min.\n")
    assert readme_problems(good.replace("`benchmarks/bench_env.py`", "`benchmarks/bench_nothing.py`"))
    assert readme_problems(good.replace("`benchmarks/bench_env.py`", "`robot-calql fly`"))
    assert readme_problems("| a | b |\n| --- | --- |\n| updates | 8.19 upd/s |\n")  # a row without a command
    assert readme_problems("one line\n" * (MAX_README_LINES + 1))
    assert readme_problems("measured on the eighth fresh clone\n")
    assert not readme_problems("a 3x256 critic, 640x480 frames, Python 3.10+, for 90 s\n")


def _reference_docs() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


@pytest.mark.parametrize("doc", _reference_docs(), ids=lambda p: p.name)
def test_reference_doc_has_no_lab_notebook(doc: Path):
    hits = [f"{doc.name}:{n}: '{m.group(0)}'" for n, line in enumerate(doc.read_text().splitlines(), 1)
            if (m := NOTEBOOK.search(line))]
    assert hits == [], "experiment history belongs in docs/experiments/: " + "; ".join(hits)


def test_experiment_notes_are_dated_and_indexed():
    index = (EXPERIMENTS / "README.md").read_text()
    notes = sorted(p.name for p in EXPERIMENTS.glob("*.md") if p.name != "README.md")
    assert notes, "docs/experiments/ holds no notes"
    for name in notes:
        assert re.match(r"\d{4}-\d{2}-\d{2}-[a-z0-9-]+\.md$", name), f"{name}: not YYYY-MM-DD-<topic>.md"
        assert f"]({name})" in index, f"docs/experiments/README.md has no line for {name}"


def _markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md")), *sorted(ROOT.glob("docker/*.md"))]


@pytest.mark.parametrize("md", _markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_existing_files(md: Path):
    broken = []
    for target in LINK.findall(md.read_text()):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = target.split("#", 1)[0]
        if not (md.parent / path).exists():
            broken.append(target)
    assert broken == [], f"{md.relative_to(ROOT)}: links to missing files: {broken}"
