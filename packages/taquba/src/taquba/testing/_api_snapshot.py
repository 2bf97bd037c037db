"""A package's public API as text, to commit and compare: renames become deliberate acts.

`api_snapshot` renders every name a package lists in ``__all__`` (and the names of its public
submodules), one line each, with what it is and how it is called; `assert_api_snapshot`
compares that text with a committed file. The text is the same on every supported Python
(3.11 to 3.13): signatures are read from the source's annotations as written (the packages use
``from __future__ import annotations``, so annotations are strings), and values are printed
without memory addresses, sentinels by the name they are bound to.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import importlib
import inspect
import pkgutil
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Iterable, Iterator
    from types import ModuleType

_INDENT = "    "

_API_DUNDERS = frozenset(
    {
        "__init__",
        "__call__",
        "__enter__",
        "__exit__",
        "__aenter__",
        "__aexit__",
        "__iter__",
        "__next__",
        "__aiter__",
        "__anext__",
        "__len__",
        "__contains__",
        "__getitem__",
        "__bool__",
        "__await__",
    }
)
"""Special methods that are part of how a class is used; the others (``__repr__``, ``__eq__``,
the methods a dataclass or an enum generates) are left out."""


def api_snapshot(module: ModuleType) -> str:
    """The public API of a package as text: one line per public name, sorted.

    Each name in ``__all__`` gets a line saying what it is and how it is called:

    - functions: ``def`` or ``async def``, the signature with annotations as written in the
      source, and the decorator that wraps them (``@contextlib.asynccontextmanager``);
    - classes: their bases (for exceptions, the tree), then, indented, their dataclass fields,
      enum members, public methods (with ``__init__`` and the special methods that make up a
      protocol, such as ``__aenter__``), properties and class attributes, each with its
      signature or annotation; members inherited from private base classes of the same
      package count as the class's own;
    - type aliases: the type they stand for; constants: their type and value
      (``__version__``: its type only, so a release does not change the snapshot);
    - names re-exported from another distribution: only where they come from, since their
      API is the other distribution's.

    Public submodules (``taquba.testing``) follow, each in a section of its own; a package's
    ``__main__`` and private modules are skipped.

        def test_the_api_snapshot_is_current() -> None:
            assert_api_snapshot(my_package, ROOT / "api-snapshot.txt")

    Args:
        module: The imported package (or module) to describe.

    Returns:
        The snapshot, ending with a newline.

    Raises:
        ValueError: The module (or a public submodule) has no ``__all__``.
    """
    lines = [
        f"# The public API of {module.__name__}: __all__ of the package and its public submodules.",
        "# A change here is a change to the public API: give it a CHANGELOG entry.",
    ]
    for current in _public_modules(module):
        lines += ["", f"## {current.__name__}", ""]
        lines += _module_lines(current, _root_package(module))
    return "\n".join(lines) + "\n"


def assert_api_snapshot(
    module: ModuleType, path: str | os.PathLike[str], *, hint: str | None = None
) -> None:
    """Check that a package's public API is the one committed at ``path``.

    Compares `api_snapshot` of ``module`` with the file's text and fails with a unified diff
    (committed, then current) when they differ, or when the file does not exist.

        def test_the_public_api_is_the_committed_one() -> None:
            assert_api_snapshot(my_package, Path(__file__).parent.parent / "api-snapshot.txt")

    Args:
        module: The imported package whose API is checked.
        path: The committed snapshot.
        hint: What to do about a difference, appended to the message (for example the
            command that regenerates the snapshot).

    Raises:
        AssertionError: The snapshot file is missing or differs from the current API.
    """
    file = Path(path)
    current = api_snapshot(module)
    advice = f"\n{hint}" if hint else ""
    if not file.is_file():
        raise AssertionError(f"{module.__name__}: no API snapshot at {file}{advice}")
    committed = file.read_text(encoding="utf-8")
    if committed != current:
        diff = snapshot_diff(committed, current, str(file))
        raise AssertionError(
            f"{module.__name__}: the public API differs from {file}:\n{diff}{advice}"
        )


def snapshot_diff(committed: str, current: str, name: str) -> str:
    """A unified diff from the committed snapshot to the current one.

    Args:
        committed: The snapshot as committed (empty if there is none).
        current: The snapshot `api_snapshot` gives now.
        name: The snapshot's file name, for the diff's headers.

    Returns:
        The diff, empty if the two are the same.
    """
    return "".join(
        difflib.unified_diff(
            committed.splitlines(keepends=True),
            current.splitlines(keepends=True),
            fromfile=f"{name} (committed)",
            tofile=f"{name} (current)",
        )
    )


# Modules and names


def _root_package(module: ModuleType) -> str:
    return module.__name__.partition(".")[0]


def _public_modules(module: ModuleType) -> Iterator[ModuleType]:
    yield module
    paths = cast("list[str] | None", getattr(module, "__path__", None))
    if paths is None:
        return
    found = sorted(info.name for info in pkgutil.iter_modules(paths))
    for name in found:
        if not name.startswith("_"):
            yield from _public_modules(importlib.import_module(f"{module.__name__}.{name}"))


def _module_lines(module: ModuleType, package: str) -> list[str]:
    listed = cast("object", getattr(module, "__all__", None))
    if not isinstance(listed, list | tuple):
        raise ValueError(f"{module.__name__} has no __all__ to take its public names from")
    names = sorted(str(name) for name in cast("list[object]", listed))
    lines: list[str] = []
    for name in names:
        lines += _name_lines(name, getattr(module, name), module, package)
    return lines


def _name_lines(name: str, obj: object, module: ModuleType, package: str) -> list[str]:
    if name == "__version__":
        return [f"version {name}: {type(obj).__name__}"]
    origin = _defined_in(obj)
    if origin is not None and origin.partition(".")[0] != package:
        return [f"reexport {name} = {_public_path(origin)}.{_qualname(obj)}"]
    if type(obj).__name__ == "FixtureFunctionDefinition":  # pytest >= 8.4
        wrapped = cast("Callable[..., object]", getattr(obj, "__wrapped__", obj))
        return [_function_line("fixture ", name, wrapped, package)]
    if inspect.isclass(obj):
        return _class_lines(name, obj, package)
    if isinstance(obj, typing.TypeVar | typing.ParamSpec | typing.TypeVarTuple):
        return [f"typevar {name}"]
    if _is_type_alias(obj):
        return [f"alias {name} = {_format_type(obj, package)}"]
    if inspect.isroutine(obj):
        return [_function_line("", name, obj, package)]
    return [f"constant {name}: {_type_name(type(obj), package)} = {_value(obj, module, package)}"]


def _defined_in(obj: object) -> str | None:
    """The module that defines a class or a function (``None`` for other values)."""
    if inspect.isclass(obj) or inspect.isroutine(obj):
        return str(getattr(obj, "__module__", "") or "") or None
    return None


def _public_path(module_name: str) -> str:
    """``taquba._queue`` -> ``taquba``: a module path up to its first private part."""
    parts: list[str] = []
    for part in module_name.split("."):
        if part.startswith("_"):
            break
        parts.append(part)
    return ".".join(parts)


def _qualname(obj: object) -> str:
    return str(getattr(obj, "__qualname__", None) or getattr(obj, "__name__", repr(obj)))


# Classes


def _class_lines(name: str, cls: type[object], package: str) -> list[str]:
    kind = _class_kind(cls)
    bases = cast("tuple[object, ...]", getattr(cls, "__orig_bases__", None) or cls.__bases__)
    if kind == "typeddict":  # its bases are a function (`TypedDict`) on some versions
        bases = tuple(base for base in cls.__bases__ if base is not dict)
    shown = [_format_type(base, package) for base in bases if base is not object]
    head = f"{kind} {name}({', '.join(shown)})" if shown else f"{kind} {name}"
    if _is_dataclass(cls):
        params = cast("Any", cls).__dataclass_params__
        flags = [flag for flag in ("frozen", "order") if getattr(params, flag, False)]
        if flags:
            head += f"  [{', '.join(flags)}]"
    lines = [head]
    members: list[str] = []
    members += [
        f"member {member_name} = {_value(member.value, None, package)}"
        for member_name, member in _enum_members(cls).items()
    ]
    fields: set[str] = set()
    if _is_dataclass(cls):
        for field in dataclasses.fields(cast("Any", cls)):
            fields.add(field.name)
            if not field.name.startswith("_"):
                members.append(_field_line(field, package))
    mro: tuple[type[object], ...] = cls.__mro__
    owners = [
        owner
        for owner in mro
        if owner is cls
        or (
            owner.__module__.partition(".")[0] == package
            and owner.__name__.startswith("_")
            and owner is not object
        )
    ]
    seen: set[str] = set(fields)
    described: list[str] = []
    for owner in owners:
        described += _member_lines(cls, owner, seen, package)
    members += sorted(described, key=_member_sort_key)
    lines += [_INDENT + member for member in members]
    return lines


def _class_kind(cls: type[object]) -> str:
    if issubclass(cls, BaseException):
        return "exception"
    if _enum_members(cls):
        return "enum"
    if typing.is_typeddict(cls):
        return "typeddict"
    if getattr(cls, "_is_protocol", False):
        return "protocol"
    if _is_dataclass(cls):
        return "dataclass"
    return "class"


def _is_dataclass(cls: type[object]) -> bool:
    return dataclasses.is_dataclass(cls)


def _enum_members(cls: type[object]) -> dict[str, enum.Enum]:
    """An enum's members by name, aliases included (none for other classes)."""
    if not isinstance(cls, enum.EnumMeta):
        return {}
    return dict(cast("Any", cls).__members__)


