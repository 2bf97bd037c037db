"""What PyPI shows of each distribution: its README (the long description) and project URLs.

An index page renders the README without the repository around it, so a relative link there
(``../../docs/x.md``, ``CHANGELOG.md``) is broken: every link must be absolute. Links into this
repository (``https://github.com/taquba-py/taquba/blob/main/<path>``) must name a path that
exists, and every distribution declares the same set of project URLs.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HOME = "https://github.com/taquba-py/taquba"
URL_KEYS = ["Homepage", "Documentation", "Changelog", "Source", "Issues"]
PACKAGES = sorted(p.parent for p in (REPO / "packages").glob("*/pyproject.toml"))

_FENCE = re.compile(r"^\s*(```|~~~)")
_CODE_SPAN = re.compile(r"(`+).*?\1")
# [text](target), ![alt](target); the target ends at whitespace or the closing parenthesis.
_INLINE = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]*)>?(?:\s+[\"'(][^)]*)?\)")
_DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S*?)>?(?:\s|$)")
_HTML = re.compile(r"\b(?:href|src)\s*=\s*[\"']([^\"']*)[\"']", re.IGNORECASE)
_ABSOLUTE = re.compile(r"^(?:https?://|mailto:)", re.IGNORECASE)
_REPO_PATH = re.compile(rf"^{re.escape(HOME)}/(?:blob|tree)/main/([^#?]+)")


def link_targets(markdown: str) -> list[tuple[int, str]]:
    """``(line, target)`` of every Markdown and HTML link and image outside code."""
    found: list[tuple[int, str]] = []
    fenced = False
    for number, line in enumerate(markdown.splitlines(), start=1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            continue
        text = _CODE_SPAN.sub("", line)
        targets = [m.group(1) for m in _INLINE.finditer(text)]
        targets += [m.group(1) for m in _HTML.finditer(text)]
        if definition := _DEFINITION.match(text):
            targets.append(definition.group(1))
        found += [(number, target) for target in targets]
    return found


def relative_links(markdown: str) -> list[tuple[int, str]]:
    """The links that only work next to the file in the repository (or not at all)."""
    return [(n, t) for n, t in link_targets(markdown) if not _ABSOLUTE.match(t)]


def test_the_link_finder_sees_every_kind_of_link() -> None:
    markdown = "\n".join(
        [
            "See [the guide](../../docs/guides/taquba.md) and ![logo](logo.png 'Logo').",
            "[changelog]: CHANGELOG.md",
            '<a href="docs/index.md">docs</a> [anchor](#install) [ok](https://example.org/x)',
            "Code is not a link: `[x](y.md)`.",
            "```markdown",
            "[inside](a/fence.md)",
            "```",
            "[mail](mailto:someone@example.org) [site](http://example.org)",
        ]
    )
    assert relative_links(markdown) == [
        (1, "../../docs/guides/taquba.md"),
        (1, "logo.png"),
        (2, "CHANGELOG.md"),
        (3, "#install"),
        (3, "docs/index.md"),
    ]


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_package_readme_links_are_absolute(package: Path) -> None:
    readme = (package / "README.md").read_text(encoding="utf-8")
    relative = [f"README.md:{n}: {t or '(empty)'}" for n, t in relative_links(readme)]
    assert relative == [], (
        f"{package.name}: relative links break on the package index; use {HOME}/blob/main/..."
    )


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_package_readme_links_into_the_repository_exist(package: Path) -> None:
    readme = (package / "README.md").read_text(encoding="utf-8")
    missing = [
        f"README.md:{n}: {t}"
        for n, t in link_targets(readme)
        if (m := _REPO_PATH.match(t)) and not (REPO / m.group(1)).exists()
    ]
    assert missing == []


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_project_urls(package: Path) -> None:
    project = tomllib.loads((package / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    urls: dict[str, str] = project.get("urls", {})
    assert list(urls) == URL_KEYS
    assert urls["Homepage"] == HOME
    assert urls["Issues"] == f"{HOME}/issues"
    assert urls["Changelog"] == f"{HOME}/blob/main/packages/{package.name}/CHANGELOG.md"
    assert urls["Source"] == f"{HOME}/tree/main/packages/{package.name}"
    for key in ("Documentation", "Changelog", "Source"):
        match = _REPO_PATH.match(urls[key])
        assert match is not None, (key, urls[key])
        assert (REPO / match.group(1)).exists(), (key, urls[key])
