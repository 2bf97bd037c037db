"""Conformance checks of a package's public surface: exported once, documented, typed.

They encode the rules the taquba distributions follow (and that trio's ``test_exports.py``
models): public objects live in private modules and are re-exported by the package's
``__init__.py``, listed once in ``__all__``, documented (attributes by a docstring after the
assignment), and fully typed as pyright sees them.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable
    from types import ModuleType


def check_public_api(
    module: ModuleType,
    *,
    reexported: Collection[str] = (),
    mentioned_in: Iterable[str | os.PathLike[str]] = (),
) -> None:
    """Check a package's public names; raise one `AssertionError` listing every problem.

    The public names are the attributes of ``module`` not starting with ``_`` (submodules
    aside), plus ``__version__`` if it is defined. The rules:

    - ``__all__`` lists every public name exactly once, and nothing else;
    - the package's ``__init__.py`` binds each of them once (no name imported twice);
    - public classes and functions are defined in the package's private modules
      (``<package>._<module>``), except the names in ``reexported``; their ``__module__`` is
      that private module, or the package itself once `taquba.fixup_module_metadata` has
      given them their public path;
    - classes and functions have docstrings, and so do the public methods, properties,
      class and static methods and nested classes defined in a class body (the docstring a
      dataclass generates from its signature does not count); other public names (constants,
      type aliases) have a docstring right after their assignment in the package's source;
    - every public name but ``__version__`` appears, as a whole word, in at least one of the
      pages of ``mentioned_in`` (when given).

        def test_the_public_api_conforms() -> None:
            check_public_api(my_package, mentioned_in=[ROOT / "docs/guide.md"])

    Args:
        module: The imported package (or module) whose surface is checked.
        reexported: Names the package re-exports from another distribution; they may be
            defined outside it, and their documentation is the other distribution's.
        mentioned_in: Documentation pages (Markdown or any text) that together must mention
            every public name.

    Raises:
        AssertionError: Something broke a rule; the message lists every problem found.
    """
    public = _public_names(module)
    problems = [
        *_all_problems(module, public),
        *_binding_problems(module),
        *_placement_problems(module, public, set(reexported)),
        *_documentation_problems(module, public, set(reexported)),
        *_mention_problems(public, mentioned_in),
    ]
    if problems:
        listed = "\n".join(f"  - {problem}" for problem in problems)
        raise AssertionError(f"{module.__name__}: the public API breaks the rules:\n{listed}")


def check_type_completeness(module: ModuleType | str) -> None:
    """Check that pyright knows the type of every name the package exports.

    Runs ``python -m pyright --verifytypes <package> --ignoreexternal`` with the running
    interpreter (pyright must be installed in its environment) and points pyright at that
    interpreter, so the package is resolved in this environment (a virtualenv need not be
    activated or on ``PATH``). It fails if pyright reports an error (no ``py.typed``, say,
    or no such package) or a public symbol whose type is unknown, e.g. a name that is not
    re-exported explicitly (``from ._x import Y as Y`` or ``__all__``) or an unannotated
    function. Types pyright calls ambiguous (inferred, say a return type without
    annotation) are accepted.

    Args:
        module: The package, imported or by name.

    Raises:
        AssertionError: pyright reported a problem, or could not run.
    """
    name = module if isinstance(module, str) else module.__name__
    command = [sys.executable, "-m", "pyright", "--verifytypes", name, "--ignoreexternal"]
    # pyright finds the packages through a Python interpreter: the one `--pythonpath` names, or
    # else `python3`/`python` on PATH, which need not be this one (a nox or compat virtualenv
    # is not on PATH). `--verifytypes` ignores `--pythonpath` (pyright 1.1.414), so the
    # subprocess also gets a PATH on which `python3` and `python` are this interpreter.
    command += ["--pythonpath", sys.executable]
    with tempfile.TemporaryDirectory(prefix="taquba-pyright-") as shims:
        env = {**os.environ, "PATH": _interpreter_first_path(Path(shims))}
        result = subprocess.run(
            [*command, "--outputjson"], capture_output=True, text=True, check=False, env=env
        )
    try:
        report = cast("dict[str, Any]", json.loads(result.stdout))
        completeness = cast("dict[str, Any]", report["typeCompleteness"])
        counts = cast("dict[str, int]", completeness["exportedSymbolCounts"])
        symbols = cast("list[dict[str, Any]]", completeness["symbols"])
        diagnostics = cast("list[dict[str, Any]]", report.get("generalDiagnostics", []))
    except (ValueError, KeyError, TypeError):
        output = (result.stdout + result.stderr)[-4000:]
        raise AssertionError(
            f"{' '.join(command)} gave no type completeness report:\n{output}"
        ) from None
    problems = [
        f"{Path(str(d.get('file') or name)).name}: {d.get('message', '')}"
        for d in diagnostics
        if d.get("severity") == "error"
    ]
    if unknown := counts.get("withUnknownType", 0):
        problems += [
            f"the type of {s['name']} is unknown"
            for s in symbols
            if not s.get("isTypeKnown", True) and not s.get("isTypeAmbiguous", False)
        ] or [f"{unknown} exported symbols have unknown types"]
    if problems:
        listed = "\n".join(f"  - {problem}" for problem in problems)
        raise AssertionError(f"pyright --verifytypes {name} reports:\n{listed}")


def _interpreter_first_path(shims: Path) -> str:
    """``PATH`` with ``python3`` and ``python`` resolving to the running interpreter first.

    On POSIX, ``shims`` gets two scripts that ``exec`` ``sys.executable`` (a symlink would lose
    a virtualenv, whose interpreter finds its ``pyvenv.cfg`` next to the path it was started
    from); elsewhere the interpreter's own directory goes first (a virtualenv's ``Scripts``).
    """
    path = os.environ.get("PATH", "")
    if os.name != "posix":
        return os.pathsep.join([str(Path(sys.executable).parent), path])
    for shim in ("python3", "python"):
        script = shims / shim
        script.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
        script.chmod(0o755)
    return os.pathsep.join([str(shims), path]) if path else str(shims)


def _public_names(module: ModuleType) -> list[str]:
    names = [
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    ]
    if hasattr(module, "__version__"):
        names.append("__version__")
    return sorted(names)


def _all_problems(module: ModuleType, public: list[str]) -> list[str]:
    listed: object = getattr(module, "__all__", None)
    if not isinstance(listed, list | tuple) or not all(
        isinstance(n, str) for n in cast("list[object]", listed)
    ):
        return ["__all__ is missing or is not a list of names"]
    names = cast("list[str]", list(cast("list[object]", listed)))
    problems = [f"__all__ lists {n!r} more than once" for n in _duplicates(names)]
    problems += [
        f"__all__ lists the private name {n!r}"
        for n in names
        if n.startswith("_") and not (n.startswith("__") and n.endswith("__"))
    ]
    problems += [
        f"__all__ lists {n!r}, which the module does not define"
        for n in names
        if not hasattr(module, n)
    ]
    problems += [f"__all__ does not list the public name {n!r}" for n in public if n not in names]
    return problems


def _binding_problems(module: ModuleType) -> list[str]:
    source = _source_file(module)
    if source is None:
        return []
    bound: list[str] = []
    for node in ast.parse(source.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom | ast.Import):
            bound += [
                alias.asname or alias.name.partition(".")[0]
                for alias in node.names
                if alias.name != "*"
            ]
    return [
        f"{source.name} imports {name!r} more than once"
        for name in _duplicates(bound)
        if not name.startswith("_") and name != "annotations"
    ]


def _placement_problems(module: ModuleType, public: list[str], reexported: set[str]) -> list[str]:
    problems: list[str] = []
    prefix = f"{module.__name__}._"
    defined_here = _defined_in_source(module)
    for name in public:
        obj = getattr(module, name)
        if name in reexported or not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        defined_in = str(getattr(obj, "__module__", ""))
        if defined_in == module.__name__ and name not in defined_here:
            continue  # from a private module, its path fixed up by `fixup_module_metadata`
        if not defined_in.startswith(prefix):
            problems.append(f"{name} is defined in {defined_in}, not in a private module {prefix}*")
    return problems


def _defined_in_source(module: ModuleType) -> set[str]:
    """The names a ``def`` or ``class`` statement binds at the top of the module's own source."""
    source = _source_file(module)
    if source is None:
        return set()
    return {
        node.name
        for node in ast.parse(source.read_text(encoding="utf-8")).body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    }


