"""`taquba.testing` itself: the child-process helper, the conformance checks, the pytest plugin."""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import pickle
import signal
import subprocess
import sys
import textwrap
import traceback
import uuid
from pathlib import Path
from types import ModuleType

import pytest
import trio

import taquba
from taquba import Store
from taquba.testing import (
    ChildExited,
    api_snapshot,
    assert_api_snapshot,
    check_public_api,
    check_type_completeness,
    open_child,
    open_test_queue,
    snapshot_diff,
)

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")


def program(tmp_path: Path, source: str) -> Path:
    path = tmp_path / f"child_{uuid.uuid4().hex[:8]}.py"
    path.write_text(textwrap.dedent(source))
    return path


# The child process helper


@posix_only
async def test_a_child_that_never_becomes_ready_is_reported_and_killed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    script = program(
        tmp_path,
        """
        import sys, time
        print("stuck on something", file=sys.stderr, flush=True)
        print("booting", flush=True)
        time.sleep(600)
        """,
    )
    caplog.set_level(logging.WARNING, logger="taquba.testing")
    with trio.move_on_after(60) as deadline:  # a deadline around the block, as tests set one
        async with open_child(script) as child:
            await child.expect("booting")
            deadline.deadline = trio.current_time() + 0.2
            await child.expect("READY")
    assert deadline.cancelled_caught
    assert child.returncode == -signal.SIGKILL  # not left behind
    assert child.lines == ["booting"]
    report = caplog.text
    assert "waiting for: 'READY'" in report
    assert "state: running" in report
    assert "| booting" in report
    assert "| stuck on something" in report
    assert str(script) in report


@posix_only
async def test_a_child_that_exits_before_it_is_ready_fails_with_its_stderr(
    tmp_path: Path,
) -> None:
    script = program(
        tmp_path,
        """
        import sys
        print("hello", flush=True)
        sys.exit("boom: no store here")
        """,
    )
    with trio.fail_after(30), pytest.raises(ChildExited) as failure:
        async with open_child(script) as child:
            await child.expect("READY")
    message = str(failure.value)
    assert "output ended before 'READY'" in message
    assert "exited with status 1" in message
    assert "| hello" in message
    assert "| boom: no store here" in message
    assert isinstance(failure.value, AssertionError)


@posix_only
async def test_read_until_then_kill_keeps_every_line_printed_before_the_kill(
    tmp_path: Path,
) -> None:
    script = program(
        tmp_path,
        """
        import itertools, time
        print("READY", flush=True)
        for n in itertools.count():
            print("TICK", n, "x", flush=True)
            time.sleep(0.01)
        """,
    )
    with trio.fail_after(30):
        async with open_child(script) as child:
            await child.expect("READY")
            await child.read_until(lambda: len(child.tagged("TICK")) >= 3)
            assert len(child.tagged("TICK")) == 3  # it stops reading as soon as it holds
            await child.kill()
            assert child.returncode == -signal.SIGKILL
    ticks = child.tagged("TICK")
    assert len(ticks) >= 3
    assert ticks == [[str(n), "x"] for n in range(len(ticks))]
    assert child.tagged("READY") == [[]]
    assert await child.next_line() is None