def _member_sort_key(line: str) -> tuple[str, str]:
    # "def name(...)", "property name: T", "classmethod def name(...)": sort by the name.
    words = line.replace("async def ", "def ").split(" ")
    for index, word in enumerate(words):
        if word in {"def", "property", "attribute", "class", "cached_property"}:
            return (words[index + 1].split("(")[0].rstrip(":"), line)
    return (line, line)


def _member_lines(
    cls: type[object], owner: type[object], seen: set[str], package: str
) -> list[str]:
    lines: list[str] = []
    annotations = cast("dict[str, object]", inspect.get_annotations(owner))
    for member_name, member in vars(owner).items():
        if member_name in seen or not _is_public_member(member_name):
            continue
        if member_name in _enum_members(cls):
            continue
        line = _member_line(cls, member_name, member, annotations, package)
        if line is not None:
            seen.add(member_name)
            lines.append(line)
    for member_name, annotation in annotations.items():
        if member_name in seen or not _is_public_member(member_name):
            continue
        seen.add(member_name)
        lines.append(f"attribute {member_name}: {_annotation(annotation)}")
    return lines


def _is_public_member(name: str) -> bool:
    return not name.startswith("_") or name in _API_DUNDERS


def _member_line(
    cls: type[object], name: str, member: object, annotations: dict[str, object], package: str
) -> str | None:
    if isinstance(member, staticmethod | classmethod):
        function = cast("Callable[..., object]", cast("Any", member).__func__)
        kind = "staticmethod" if isinstance(member, staticmethod) else "classmethod"
        return _function_line(f"{kind} ", name, function, package)
    if isinstance(member, property):
        return _property_line(name, member)
    if isinstance(member, functools.cached_property):
        getter = cast("Callable[..., object]", cast("Any", member).func)
        returns = _signature_annotations(getter).get("return")
        shown = f": {_annotation(returns)}" if returns is not None else ""
        return f"cached_property {name}{shown}"
    if inspect.isfunction(member):
        if name.startswith("__") and not member.__qualname__.startswith(f"{cls.__qualname__}."):
            return None  # a special method a base class or `typing` put there
        return _function_line("", name, member, package)
    if inspect.isclass(member):
        return f"class {name}"
    if type(member).__name__ in {"member_descriptor", "getset_descriptor"}:
        annotation = annotations.get(name)
        return f"attribute {name}: {_annotation(annotation)}" if annotation else f"attribute {name}"
    if name.startswith("_"):
        return None
    annotation = annotations.get(name)
    shown = f": {_annotation(annotation)}" if annotation is not None else ""
    return f"attribute {name}{shown} = {_value(member, inspect.getmodule(cls), package)}"


