"""Write or check each distribution's API snapshot, ``packages/<dist>/api-snapshot.txt``.

The distributions are the ``packages/*/pyproject.toml`` of the workspace; each one's import
package is its name with ``-`` turned into ``_``. The snapshot is
``taquba.testing.api_snapshot(<package>)``, the same text each package's
``tests/test_api_snapshot.py`` compares, so the packages must be installed in the running
environment (``uv run`` does that)::

    uv run python tools/api_snapshot.py            # regenerate every snapshot
    uv run python tools/api_snapshot.py --check    # exit 1 with a diff if one is out of date

The text is the same on Python 3.11, 3.12 and 3.13. ``--root PATH`` points at another tree
(its packages are still imported from the environment).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

from taquba.testing import api_snapshot, snapshot_diff

if TYPE_CHECKING:
    from collections.abc import Sequence

DEFAULT_ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT = "api-snapshot.txt"
CHANGED = "public API changed: run `uv run python tools/api_snapshot.py` and add a CHANGELOG entry"


def distributions(root: Path) -> list[tuple[str, Path]]:
    """Each workspace member's distribution name and directory, by name."""
    found: list[tuple[str, Path]] = []
    for pyproject in sorted((root / "packages").glob("*/pyproject.toml")):
        name = str(tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["name"])
        found.append((name, pyproject.parent))
    return sorted(found)


def snapshot_of(distribution: str) -> str:
    """The current snapshot of a distribution's import package."""
    return api_snapshot(importlib.import_module(distribution.replace("-", "_")))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="the workspace root")
    args = parser.parse_args(argv)
    members = distributions(args.root)
    if not members:
        print(f"api_snapshot.py: no packages/*/pyproject.toml under {args.root}", file=sys.stderr)
        return 1
    stale: list[str] = []
    for distribution, directory in members:
        path = directory / SNAPSHOT
        current = snapshot_of(distribution)
        committed = path.read_text(encoding="utf-8") if path.is_file() else None
        if committed == current:
            continue
        if args.check:
            shown = path.relative_to(args.root) if path.is_relative_to(args.root) else path
            if committed is None:
                print(f"{shown}: missing")
            else:
                print(snapshot_diff(committed, current, str(shown)), end="")
            stale.append(distribution)
        else:
            path.write_text(current, encoding="utf-8")
            print(f"wrote {path.relative_to(args.root)}")
    if stale:
        print(f"{CHANGED} ({', '.join(stale)})", file=sys.stderr)
        return 1
    if args.check:
        print(f"api_snapshot.py: ok ({len(members)} distributions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