@posix_only
async def test_killing_a_child_that_already_exited_fails(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with open_child("-c", "print('bye')") as child:
            await child.expect("bye")
            await child.process.wait()
            with pytest.raises(ChildExited, match="exited by itself before the SIGKILL"):
                await child.kill()


async def test_expect_exit_checks_the_status(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with open_child("-c", "print('one'); print('two')") as child:
            await child.expect_exit(0)
        assert child.lines == ["one", "two"]
        async with open_child("-c", "raise SystemExit(4)") as child:
            with pytest.raises(ChildExited, match="exited with 4, not 0"):
                await child.expect_exit()


async def test_a_line_cut_short_is_never_returned(tmp_path: Path) -> None:
    script = program(
        tmp_path,
        """
        import os, signal, sys
        sys.stdout.write("whole\\npart")
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)
        """,
    )
    with trio.fail_after(30):
        async with open_child(script) as child:
            assert await child.next_line() == "whole"
            assert await child.next_line() is None
            assert "(no newline yet)" in child.describe()
    assert child.lines == ["whole"]


async def test_expect_accepts_a_predicate_and_the_child_gets_cwd_and_env(tmp_path: Path) -> None:
    code = "import os; print('noise'); print('CWD', os.getcwd()); print('VAR', os.environ['X'])"
    with trio.fail_after(30):
        async with open_child("-c", code, cwd=tmp_path, env={"X": "chosen"}) as child:
            line = await child.expect(lambda line: line.startswith("CWD "))
            assert trio.Path(line.split(maxsplit=1)[1]) == await trio.Path(tmp_path).resolve()
            assert await child.expect(lambda line: line.startswith("VAR")) == "VAR chosen"
            await child.expect_exit(0)


async def test_an_error_in_the_block_carries_the_childs_report(tmp_path: Path) -> None:
    async def wait_for_ready_in_vain() -> None:
        async with open_child(
            "-c", "import time; print('booting', flush=True); time.sleep(600)"
        ) as c:
            await c.expect("booting")
            with trio.fail_after(0.2):  # a deadline inside the block raises through it
                await c.expect("READY")

    with trio.fail_after(60), pytest.raises(trio.TooSlowError) as failure:
        await wait_for_ready_in_vain()
    notes = "\n".join(getattr(failure.value, "__notes__", []))
    assert notes.startswith("child process: ")
    assert "waiting for: 'READY'" in notes
    assert "| booting" in notes


# The conformance checks


def make_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, str]
) -> ModuleType:
    """Write a package under a fresh name (``{pkg}`` in sources) and import it."""
    name = f"fakepkg_{uuid.uuid4().hex[:8]}"
    root = tmp_path / "site" / name
    root.mkdir(parents=True)
    for filename, source in files.items():
        (root / filename).write_text(textwrap.dedent(source).replace("{pkg}", name))
    monkeypatch.syspath_prepend(str(root.parent))
    return importlib.import_module(name)


GOOD_IMPL = '''
    """Implementation."""

    import dataclasses

    LIMIT = 3
    """How many."""


    class Thing:
        """A thing."""

        def go(self) -> int:
            """Go."""
            return LIMIT

        @property
        def size(self) -> int:
            """Its size."""
            return 1

        @classmethod
        def make(cls) -> "Thing":
            """Make one."""
            return cls()


    @dataclasses.dataclass
    class Record:
        """A record."""

        value: int


    def helper() -> None:
        """Help."""
'''

GOOD_INIT = '''
    """A well-kept package."""

    from ._impl import LIMIT as LIMIT
    from ._impl import Record as Record
    from ._impl import Thing as Thing
    from ._impl import helper as helper

    __all__ = ["LIMIT", "Record", "Thing", "__version__", "helper"]

    __version__: str = "1.0"
    """The version."""
'''


def test_a_conforming_package_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = make_package(tmp_path, monkeypatch, {"__init__.py": GOOD_INIT, "_impl.py": GOOD_IMPL})
    page = tmp_path / "guide.md"
    page.write_text("Use `Thing` (`Thing.go`), `Record`, `helper()` up to LIMIT times.")
    check_public_api(package, mentioned_in=[page])