def _property_line(name: str, prop: property) -> str:
    getter = prop.fget
    returns = _signature_annotations(getter).get("return") if getter is not None else None
    shown = f": {_annotation(returns)}" if returns is not None else ""
    settable = " [settable]" if prop.fset is not None else ""
    deletable = " [deletable]" if prop.fdel is not None else ""
    return f"property {name}{shown}{settable}{deletable}"


def _field_line(field: dataclasses.Field[Any], package: str) -> str:
    line = f"field {field.name}: {_annotation(field.type)}"
    if field.default is not dataclasses.MISSING:
        line += f" = {_value(field.default, None, package)}"
    elif field.default_factory is not dataclasses.MISSING:
        line += f" = {_qualname(field.default_factory)}()"
    flags: list[str] = []
    if not field.init:
        flags.append("init=False")
    if field.kw_only is True:
        flags.append("kw_only")
    return f"{line}  [{', '.join(flags)}]" if flags else line


# Functions


def _function_line(prefix: str, name: str, function: Callable[..., object], package: str) -> str:
    unwrapped = inspect.unwrap(function)
    decorator = _decorator(function) if unwrapped is not function else ""
    is_async = inspect.iscoroutinefunction(unwrapped) or inspect.isasyncgenfunction(unwrapped)
    keyword = "async def" if is_async else "def"
    return f"{decorator}{prefix}{keyword} {name}{_signature(unwrapped, package)}"


