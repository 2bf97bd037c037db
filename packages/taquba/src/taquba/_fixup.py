"""Public module paths: `fixup_module_metadata`, after trio's helper of the same name."""

from __future__ import annotations

import types
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

__all__ = ["fixup_module_metadata"]


def fixup_module_metadata(module_name: str, namespace: Mapping[str, object]) -> None:
    """Give the public classes and functions of a package its public module path.

    A package that defines its objects in private modules (``taquba._errors``) and re-exports
    them from its ``__init__.py`` calls this at the end of that file, so each object's
    ``__module__`` names the path users import it from. Tracebacks then read
    ``taquba.ClaimLost`` rather than ``taquba._errors.ClaimLost``, and so do error type names
    built from ``__module__`` (stored in records, logged), ``repr`` and ``help``:

        fixup_module_metadata(__name__, globals())

    Every public name (not starting with ``_``) of ``namespace`` bound to a class or a
    function whose ``__module__`` is a private module of the same top-level package
    (``<package>._x``, ``<package>.sub._y``) gets ``__module__ = module_name``, and so do the
    methods, properties and nested classes defined in such a class's body. Objects defined in
    another distribution (names re-exported from ``taquba`` by a layer, say), or already fixed
    up, are left alone; so are names and qualified names, and constants, instances and type
    aliases. Pickling still works, since each object is found at ``module_name.<name>``.

    A class whose string annotations (``from __future__ import annotations``) name something
    the public module does not export can no longer be resolved by
    `typing.get_type_hints`, which looks names up in the module ``__module__`` names; the
    same holds for trio's classes.

    Args:
        module_name: The public module, usually ``__name__`` of the calling ``__init__.py``.
        namespace: Its namespace, usually ``globals()``.
    """
    package = module_name.partition(".")[0]
    seen: set[int] = set()

    def private(module: object) -> bool:
        if not isinstance(module, str):
            return False
        parts = module.split(".")
        return parts[0] == package and any(part.startswith("_") for part in parts[1:])

    def fix(obj: object) -> None:
        if id(obj) in seen or not isinstance(obj, type | types.FunctionType):
            return
        seen.add(id(obj))
        if not private(getattr(obj, "__module__", None)):
            return
        obj.__module__ = module_name
        if isinstance(obj, type):
            inside = f"{obj.__qualname__}."
            for member in _members(obj):
                if getattr(member, "__qualname__", "").startswith(inside):
                    fix(member)

    for name, obj in namespace.items():
        if not name.startswith("_"):
            fix(obj)


def _members(cls: type) -> Iterator[object]:
    """The functions and classes a class body defines, properties and descriptors unwrapped."""
    for member in vars(cls).values():
        if isinstance(member, property):
            yield from (f for f in (member.fget, member.fset, member.fdel) if f is not None)
        elif isinstance(member, staticmethod | classmethod):
            yield cast("staticmethod[..., object] | classmethod[Any, ..., object]", member).__func__
        else:
            yield member