def test_every_broken_rule_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    impl = '''
        """Implementation."""

        import dataclasses

        LIMIT = 3
        UNDOCUMENTED = 4


        class Thing:
            def go(self) -> int:
                return LIMIT

            @property
            def size(self) -> int:
                return 1

            @staticmethod
            def make() -> "Thing":
                """Make one."""
                return Thing()


        @dataclasses.dataclass
        class Record:
            value: int
    '''
    init = '''
        """A neglected package."""

        from ._impl import LIMIT as LIMIT
        from ._impl import Record as Record
        from ._impl import Thing as Thing
        from ._impl import Thing as Thing
        from ._impl import UNDOCUMENTED as UNDOCUMENTED

        __all__ = ["LIMIT", "Record", "Thing", "Thing", "_hidden", "gone"]


        def inline() -> None:
            """Defined here rather than in a private module."""
    '''
    package = make_package(tmp_path, monkeypatch, {"__init__.py": init, "_impl.py": impl})
    page = tmp_path / "guide.md"
    page.write_text("Only `Thing` and `Things` and RecordSet.")
    with pytest.raises(AssertionError) as failure:
        check_public_api(package, mentioned_in=[page])
    problems = str(failure.value).splitlines()[1:]
    assert sorted(p.removeprefix("  - ") for p in problems) == sorted(
        [
            "__all__ lists 'Thing' more than once",
            "__all__ lists the private name '_hidden'",
            "__all__ lists '_hidden', which the module does not define",
            "__all__ lists 'gone', which the module does not define",
            "__all__ does not list the public name 'UNDOCUMENTED'",
            "__all__ does not list the public name 'inline'",
            "__init__.py imports 'Thing' more than once",
            f"inline is defined in {package.__name__}, not in a private module "
            f"{package.__name__}._*",
            "Record has no docstring",  # the one dataclasses made up does not count
            "Thing has no docstring",
            "Thing.go has no docstring",
            "Thing.size has no docstring",
            "LIMIT has no docstring",  # the docstring must follow the assignment itself
            "UNDOCUMENTED has no docstring",
            "LIMIT is not mentioned in guide.md",
            "Record is not mentioned in guide.md",
            "UNDOCUMENTED is not mentioned in guide.md",
            "inline is not mentioned in guide.md",
        ]
    )


def test_an_undocumented_public_name_fails_and_reexports_are_exempt_from_placement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    init = '''
        """Re-exports a class of another distribution and adds one of its own."""

        from taquba import Store as Store

        from ._impl import helper as helper

        __all__ = ["Store", "helper"]
    '''
    impl = '''
        """Implementation."""


        def helper() -> None:
            pass
    '''
    package = make_package(tmp_path, monkeypatch, {"__init__.py": init, "_impl.py": impl})
    with pytest.raises(AssertionError) as failure:
        check_public_api(package, reexported={"Store"})
    assert str(failure.value).splitlines()[1:] == ["  - helper has no docstring"]
    with pytest.raises(AssertionError, match=r"Store is defined in taquba, not in a private"):
        check_public_api(package)


def test_fixed_up_module_paths_pass_the_placement_rule_but_inline_definitions_do_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After `fixup_module_metadata`, ``__module__`` is the package: the source still counts."""
    init = (
        GOOD_INIT
        + """
    import taquba as _taquba

    _taquba.fixup_module_metadata(__name__, globals())
    """
    )
    package = make_package(tmp_path, monkeypatch, {"__init__.py": init, "_impl.py": GOOD_IMPL})
    assert package.Thing.__module__ == package.helper.__module__ == package.__name__
    check_public_api(package)

    inline = (
        GOOD_INIT.replace('"helper"]', '"helper", "inline"]')
        + '''
    def inline() -> None:
        """Defined in the public module itself."""


    import taquba as _taquba

    _taquba.fixup_module_metadata(__name__, globals())
    '''
    )
    package = make_package(tmp_path, monkeypatch, {"__init__.py": inline, "_impl.py": GOOD_IMPL})
    with pytest.raises(AssertionError) as failure:
        check_public_api(package)
    assert str(failure.value).splitlines()[1:] == [
        f"  - inline is defined in {package.__name__}, not in a private module "
        f"{package.__name__}._*"
    ]


FIXUP_IMPL = '''
    """Implementation: a class with every kind of member, an error, a function."""

    from taquba import Store


    def _private() -> None:
        """Not exported."""


    class Thing:
        """A thing."""

        borrowed = _private  # defined outside the class body: left alone
        store = Store  # another distribution's: left alone

        def go(self) -> int:
            """Go."""
            return 1

        @property
        def size(self) -> int:
            """Its size."""
            return 1

        @staticmethod
        def make() -> "Thing":
            """Make one."""
            return Thing()

        class Part:
            """A nested class."""

            def turn(self) -> None:
                """Turn."""


    class Broke(Exception):
        """An error."""


    def helper() -> None:
        """Help."""
'''

FIXUP_INIT = '''
    """Defines in private modules, re-exports another distribution's class, fixes up."""

    from taquba import Store as Store
    from taquba import fixup_module_metadata as _fixup

    from ._impl import Broke as Broke
    from ._impl import Thing as Thing
    from ._impl import _private as _private
    from ._impl import helper as helper

    __all__ = ["Broke", "Store", "Thing", "helper"]

    _fixup(__name__, globals())