def _decorator(function: Callable[..., object]) -> str:
    """``@contextlib.asynccontextmanager `` for a function a public decorator wrapped.

    The wrapper's code names the decorator that made it (``functools.wraps`` copies the
    wrapped function's names, not its code). A decorator from a private module is an
    implementation detail and is left out.
    """
    code = cast("types.CodeType | None", getattr(function, "__code__", None))
    qualname = code.co_qualname if code is not None else ""
    globals_ = cast("dict[str, object]", getattr(function, "__globals__", {}))
    module = str(globals_.get("__name__", ""))
    if ".<locals>." not in qualname or _public_path(module) != module:
        return ""
    return f"@{module}.{qualname.split('.<locals>.', 1)[0]} "


def _signature(function: Callable[..., object], package: str) -> str:
    try:
        signature = inspect.signature(function, follow_wrapped=False)
    except (TypeError, ValueError):
        return "(...)"
    module = inspect.getmodule(function)
    parameters = [
        parameter.replace(
            annotation=(
                parameter.empty
                if parameter.annotation is parameter.empty
                else _Text(_annotation(parameter.annotation))
            ),
            default=(
                parameter.empty
                if parameter.default is parameter.empty
                else _Text(_value(parameter.default, module, package, function))
            ),
        )
        for parameter in signature.parameters.values()
    ]
    returns = signature.return_annotation
    text = str(
        signature.replace(
            parameters=parameters,
            return_annotation=(
                signature.empty if returns is signature.empty else _Text(_annotation(returns))
            ),
        )
    )
    return text


def _signature_annotations(function: Callable[..., object]) -> dict[str, object]:
    return cast("dict[str, object]", getattr(function, "__annotations__", {}) or {})


class _Text:
    """Text that `inspect.Signature` prints as it is (its repr is the text)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


# Types and values


def _annotation(annotation: object) -> str:
    """An annotation as written: the source text (a string), or a type's name."""
    if isinstance(annotation, str):
        return annotation
    if annotation is None or annotation is type(None):
        return "None"
    return _format_type(annotation, "")


