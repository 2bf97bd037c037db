"""Layers use taquba's public API only: no distribution but ``taquba`` touches ``taquba._*``.

Scans every ``*.py``/``*.pyi`` under ``packages/*/src/`` of the distributions other than
``taquba`` (by ``[project].name``) with :mod:`ast` and reports, as ``file:line:col``:

* ``import taquba._x`` (also ``taquba.sub._x``, and ``as`` forms);
* ``from taquba._x import ...`` and ``from taquba import _x`` (any non-dunder ``_name``);
* ``importlib.import_module("taquba._x")`` / ``__import__("taquba._x")`` with a literal;
* ``taquba._x`` attribute access on a name bound by ``import taquba`` (or ``as``).

Exit status 1 when anything is found, 0 otherwise. ``--root PATH`` points at another tree.
"""

from __future__ import annotations

import argparse
import ast
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

DEFAULT_ROOT = Path(__file__).resolve().parent.parent
CORE = "taquba"
SOURCE_SUFFIXES = (".py", ".pyi")


@dataclass(frozen=True, order=True)
class Violation:
    """One use of a private taquba module."""

    path: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.message}"


def is_private(name: str) -> bool:
    """Whether a name component is private (``_x``; dunders such as ``__version__`` are not)."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_module(dotted: str) -> str | None:
    """The private prefix of a dotted ``taquba`` path (``taquba._x.y`` -> ``taquba._x``)."""
    parts = dotted.split(".")
    if parts[0] != CORE:
        return None
    for index, part in enumerate(parts[1:], start=1):
        if is_private(part):
            return ".".join(parts[: index + 1])
    return None


def _is_core(module: str) -> bool:
    return module == CORE or module.startswith(f"{CORE}.")


def _module_aliases(tree: ast.AST) -> dict[str, str]:
    """Local names bound to taquba modules by ``import`` statements."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if not _is_core(alias.name):
                    continue
                if alias.asname:
                    aliases[alias.asname] = alias.name
                else:
                    aliases[CORE] = CORE
    return aliases


def _is_import_call(func: ast.expr) -> bool:
    if isinstance(func, ast.Name):
        return func.id in {"import_module", "__import__"}
    return (
        isinstance(func, ast.Attribute)
        and func.attr == "import_module"
        and isinstance(func.value, ast.Name)
        and func.value.id == "importlib"
    )


def _findings(tree: ast.AST) -> Iterator[tuple[ast.stmt | ast.expr, str]]:
    aliases = _module_aliases(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if found := private_module(alias.name):
                    yield node, f"imports private module `{found}`"
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if found := private_module(node.module):
                yield node, f"imports from private module `{found}`"
            elif _is_core(node.module):
                for alias in node.names:
                    if is_private(alias.name):
                        yield node, f"imports private `{node.module}.{alias.name}`"
        elif isinstance(node, ast.Call) and _is_import_call(node.func) and node.args:
            first = node.args[0]
            if (
                isinstance(first, ast.Constant)
                and isinstance(first.value, str)
                and (found := private_module(first.value))
            ):
                yield node, f"imports private module `{found}` dynamically"
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and (found := private_module(f"{aliases[node.value.id]}.{node.attr}"))
        ):
            yield node, f"uses private `{found}`"


def find_private_imports(source: str, path: str) -> list[Violation]:
    """The private taquba uses in one file's ``source`` (``path`` is used in reports)."""
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as exc:
        return [Violation(path, exc.lineno or 0, exc.offset or 0, f"cannot parse: {exc.msg}")]
    return sorted(
        Violation(path, node.lineno, node.col_offset + 1, message)
        for node, message in _findings(tree)
    )


def _distribution_name(package_dir: Path) -> str:
    try:
        with (package_dir / "pyproject.toml").open("rb") as handle:
            project = tomllib.load(handle).get("project")
    except (OSError, tomllib.TOMLDecodeError):
        return package_dir.name
    name = cast("dict[str, object]", project).get("name") if isinstance(project, dict) else None
    return name if isinstance(name, str) else package_dir.name


def layer_sources(root: Path) -> list[Path]:
    """The source files of every distribution under ``packages/`` except ``taquba``."""
    files: list[Path] = []
    for package_dir in sorted(p for p in (root / "packages").glob("*") if p.is_dir()):
        if _distribution_name(package_dir).lower().replace("_", "-") == CORE:
            continue
        src = package_dir / "src"
        files.extend(
            p for p in sorted(src.rglob("*")) if p.suffix in SOURCE_SUFFIXES and p.is_file()
        )
    return files


def scan(root: Path) -> tuple[list[Violation], int]:
    """All violations under ``root`` and the number of files scanned."""
    files = layer_sources(root)
    violations: list[Violation] = []
    for file in files:
        rel = file.relative_to(root).as_posix()
        violations.extend(find_private_imports(file.read_text(encoding="utf-8"), rel))
    return violations, len(files)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="check_layers.py", description=(__doc__ or "").split("\n", 1)[0]
    )
    parser.add_argument(
        "--root", type=Path, default=DEFAULT_ROOT, help="repository root (default: %(default)s)"
    )
    root = Path(parser.parse_args(argv).root)
    violations, count = scan(root)
    if violations:
        for violation in violations:
            print(violation, file=sys.stderr)
        print(
            f"check_layers.py: {len(violations)} private taquba use(s); layers must use"
            " taquba's public API",
            file=sys.stderr,
        )
        return 1
    print(f"check_layers.py: ok ({count} layer source files, no private taquba imports)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