'''


def test_fixup_module_metadata_gives_public_paths_to_what_the_package_defines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = make_package(
        tmp_path, monkeypatch, {"__init__.py": FIXUP_INIT, "_impl.py": FIXUP_IMPL}
    )
    name = package.__name__
    thing = package.Thing
    fixed = [
        thing,
        thing.go,
        thing.__dict__["size"].fget,
        thing.make,
        thing.Part,
        thing.Part.turn,
        package.Broke,
        package.helper,
    ]
    assert [obj.__module__ for obj in fixed] == [name] * len(fixed)
    assert (thing.__qualname__, thing.Part.__qualname__) == ("Thing", "Thing.Part")  # unchanged
    assert package._private.__module__ == f"{name}._impl"  # not exported, nor defined in Thing
    assert Store.__module__ == "taquba"  # another distribution's, even when met in a class body
    assert traceback_line(package.Broke("no")) == f"{name}.Broke: no"
    # The objects are found where their module now says they are: pickling still works.
    assert pickle.loads(pickle.dumps(package.Broke("no"))).args == ("no",)
    assert pickle.loads(pickle.dumps(thing.Part)) is thing.Part
    # Idempotent, and a subpackage's name is accepted (its own private modules are fixed).
    taquba.fixup_module_metadata(name, vars(package))
    assert thing.__module__ == name


def traceback_line(error: BaseException) -> str:
    return "".join(traceback.format_exception_only(error)).strip()


def test_a_module_without_dunder_all_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = make_package(tmp_path, monkeypatch, {"__init__.py": '"""Nothing listed."""\n'})
    with pytest.raises(AssertionError, match="__all__ is missing"):
        check_public_api(package)


def test_type_completeness_fails_on_an_unannotated_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    init = '''
        """Half typed."""

        from ._impl import typed as typed
        from ._impl import untyped as untyped

        __all__ = ["typed", "untyped"]
    '''
    impl = '''
        """Implementation."""


        def typed(x: int) -> int:
            """Typed."""
            return x


        def untyped(x):
            """Untyped."""
            return x
    '''
    package = make_package(
        tmp_path, monkeypatch, {"__init__.py": init, "_impl.py": impl, "py.typed": ""}
    )
    monkeypatch.setenv("PYTHONPATH", str(Path(package.__file__).parent.parent))
    with pytest.raises(AssertionError, match=rf"{package.__name__}\.untyped"):
        check_type_completeness(package)


def test_type_completeness_uses_this_interpreter_not_the_python_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A virtualenv that is not activated (nox's compat sessions): the `python` on PATH, if
    # any, is another interpreter. Here there is none.
    monkeypatch.setenv("PATH", str(tmp_path))
    check_type_completeness("taquba")


def test_type_completeness_reports_a_package_pyright_cannot_check() -> None:
    with pytest.raises(AssertionError, match=r"No py\.typed file found"):
        check_type_completeness(f"no_such_package_{uuid.uuid4().hex[:8]}")


# API snapshots

SNAPSHOT_IMPL = '''
    """Implementation."""

    from __future__ import annotations

    import contextlib
    import dataclasses
    import enum
    import functools
    from collections.abc import Awaitable, Callable, Iterator
    from typing import ClassVar, Generic, Protocol, TypeVar

    T = TypeVar("T")

    _UNSET = object()
    """Absent."""

    LIMIT = 3
    """How many."""

    NAMES = frozenset({"b", "a", "c"})
    """Shown sorted, whatever the hash seed."""

    Callback = Callable[[int], Awaitable[None]] | None
    """A type alias."""


    class Color(enum.Enum):
        """An enum."""

        RED = "red"
        GREEN = "green"


    class AppError(Exception):
        """The base."""

        transient: ClassVar[bool] = False


    class BadThing(AppError, ValueError):
        """Misuse."""

        def __init__(self, thing: str) -> None:
            super().__init__(thing)
            self.thing = thing


    class _Base:
        def inherited(self) -> int:
            """From a private base: counts as the class's own."""
            return 1


    class Thing(_Base, Generic[T]):
        """A thing."""

        kind: ClassVar[str] = "thing"

        def __init__(self, value: T, *, marker: object = _UNSET, color: Color = Color.RED) -> None:
            self.value = value

        def __repr__(self) -> str:
            return "Thing()"

        async def go(self, times: int = LIMIT) -> list[T]:
            """Go."""
            return []

        @property
        def size(self) -> int:
            """Its size."""
            return 1

        @functools.cached_property
        def total(self) -> int:
            """Computed once."""
            return 2

        @classmethod
        def make(cls, value: T) -> Thing[T]:
            """Make one."""
            return cls(value)

        @staticmethod
        def check(value: object, /) -> bool:
            """Check."""
            return True

        def _private(self) -> None:
            pass


    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Record:
        """A record."""

        value: int
        tags: list[str] = dataclasses.field(default_factory=list)
        hue: Color = Color.GREEN
        _cache: dict[str, int] = dataclasses.field(default_factory=dict, init=False)


    class Reader(Protocol):
        """A protocol."""

        def read(self, n: int = -1) -> bytes:
            """Read."""
            ...


    @contextlib.contextmanager
    def opened(path: str, *names: str, **opts: int) -> Iterator[Thing[str]]:
        """A context manager."""
        yield Thing(path)