def _is_type_alias(obj: object) -> bool:
    if isinstance(obj, types.UnionType | types.GenericAlias):
        return True
    alias_type = cast("object", getattr(typing, "TypeAliasType", None))  # Python 3.12+
    if isinstance(alias_type, type) and isinstance(obj, alias_type):
        return True
    return typing.get_origin(obj) is not None


def _format_type(obj: object, package: str) -> str:
    """A type (as the runtime holds it) in the notation of annotations."""
    if obj is None or obj is type(None):
        return "None"
    if obj is Ellipsis:
        return "..."
    if isinstance(obj, str):
        return obj
    if isinstance(obj, typing.ForwardRef):
        return obj.__forward_arg__
    if isinstance(obj, typing.TypeVar | typing.ParamSpec | typing.TypeVarTuple):
        return obj.__name__
    if isinstance(obj, list | tuple):
        items = cast("list[object]", list(cast("Any", obj)))
        return "[" + ", ".join(_format_type(item, package) for item in items) + "]"
    origin = typing.get_origin(obj)
    arguments = typing.get_args(obj)
    if origin is typing.Union or origin is types.UnionType:
        return " | ".join(_format_type(argument, package) for argument in arguments)
    if origin is typing.Literal:
        return "Literal[" + ", ".join(repr(argument) for argument in arguments) + "]"
    if origin is not None and origin is not obj:  # `Generic` is its own origin
        head = _format_type(origin, package)
        if not arguments:
            return head
        return f"{head}[{', '.join(_format_type(argument, package) for argument in arguments)}]"
    if inspect.isclass(obj):
        return _type_name(obj, package)
    text = repr(obj)
    return text.removeprefix("typing.")


def _type_name(cls: type[object], package: str) -> str:
    """``Queue`` for the package's own classes and builtins, ``module.Name`` for the rest."""
    module = str(getattr(cls, "__module__", "") or "")
    if module == "builtins" or module.partition(".")[0] == package or module == "typing":
        return cls.__qualname__
    public = _public_path(module)
    return f"{public}.{cls.__qualname__}" if public else cls.__qualname__


def _value(
    value: object,
    module: ModuleType | None,
    package: str,
    function: Callable[..., object] | None = None,
) -> str:
    """A value printed the same way in every run: no addresses, sentinels by name."""
    kind: type[object] = type(value)
    if isinstance(value, enum.Enum):
        return f"{kind.__qualname__}.{value.name}"
    if kind in (frozenset, set):
        items = sorted(_value(item, module, package) for item in cast("Iterable[object]", value))
        return f"{kind.__name__}({{{', '.join(items)}}})" if items else f"{kind.__name__}()"
    if kind is tuple:
        items = [_value(item, module, package) for item in cast("Iterable[object]", value)]
        return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"
    if kind is list:
        items = [_value(item, module, package) for item in cast("Iterable[object]", value)]
        return f"[{', '.join(items)}]"
    if inspect.isclass(value):
        return _type_name(value, package)
    if inspect.isroutine(value):
        return _qualname(value)
    text = repr(value)
    if " at 0x" not in text and " object at " not in text:
        return text
    bound = _bound_name(value, module, function)
    return bound if bound is not None else f"<{kind.__qualname__} object>"


def _bound_name(
    value: object, module: ModuleType | None, function: Callable[..., object] | None
) -> str | None:
    """The name a sentinel is bound to in the function's or module's globals, or one level in."""
    namespaces: list[dict[str, object]] = []
    if function is not None:
        namespaces.append(cast("dict[str, object]", getattr(function, "__globals__", {})))
    if module is not None:
        namespaces.append(cast("dict[str, object]", vars(module)))
    for namespace in namespaces:
        for name, bound in sorted(namespace.items()):
            if bound is value:
                return name
    for namespace in namespaces:
        for name, bound in sorted(namespace.items()):
            if isinstance(bound, types.ModuleType):
                for attribute, inner in sorted(vars(bound).items()):
                    if inner is value:
                        return f"{name}.{attribute}"
    return None
