"""The docs stay true to the code.

The configuration reference (docs/configuration.md) lists exactly the options that conf/ ships, so it cannot go
stale; the README stays short and links every docs page; every relative link and anchor points somewhere; the
mkdocs nav lists every page. `make docs` (mkdocs --strict) checks links too, but only where mkdocs is installed and
never the README: these tests run with the rest of the suite.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest
import yaml

from irstd.config import config_root

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
README = REPO / "README.md"
CONFIG_PAGE = DOCS / "configuration.md"
# the heading of the table that lists every group and its options, one row per group
GROUPS_HEADING = "## Config groups"
# Hydra's own settings (run directories, the SLURM launcher), not a choice of irstd's; the sweeps page covers them
NOT_GROUPS = {"hydra"}
# "at most ~10 KB": the README is the front door, the manual lives in docs/
README_MAX_BYTES = 10 * 1024

PAGES = sorted(DOCS.rglob("*.md"))
MARKDOWN_FILES = [README, *PAGES]

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
INLINE_CODE = re.compile(r"`[^`\n]*`")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def expand(pattern: str) -> list[str]:
    """`table2/{acm,dnanet}_{full,coarse}` -> the four names it stands for (braces expand left to right)."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if match is None:
        return [pattern]
    head, tail = pattern[:match.start()], pattern[match.end():]
    return [name for choice in match.group(1).split(",") for name in expand(head + choice.strip() + tail)]


def shipped_options() -> dict[str, set[str]]:
    """Every config group of the shipped configs and its options: `experiment/table1/full.yaml` -> `table1/full`."""
    root = config_root()
    groups = {}
    for folder in sorted(root.iterdir()):
        if not folder.is_dir() or folder.name in NOT_GROUPS or folder.name.startswith(("_", ".")):
            continue
        groups[folder.name] = {path.relative_to(folder).with_suffix("").as_posix() for path in folder.rglob("*.yaml")}
    return groups


def groups_table(text: str) -> list[str]:
    """The rows of the table under GROUPS_HEADING whose first cell names a group in backticks."""
    start = text.find(GROUPS_HEADING + "\n")
    assert start >= 0, f"{CONFIG_PAGE.relative_to(REPO)} has no '{GROUPS_HEADING}' section: the table of config " \
                       "groups lives there (one row per group, its options in backticks)"
    section = text[start + len(GROUPS_HEADING):]
    end = section.find("\n## ")
    section = section if end < 0 else section[:end]
    return [line for line in section.splitlines() if line.startswith("| `")]


def documented_options() -> dict[str, set[str]]:
    """group -> options, from the first two cells of each row: | `group` | `opt`, `table1/{a,b}`; base: `default` |."""
    groups: dict[str, set[str]] = {}
    for row in groups_table(CONFIG_PAGE.read_text()):
        cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
        group = cells[0].strip("`")
        assert group not in groups, f"{CONFIG_PAGE.relative_to(REPO)} has two rows for the group `{group}`"
        groups[group] = {name for pattern in re.findall(r"`([^`]+)`", cells[1]) for name in expand(pattern)}
    return groups


def test_brace_patterns_expand():
    assert expand("demo") == ["demo"]
    assert expand("table1/{centroid,coarse}_{lesps,fixed}") == [
        "table1/centroid_lesps", "table1/centroid_fixed", "table1/coarse_lesps", "table1/coarse_fixed"]


def test_config_page_lists_every_shipped_option():
    documented = documented_options()
    missing = [f"{group}={option}" for group, options in shipped_options().items()
               for option in sorted(options - documented.get(group, set()))]
    assert not missing, (
        f"{CONFIG_PAGE.relative_to(REPO)} does not list {', '.join(missing)}: add each option in backticks to its "
        f"group's row of the table under '{GROUPS_HEADING}' (a new group gets a row of its own)")


def test_config_page_lists_no_option_that_does_not_exist():
    shipped = shipped_options()
    extra = [f"{group}={option}" for group, options in documented_options().items()
             for option in sorted(options - shipped.get(group, set()))]
    assert not extra, (
        f"{CONFIG_PAGE.relative_to(REPO)} lists {', '.join(extra)}, which {config_root()} does not ship: "
        f"remove them from the table under '{GROUPS_HEADING}' or add the config files")


def test_readme_is_short():
    size = README.stat().st_size
    assert size <= README_MAX_BYTES, (
        f"README.md is {size} bytes, over {README_MAX_BYTES}: move the detail into a page of docs/ and link it")


def links(path: Path) -> list[str]:
    """The link targets of a Markdown file, outside code blocks and inline code."""
    text = INLINE_CODE.sub("", FENCE.sub("", path.read_text()))
    return LINK.findall(text)


def test_readme_links_every_docs_page():
    linked = {(README.parent / target.split("#")[0]).resolve() for target in links(README)}
    unlinked = [page.relative_to(REPO).as_posix() for page in PAGES if page.resolve() not in linked]
    assert not unlinked, f"README.md does not link {', '.join(unlinked)}: add a row to its table of docs pages"


def slug(heading: str) -> str:
    """The anchor mkdocs (Python-Markdown's toc) gives a heading: inline markup dropped, lowercase, dashes."""
    text = re.sub(r"[`*]", "", heading)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(path: Path) -> set[str]:
    return {slug(heading) for heading in HEADING.findall(FENCE.sub("", path.read_text()))}


@pytest.mark.parametrize("path", MARKDOWN_FILES, ids=lambda path: path.relative_to(REPO).as_posix())
def test_relative_links_point_to_existing_files(path):
    broken = []
    for target in links(path):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ... are not checked here
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target} (no file {linked})")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target} (no heading with the anchor #{anchor} in {linked.name})")
    assert not broken, f"{path.relative_to(REPO)} has broken links: {'; '.join(broken)}"


def test_every_docs_image_is_shown():
    shown = {(page.parent / target).resolve() for page in PAGES for target in links(page)}
    unshown = [image.name for image in sorted(DOCS.glob("*.png")) if image.resolve() not in shown]
    assert not unshown, f"docs/ holds images no page shows: {', '.join(unshown)}"


def test_mkdocs_nav_lists_every_page():
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())

    def pages(nav) -> list[str]:
        if isinstance(nav, str):
            return [nav]
        items = nav.values() if isinstance(nav, dict) else nav
        return [page for item in items for page in pages(item)]

    in_nav = sorted(pages(config["nav"]))
    on_disk = sorted(page.relative_to(DOCS).as_posix() for page in PAGES)
    assert in_nav == on_disk, f"mkdocs.yml's nav lists {in_nav}, docs/ holds {on_disk}: list each page once"