'''

SNAPSHOT_INIT = '''
    """A package to snapshot."""

    from taquba import Store as Store

    from ._impl import LIMIT as LIMIT
    from ._impl import NAMES as NAMES
    from ._impl import AppError as AppError
    from ._impl import BadThing as BadThing
    from ._impl import Callback as Callback
    from ._impl import Color as Color
    from ._impl import Reader as Reader
    from ._impl import Record as Record
    from ._impl import T as T
    from ._impl import Thing as Thing
    from ._impl import opened as opened

    __all__ = [
        "LIMIT",
        "NAMES",
        "AppError",
        "BadThing",
        "Callback",
        "Color",
        "Reader",
        "Record",
        "Store",
        "T",
        "Thing",
        "__version__",
        "opened",
    ]

    __version__ = "1.0"
'''

EXPECTED_SNAPSHOT = """\
# The public API of {pkg}: __all__ of the package and its public submodules.
# A change here is a change to the public API: give it a CHANGELOG entry.

## {pkg}

exception AppError(Exception)
    attribute transient: ClassVar[bool] = False
exception BadThing(AppError, ValueError)
    def __init__(self, thing: str) -> None
alias Callback = collections.abc.Callable[[int], collections.abc.Awaitable[None]] | None
enum Color(enum.Enum)
    member RED = 'red'
    member GREEN = 'green'
constant LIMIT: int = 3
constant NAMES: frozenset = frozenset({'a', 'b', 'c'})
protocol Reader(Protocol)
    def read(self, n: int = -1) -> bytes
dataclass Record  [frozen]
    field value: int  [kw_only]
    field tags: list[str] = list()  [kw_only]
    field hue: Color = Color.GREEN  [kw_only]
    def __init__(self, *, value: int, tags: list[str] = <factory>, hue: Color = Color.GREEN) -> None
reexport Store = taquba.Store
typevar T
class Thing(_Base, Generic[T])
    def __init__(self, value: T, *, marker: object = _UNSET, color: Color = Color.RED) -> None
    staticmethod def check(value: object, /) -> bool
    async def go(self, times: int = 3) -> list[T]
    def inherited(self) -> int
    attribute kind: ClassVar[str] = 'thing'
    classmethod def make(cls, value: T) -> Thing[T]
    property size: int
    cached_property total: int
version __version__: str
@contextlib.contextmanager def opened(path: str, *names: str, **opts: int) -> Iterator[Thing[str]]
"""


def test_the_api_snapshot_describes_every_kind_of_public_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = make_package(
        tmp_path, monkeypatch, {"__init__.py": SNAPSHOT_INIT, "_impl.py": SNAPSHOT_IMPL}
    )
    assert api_snapshot(package) == EXPECTED_SNAPSHOT.replace("{pkg}", package.__name__)


def test_the_api_snapshot_covers_public_submodules_and_skips_main(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = make_package(
        tmp_path,
        monkeypatch,
        {
            "__init__.py": '"""Top."""\n__all__ = ["ONE"]\nONE = 1\n',
            "__main__.py": "raise SystemExit('never imported')\n",
            "_private.py": "raise SystemExit('never imported')\n",
        },
    )
    sub = Path(str(package.__file__)).parent / "extra"
    sub.mkdir()
    (sub / "__init__.py").write_text('"""Sub."""\n__all__ = ["TWO"]\nTWO = 2\n')
    assert api_snapshot(package).endswith(
        f"## {package.__name__}\n\nconstant ONE: int = 1\n\n"
        f"## {package.__name__}.extra\n\nconstant TWO: int = 2\n"
    )


def test_a_module_without_dunder_all_has_no_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = make_package(tmp_path, monkeypatch, {"__init__.py": '"""Nothing listed."""\n'})
    with pytest.raises(ValueError, match="has no __all__"):
        api_snapshot(package)


def test_assert_api_snapshot_fails_with_a_diff_and_the_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = make_package(
        tmp_path, monkeypatch, {"__init__.py": '"""Top."""\n__all__ = ["ONE"]\nONE = 1\n'}
    )
    snapshot = tmp_path / "api-snapshot.txt"
    with pytest.raises(AssertionError, match=r"no API snapshot at .*\nregenerate it"):
        assert_api_snapshot(package, snapshot, hint="regenerate it")
    snapshot.write_text(api_snapshot(package))
    assert_api_snapshot(package, snapshot)
    snapshot.write_text(api_snapshot(package).replace("ONE: int = 1", "UNO: int = 1"))
    with pytest.raises(AssertionError) as failure:
        assert_api_snapshot(package, snapshot, hint="regenerate it")
    message = str(failure.value)
    assert "-constant UNO: int = 1\n+constant ONE: int = 1\n" in message
    assert f"{snapshot} (committed)" in message
    assert message.endswith("\nregenerate it")
    assert snapshot_diff("a\n", "a\n", "x") == ""


def test_the_api_snapshot_of_taquba_has_no_addresses_and_is_repeatable() -> None:
    text = api_snapshot(taquba)
    assert " at 0x" not in text
    assert "task_status: trio.TaskStatus[None] = TASK_STATUS_IGNORED" in text
    assert "@contextlib.asynccontextmanager async def open_queue(" in text
    assert text == api_snapshot(taquba)


# The pytest plugin


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)


def test_importing_taquba_testing_imports_neither_pytest_nor_moto() -> None:
    result = run_python(
        "import sys, taquba.testing\n"
        "loaded = {'pytest', 'moto', 'boto3'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
        "import taquba.testing.pytest_plugin\n"
        "loaded = {'moto', 'boto3'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    assert result.returncode == 0, result.stderr


def test_the_plugin_is_opt_in() -> None:
    """No ``pytest11`` entry point: installing taquba changes nobody's pytest."""
    plugins = importlib.metadata.entry_points(group="pytest11")
    assert not [ep for ep in plugins if ep.value.startswith("taquba")]


async def test_the_store_fixture_covers_every_kind(
    store: Store, request: pytest.FixtureRequest
) -> None:
    kind = request.node.callspec.params["store"]
    assert kind in {"memory", "file", "s3"}
    assert store.url.startswith({"memory": "memory://", "file": "file://", "s3": "s3://"}[kind])
    async with open_test_queue(store) as queue:
        await queue.enqueue("q", b"x")
        assert (await queue.stats("q")).pending == 1


def test_s3_url_is_a_fresh_prefix_of_the_test_bucket(
    s3_url: str, s3_options: dict[str, object]
) -> None:
    assert s3_url.startswith("s3://taquba-test/t-")
    assert s3_options["allow_http"] is True
    assert str(s3_options["endpoint"]).startswith("http://127.0.0.1:")


def test_the_version_is_exported() -> None:
    assert "__version__" in taquba.__all__
    assert "_version" not in taquba.__all__
