"""Public module paths: a copy of `taquba.fixup_module_metadata` (no taquba import here)."""

from __future__ import annotations

import types
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["fixup_module_metadata"]


def fixup_module_metadata(module_name: str, namespace: Mapping[str, object]) -> None:
    """Give the public classes and functions of ``namespace`` the module path ``module_name``.

    Objects defined in a private module of the same package (``taquba_client._x``) get
    ``__module__ = module_name``, and so do the functions and classes of such a class's body,
    so tracebacks read ``taquba_client.ClaimLost``.
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
            for member in vars(obj).values():
                target = member.fget if isinstance(member, property) else member
                if getattr(target, "__qualname__", "").startswith(inside):
                    fix(target)

    for name, obj in namespace.items():
        if not name.startswith("_"):
            fix(obj)
