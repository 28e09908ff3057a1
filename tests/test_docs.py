"""The README stays a five-minute read that opens with the two commands; the reference in docs/ is
all reachable from mkdocs.yml's nav (`mkdocs build --strict` in `make test` checks its links)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = REPO / "docs"


def _nav_pages(entries) -> list[str]:
    pages = []
    for entry in entries:
        for value in (entry.values() if isinstance(entry, dict) else [entry]):
            pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


def _anchors(page: Path) -> set[str]:
    """The ids mkdocs gives the page's headings (the toc extension's default slugs)."""
    found = set()
    for heading in re.findall(r"^#+ (.+)$", page.read_text(), flags=re.M):
        words = re.sub(r"[^\w\s-]", "", heading.replace("`", "")).strip().lower()
        found.add(re.sub(r"[-\s]+", "-", words))
    return found


def test_readme_opens_with_the_two_commands_and_stays_short():
    lines = README.read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move the detail into docs/"
    content = [line for line in lines if line.strip()]
    assert content[0].startswith("# ")
    assert content[1] == "```bash"
    assert content[2].startswith("make demo ") and content[3].startswith("make test "), content[:5]
    assert content[4] == "```"


def test_readme_links_and_picture_point_at_what_exists():
    text = README.read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [t for t in targets if not re.match(r"[a-z]+:", t)]
    assert "docs/images/dashboard.png" in local
    for target in local:
        path, _, anchor = target.partition("#")
        assert (REPO / path).exists(), f"README.md links to {target}, which does not exist"
        if anchor and path.endswith(".md"):
            assert anchor in _anchors(REPO / path), f"README.md links to {target}: no such heading"
    assert (REPO / "docs/images/dashboard.png").stat().st_size < 400_000  # a README picture loads at once


def test_every_docs_page_is_in_the_nav():
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    nav = _nav_pages(config["nav"])
    pages = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert sorted(nav) == pages, f"in docs/ but not in the nav: {set(pages) - set(nav)}; " \
                                 f"in the nav but not in docs/: {set(nav) - set(pages)}"


def test_the_layout_page_names_every_folder_and_subpackage():
    """A folder added to the repository, or a subpackage to deepe_widgets/, shows in docs/layout.md."""
    import subprocess

    listed = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    folders = {line.split("/")[0] for line in listed.stdout.splitlines() if "/" in line}
    folders = {f"{name}/" for name in folders if not name.startswith(".")}
    subpackages = {f"{init.parent.name}/" for init in (REPO / "deepe_widgets").glob("*/__init__.py")}
    layout = (DOCS / "layout.md").read_text()
    shown = {name for name in folders | subpackages if re.search(rf"(^|[\s`(]){re.escape(name)}", layout, re.M)}
    missing = sorted((folders | subpackages) - shown)
    assert not missing, f"docs/layout.md does not show {missing}"
