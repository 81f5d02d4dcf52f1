"""Every benchmark table in the README and docs/ is exactly what its committed JSON renders to,
and every relative link in those pages leads somewhere.

The tables sit between ``<!-- table: NAME -->`` markers in README.md or a page under docs/;
``benchmarks/readme_tables.py`` renders them from ``docs/results/NAME.json`` (that file's
benchmark writes it), and the README's headline table from several of those files.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import readme_tables

PAGES = {page: page.read_text(encoding="utf-8") for page in readme_tables.documents()}
#: (page, table name, body) of every table block, in every page.
BLOCKS = [(page, name, body) for page, text in PAGES.items()
          for name, body in readme_tables.tables(text)]
TABLES = {name: body for _, name, body in BLOCKS}
HOME = {name: page for page, name, _ in BLOCKS}
ALL = sorted({*readme_tables.RENDER, *readme_tables.COMPOSED})


def test_every_rendered_table_has_exactly_one_home() -> None:
    assert sorted(name for _, name, _ in BLOCKS) == ALL


def test_the_headline_table_is_in_the_readme() -> None:
    assert HOME["headline"] == readme_tables.README


@pytest.mark.parametrize("name", ALL)
def test_the_table_is_what_the_json_renders(name: str) -> None:
    assert TABLES[name] == readme_tables.render(name)


@pytest.mark.parametrize("name", sorted(readme_tables.RENDER))
def test_the_json_names_its_command_and_commit(name: str) -> None:
    data = json.loads((ROOT / "docs" / "results" / f"{name}.json").read_text(encoding="utf-8"))
    assert data["command"].startswith(f".venv/bin/python benchmarks/{name}.py")
    assert len(data["commit"].removesuffix("+dirty")) == 40
    assert f"benchmarks/{name}.py" in PAGES[HOME[name]]  # the page names the command too


def test_every_headline_row_links_to_its_page() -> None:
    rows = TABLES["headline"].splitlines()[2:]
    assert len(rows) == len(readme_tables.HEADLINES)
    for row in rows:
        (target,) = re.findall(r"\]\((docs/[^)#]+\.md)#[^)]+\)", row)
        assert (ROOT / target).is_file(), row


def test_equal_work_was_asserted_not_just_logged() -> None:
    trim = json.loads((ROOT / "docs" / "results" / "bench_trim.json").read_text())
    memory = json.loads((ROOT / "docs" / "results" / "bench_memory.json").read_text())
    assert trim["identical_result"] is True and trim["inputs"]["rounds"] >= 5
    assert memory["identical_views"] is True and memory["inputs"]["rounds"] >= 5
    assert all(
        len(s) == memory["inputs"]["rounds"] for s in memory["messages_fed_per_round"].values()
    )


@pytest.mark.parametrize(("name", "figure"), [("bench_trim", "x faster"), ("headline", "x slower")])
def test_a_changed_figure_is_caught(name: str, figure: str) -> None:
    text, body = PAGES[HOME[name]], TABLES[name]
    changed = text.replace(body, body.replace(figure, "0" + figure, 1))
    assert changed != text
    assert readme_tables.rewrite(changed) != changed


# -- relative links -------------------------------------------------------------------------
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"!?\[[^\]]*\]\(<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6} +(.+?) *#*$", re.MULTILINE)


def anchors(text: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces as
    hyphens, a repeated one suffixed -1, -2..."""
    seen: dict[str, int] = {}
    for heading in HEADING.findall(FENCE.sub("", text)):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        if count:
            seen[f"{slug}-{count}"] = 1
    return set(seen)


def relative_links() -> list[tuple[Path, str]]:
    return [(page, target) for page, text in PAGES.items()
            for target in LINK.findall(FENCE.sub("", text))
            if not re.match(r"[a-z][a-z+.-]*:", target)]  # http:, https:, mailto:...


def test_every_relative_link_points_to_an_existing_file_and_heading() -> None:
    broken = []
    for page, target in relative_links():
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
        elif anchor and file.suffix == ".md" and anchor not in anchors(
                file.read_text(encoding="utf-8")):
            broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_the_link_check_sees_links_and_headings() -> None:
    assert len(relative_links()) > 50
    assert {"gateway-contextwindow-serve---upstream", "gateway-benchmark"} <= anchors(
        PAGES[ROOT / "docs" / "serve.md"])
