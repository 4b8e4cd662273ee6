"""Every link to a heading of the docs site (``page.md#anchor`` or ``#anchor``) names a heading
that exists. Why here: ``mkdocs build --strict`` checks the anchors of links to other pages but
not a page's links to its own headings, and dated headings ("... (measured 2026-12-07)") make an
undated anchor easy to write and silently dead."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import REPO

toc = pytest.importorskip("markdown.extensions.toc")  # the docs extra (mkdocs' Markdown)

DOCS = REPO / "docs"
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$")
LINK = re.compile(r"\]\(((?:[\w-]+/)*[\w-]+\.md)?#([^)\s]+)\)")


def _prose(path: Path) -> list[str]:
    """The page's lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def heading_ids(path: Path) -> set[str]:
    """The ids mkdocs' toc gives the page's headings (the text as rendered, slugified)."""
    ids = set()
    for line in _prose(path):
        match = HEADING.match(line)
        if match:
            text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", match.group(1))  # a link: its text
            ids.add(toc.slugify(re.sub(r"[`*]", "", text), "-"))
    return ids


def dead_anchors(docs: Path) -> list[str]:
    """``page: link`` for each link whose anchor no heading of its target page has."""
    ids = {p.name: heading_ids(p) for p in docs.glob("*.md")}
    dead = []
    for page in sorted(docs.glob("*.md")):
        for line in _prose(page):
            for target, anchor in LINK.findall(line):
                name = target or page.name
                if name in ids and anchor not in ids[name]:
                    dead.append(f"{page.name}: {target}#{anchor}")
    return dead


def test_every_anchor_of_the_docs_names_a_heading() -> None:
    assert dead_anchors(DOCS) == []


def test_a_dead_anchor_would_be_reported(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text(
        "# Page a\n\n## Measured (2026-12-07): `x`\n\nsee [it](#measured-2026-12-07-x), "
        "[b](b.md#other) and [gone](#measured)\n\n```\n[in code](#nowhere)\n```\n",
        encoding="utf-8",
    )
    (tmp_path / "b.md").write_text("# Other\n", encoding="utf-8")
    assert dead_anchors(tmp_path) == ["a.md: #measured"]