def _documentation_problems(
    module: ModuleType, public: list[str], reexported: set[str]
) -> list[str]:
    attribute_docs = _attribute_docstrings(module)
    undocumented: list[str] = []
    for name in public:
        obj = getattr(module, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            if not _has_docstring(obj):
                undocumented.append(name)
            if inspect.isclass(obj):
                undocumented += [f"{name}.{member}" for member in _undocumented_members(obj)]
        elif name not in attribute_docs and name not in reexported:
            undocumented.append(name)
    return [f"{name} has no docstring" for name in undocumented]


def _undocumented_members(cls: type) -> list[str]:
    missing: list[str] = []
    for member_name, member in vars(cls).items():
        if member_name.startswith("_"):
            continue
        target: object
        if isinstance(member, property):
            target = member  # its docstring is its getter's unless given
        elif isinstance(member, classmethod | staticmethod):
            target = cast("classmethod[Any, Any, Any]", member).__func__
        elif inspect.isfunction(member) or inspect.isclass(member):
            target = member
        else:
            continue  # plain class attributes, enum members
        if not _has_docstring(target):
            missing.append(member_name)
    return missing


def _has_docstring(obj: object) -> bool:
    doc = (getattr(obj, "__doc__", None) or "").strip()
    if inspect.isclass(obj):
        doc = (vars(obj).get("__doc__") or "").strip()  # a class inherits none
        if dataclasses.is_dataclass(obj) and doc.startswith(f"{obj.__name__}("):
            return False  # the signature dataclasses writes when there is no docstring
    return bool(doc)


def _attribute_docstrings(module: ModuleType) -> set[str]:
    """Names assigned at module level in the package's source and followed by a docstring."""
    source = _source_file(module)
    if source is None:
        return set()
    files = sorted(source.parent.rglob("*.py")) if source.name == "__init__.py" else [source]
    documented: set[str] = set()
    for path in files:
        body = ast.parse(path.read_text(encoding="utf-8")).body
        for node, following in itertools.pairwise(body):
            if not (
                isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                continue
            if isinstance(node, ast.AnnAssign):
                targets = [node.target]
            elif isinstance(node, ast.Assign):
                targets = node.targets
            elif sys.version_info >= (3, 12) and isinstance(node, ast.TypeAlias):
                targets = [node.name]
            else:
                continue
            documented |= {t.id for t in targets if isinstance(t, ast.Name)}
    return documented


def _mention_problems(public: list[str], pages: Iterable[str | os.PathLike[str]]) -> list[str]:
    paths = [Path(page) for page in pages]
    if not paths:
        return []
    text = "\n".join(path.read_text(encoding="utf-8") for path in paths)
    where = ", ".join(path.name for path in paths)
    return [
        f"{name} is not mentioned in {where}"
        for name in public
        if name != "__version__" and not re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text)
    ]


def _source_file(module: ModuleType) -> Path | None:
    file = getattr(module, "__file__", None)
    if not isinstance(file, str) or not file.endswith(".py"):
        return None
    return Path(file)


def _duplicates(names: list[str]) -> list[str]:
    seen: set[str] = set()
    repeated: list[str] = []
    for name in names:
        if name in seen and name not in repeated:
            repeated.append(name)
        seen.add(name)
    return repeated
