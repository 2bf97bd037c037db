"""nox sessions for the taquba workspace.

Every session installs from the committed lock (`uv sync --frozen`) into its own virtualenv,
so what CI tests is exactly what `uv.lock` pins. Sessions:

- ``lint``: ruff check + ruff format --check, the layer-import guard, and the API snapshots
  (``tools/api_snapshot.py --check``).
- ``typecheck``: pyright strict on every package's ``src/``.
- ``tests-<python>``: each package's test suite on Python 3.11, 3.12 and 3.13 (the GitHub
  workflow's matrix); ``check_tests-<python>``: the same on 3.11 and 3.13 (tagged ``check``).
- ``compat``: the full compatibility matrix, derived from ``tools/releases.toml`` and the sibling
  ranges (weekly workflow); ``compat_subset``: its representative subset (tagged ``check``).
- ``docs``: the mkdocs site with ``--strict``.
- ``build``: wheels and sdists of all six distributions, checked with ``twine check --strict``
  and installed with pip into a clean venv outside the workspace.
- ``release_check``: versions, CHANGELOGs, RELEASES.md and release records agree.

``uv run nox -t check`` runs the set the README calls "the tests".
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from typing import TYPE_CHECKING, Any

import nox

if TYPE_CHECKING:
    from types import ModuleType

ROOT = pathlib.Path(__file__).parent
PYTHONS = ["3.11", "3.12", "3.13"]
DEFAULT_PYTHON = "3.11"
PACKAGES = [
    "taquba",
    "taquba-workflow",
    "taquba-jobs",
    "taquba-bulk",
    "taquba-cron",
    "taquba-webhooks",
    "taquba-server",
    "taquba-client",
]

nox.options.default_venv_backend = "uv"
nox.options.reuse_existing_virtualenvs = True
# Locally a missing interpreter is skipped; in CI (CI=true) it fails the run.
nox.options.error_on_missing_interpreters = bool(os.environ.get("CI"))


def _expose_pyenv_versions() -> None:
    """Let ``python3.X`` resolve for every pyenv-installed version we test on.

    pyenv's shims only run the versions selected in ``PYENV_VERSION`` (or its global file);
    selecting all three lets nox and uv find ``python3.11``, ``python3.12`` and ``python3.13``.
    Without pyenv this does nothing and interpreters are looked up on PATH as usual.
    """
    root = pathlib.Path(os.environ.get("PYENV_ROOT", pathlib.Path.home() / ".pyenv"))
    if not (root / "versions").is_dir():
        return
    chosen = [v for v in os.environ.get("PYENV_VERSION", "").split(":") if v]
    for version in PYTHONS:
        found = sorted(glob.glob(str(root / "versions" / f"{version}.*")))
        name = pathlib.Path(found[-1]).name if found else None
        if name and name not in chosen:
            chosen.append(name)
    if chosen:
        os.environ["PYENV_VERSION"] = ":".join(chosen)


_expose_pyenv_versions()


def _sync(session: nox.Session, *args: str) -> None:
    """Install the locked workspace into the session's virtualenv."""
    session.run_install(
        "uv",
        "sync",
        "--frozen",
        "--no-default-groups",
        *args,
        env={"UV_PROJECT_ENVIRONMENT": session.virtualenv.location},
        external=True,
    )


def _pytest_dirs() -> list[str]:
    dirs = [f"packages/{p}/tests" for p in PACKAGES] + ["tools/tests"]
    return [d for d in dirs if (ROOT / d).is_dir()]


@nox.session(python=DEFAULT_PYTHON, tags=["check"])
def lint(session: nox.Session) -> None:
    """Ruff lint and format check, the layers' use of taquba's public API, the API snapshots."""
    # The snapshot check imports every package (and `taquba.testing.pytest_plugin`, pytest).
    _sync(session, "--all-packages", "--group", "lint", "--group", "test", "--all-extras")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("python", "tools/check_layers.py")
    session.run("python", "tools/api_snapshot.py", "--check")


@nox.session(python=DEFAULT_PYTHON, tags=["check"])
def typecheck(session: nox.Session) -> None:
    """Pyright in strict mode over every package's src/."""
    _sync(session, "--all-packages", "--group", "lint", "--group", "test", "--all-extras")
    session.run("pyright")


CHECK_PYTHONS = ["3.11", "3.13"]
"""The Pythons `nox -t check` (and `.ci/run`) tests on: the oldest and the newest supported.
3.12 runs in the GitHub workflow's matrix (`tests-3.12`); leaving it out of `check` keeps
`.ci/run` within its 40-minute budget on 2 cores."""


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Each package's tests (and the tools' tests) on one Python version."""
    _tests(session)


@nox.session(python=CHECK_PYTHONS, tags=["check"])
def check_tests(session: nox.Session) -> None:
    """`tests` on the oldest and the newest supported Python (what `nox -t check` runs)."""
    _tests(session)


def _tests(session: nox.Session) -> None:
    _sync(session, "--all-packages", "--group", "test", "--all-extras")
    if session.posargs:
        session.run("pytest", *session.posargs)
    elif session.python == DEFAULT_PYTHON:
        session.run("pytest", *_pytest_dirs())
    else:
        # The other versions skip the few tests marked slow (none is version-sensitive) and run
        # the stateful model with fewer examples, to keep `nox -t check` within CI's budget.
        session.run(
            "pytest",
            *_pytest_dirs(),
            "-m",
            "not slow",
            env={"TAQUBA_HYPOTHESIS_EXAMPLES": "20"},
        )


TEST_SIBLINGS: dict[str, tuple[str, ...]] = {"taquba-client": ("taquba-server", "taquba")}
"""Members a dependent's tests need although its code does not (installed at the workspace's
version in its compat rows): taquba-client's tests run a real taquba-server."""

COMPAT_CACHE = ROOT / ".nox" / "_compat"
"""Trees of recorded commits and the wheels built from them, kept between runs (immutable)."""
COMPAT_PAGE = ROOT / "docs" / "design" / "compat-matrix.md"


def _release_tool() -> ModuleType:
    """``tools/release.py`` as a module (nox runs in the workspace venv, which has packaging)."""
    name = "taquba_release_tool"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / "release.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@nox.session(venv_backend="none")
def compat(session: nox.Session) -> None:
    """The full compatibility set (weekly workflow): every admitted combination, both ends.

    Each dependent, at its workspace version and at each recorded release (built and tested
    from the recorded commit), against every combination of sibling releases its ranges admit,
    on 3.11 and 3.13 with the lock's third-party versions; then every distribution with the
    newest (``highest``) and the lowest declared (``lowest-direct``) third-party versions.
    ``nox -s compat -- taquba-jobs highest 3.13`` keeps only the rows matching every word
    given (dependent, resolution or Python).
    """
    _run_compat(session, subset=False)


@nox.session(venv_backend="none", tags=["check"])
def compat_subset(session: nox.Session) -> None:
    """The representative subset run with every change (see docs/design/compatibility.md).

    Each dependent (workspace) against the oldest and newest admitted release of each sibling,
    every pair of siblings covered, on 3.11; one ``highest`` row on 3.13 and one
    ``lowest-direct`` row on 3.11. Tests marked slow are skipped and a row stops at its first
    failure.
    """
    _run_compat(session, subset=True)


def _run_compat(session: nox.Session, *, subset: bool) -> None:
    tool = _release_tool()
    ws = tool.load_workspace(ROOT)
    missing = sorted({r.commit for r in ws.records if not tool.has_commit(ROOT, r.commit)})
    if missing:
        session.error(
            f"recorded commit(s) {', '.join(c[:12] for c in missing)} are not in this clone;"
            " fetch the full history (`git fetch --unshallow`, or `fetch-depth: 0` in CI)"
        )
    rows = tool.load_compat(ws, subset=subset)
    words = set(session.posargs)
    if words:
        rows = [r for r in rows if words <= _row_words(r)]
    name = "subset" if subset else "full"
    session.log(f"compat ({name}): {len(rows)} row(s)")
    results: list[tuple[object, str, float]] = []
    with tempfile.TemporaryDirectory(prefix="taquba-compat-") as tmp_name:
        tmp = pathlib.Path(tmp_name)
        workspace_wheels = tmp / "workspace-wheels"
        session.run(
            "uv", "build", "--all-packages", "--wheel", "--quiet",
            "--out-dir", str(workspace_wheels), external=True,
        )  # fmt: skip
        locked = tmp / "locked.txt"
        session.run(
            "uv", "export", "--frozen", "--quiet", "--all-packages", "--all-groups",
            "--all-extras", "--no-emit-workspace", "--no-hashes", "--no-header",
            "--no-annotate", "--output-file", str(locked), external=True,
        )  # fmt: skip
        for index, row in enumerate(rows, start=1):
            session.log(f"compat [{index}/{len(rows)}]: {_row_title(row)}")
            started = time.monotonic()
            try:
                result = _compat_row(
                    session, tool, row, tmp / f"venv-{index}", workspace_wheels, locked, subset
                )
            except _InstallFailed as exc:
                result = f"install failed: {exc}"
            results.append((row, result, time.monotonic() - started))
            session.log(f"compat [{index}/{len(rows)}]: {result}")
    table = _compat_table(results, with_time=True)
    print(f"\nCompatibility matrix ({name}, {len(results)} rows)\n\n{table}\n")
    if not words:
        _write_compat_page(name, _compat_table(results, with_time=False))
    if os.environ.get("TAQUBA_COMPAT_RESULTS"):
        # A shard of the weekly workflow: its rows, for `compat_page` to merge.
        out = pathlib.Path(os.environ["TAQUBA_COMPAT_RESULTS"])
        out.parent.mkdir(parents=True, exist_ok=True)
        data = [{"row": r.as_json(), "result": res, "seconds": t} for r, res, t in results]
        out.write_text(json.dumps(data, indent=1), encoding="utf-8")
    failed = [r for r, result, _ in results if not result.startswith("passed")]
    if failed:
        session.error(f"{len(failed)} of {len(results)} compatibility row(s) failed")


class _InstallFailed(Exception):
    pass


def _row_words(row: Any) -> set[str]:
    """What a filter word may name: the dependent (``taquba-jobs`` or ``taquba-jobs@0.6.1``),
    a sibling's version (``taquba@0.9.4``), the resolution or the Python."""
    dependent = row.dependent
    return {
        dependent.distribution,
        f"{dependent.distribution}@{dependent.version}",
        *(f"{s.distribution}@{s.version}" for s in row.siblings),
        row.resolution,
        row.python,
    }


@nox.session(venv_backend="none")
def compat_page(session: nox.Session) -> None:
    """Merge the results of ``compat`` shards into the full section of the compat page.

    ``nox -s compat_page -- results/*.json``: each file was written by a filtered ``compat``
    run with ``TAQUBA_COMPAT_RESULTS`` set (the weekly workflow runs one shard per dependent
    and Python). The table lists every row of the full set in its order; a row no shard ran
    says ``not run``, so a partial run cannot pass for a whole one. Fails if a row failed.
    """
    tool = _release_tool()
    full = tool.load_compat(tool.load_workspace(ROOT))
    found: dict[str, tuple[str, float]] = {}
    for name in session.posargs:
        for item in json.loads(pathlib.Path(name).read_text(encoding="utf-8")):
            found[json.dumps(item["row"], sort_keys=True)] = (item["result"], item["seconds"])
    results: list[tuple[object, str, float]] = []
    for row in full:
        result, seconds = found.pop(json.dumps(row.as_json(), sort_keys=True), ("not run", 0.0))
        results.append((row, result, seconds))
    if found:
        session.warn(f"{len(found)} result(s) match no row of the full set (stale shard?)")
    counts = {
        label: sum(1 for _, r, _ in results if predicate(r))
        for label, predicate in (
            ("passed", lambda r: r.startswith("passed")),
            ("not run", lambda r: r == "not run"),
            ("failed", lambda r: not r.startswith("passed") and r != "not run"),
        )
    }
    summary = ", ".join(f"{n} {label}" for label, n in counts.items())
    table = _compat_table(results, with_time=False)
    print(f"\nCompatibility matrix (full, {len(results)} rows: {summary})\n")
    _write_compat_page("full", f"{len(results)} rows: {summary}.\n\n{table}")
    if counts["failed"]:
        session.error(f"{counts['failed']} of {len(results)} compatibility row(s) failed")


def _row_title(row: Any) -> str:
    siblings = ", ".join(p.label() for p in row.siblings) or "no siblings"
    return f"{row.dependent.label()} x {siblings} [{row.resolution}, {row.python}]"


def _release_tree(session: nox.Session, commit: str) -> pathlib.Path:
    """The tree of a recorded commit, extracted once under .nox (no worktree bookkeeping)."""
    tree = COMPAT_CACHE / "src" / commit
    if not (tree / ".complete").is_file():
        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", commit],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        (tree / ".complete").write_text(commit)
        session.log(f"compat: extracted {commit[:12]} into {tree}")
    return tree


def _wheel(session: nox.Session, pin: Any, workspace_wheels: pathlib.Path) -> pathlib.Path:
    """The wheel of a pin: the workspace build, or the one built once from the recorded commit."""
    prefix = pin.distribution.replace("-", "_") + "-"
    if pin.source == "workspace":
        directory = workspace_wheels
    else:
        directory = COMPAT_CACHE / "wheels" / pin.commit / pin.distribution
        if not any(directory.glob(f"{prefix}*.whl")):
            tree = _release_tree(session, pin.commit)
            session.run(
                "uv", "build", "--quiet", "--directory", str(tree), "--package",
                pin.distribution, "--wheel", "--out-dir", str(directory), external=True,
            )  # fmt: skip
    found = sorted(directory.glob(f"{prefix}{pin.version}-*.whl"))
    if not found:
        session.error(f"no wheel of {pin.distribution} {pin.version} in {directory}")
    return found[0]


def _pyproject(pin: Any) -> dict[str, Any]:
    if pin.source == "workspace":
        return tomllib.loads((ROOT / "packages" / pin.distribution / "pyproject.toml").read_text())
    tree = COMPAT_CACHE / "src" / pin.commit
    return tomllib.loads((tree / "packages" / pin.distribution / "pyproject.toml").read_text())


def _third_party_requirements(pins: list[Any]) -> list[str]:
    """What the pins declare on third-party distributions (with taquba's ``s3`` extra)."""
    members = {p.replace("-", "_") for p in PACKAGES}
    requirements: list[str] = []
    for pin in pins:
        project = _pyproject(pin)["project"]
        declared = list(project.get("dependencies", []))
        if pin.distribution == "taquba":
            declared += project.get("optional-dependencies", {}).get("s3", [])
        for text in declared:
            name = re.split(r"[\s\[<>=!~;@]", text, maxsplit=1)[0]
            if name.lower().replace("-", "_") not in members:
                requirements.append(text)
    return requirements


def _compat_row(
    session: nox.Session,
    tool: ModuleType,
    row: Any,
    venv: pathlib.Path,
    workspace_wheels: pathlib.Path,
    locked: pathlib.Path,
    subset: bool,
) -> str:
    """Install one row into a fresh venv and run the dependent's tests; the result."""
    dependent = row.dependent
    tests_tree = (
        ROOT if dependent.source == "workspace" else _release_tree(session, dependent.commit)
    )
    pins = [dependent, *row.siblings]
    requirements = []
    for pin in pins:
        extra = "[s3]" if pin.distribution == "taquba" else ""
        requirements.append(
            f"{pin.distribution}{extra} @ {_wheel(session, pin, workspace_wheels).as_uri()}"
        )
    for name in TEST_SIBLINGS.get(dependent.distribution, ()):
        # Test support only: the dependent's code never imports it (its tests run a server).
        if all(p.distribution != name for p in pins):
            wheel = next(workspace_wheels.glob(f"{name.replace('-', '_')}-*.whl"))
            extra = "[s3]" if name == "taquba" else ""
            requirements.append(f"{name}{extra} @ {wheel.as_uri()}")
    groups = tomllib.loads((tests_tree / "pyproject.toml").read_text())["dependency-groups"]
    requirements += list(groups["test"])
    options = ["--find-links", str(workspace_wheels)]
    if row.resolution == "locked":
        options += ["--constraints", str(locked)]
    else:
        options += ["--resolution", row.resolution]
    if row.resolution == "lowest-direct":
        # `uv pip` lowers only the requirements it is given, so name every declared dependency.
        requirements += _third_party_requirements(pins)
    session.run("uv", "venv", "--quiet", "-p", row.python, str(venv), external=True)
    py = str(venv / "bin" / "python")
    install = ["uv", "pip", "install", "--quiet", "-p", py, *options, *requirements]
    # A warm cache makes the lock's versions installable offline; the newest need the index.
    attempts = [[*install, "--offline"], install] if row.resolution == "locked" else [install]
    for attempt in attempts:
        done = subprocess.run(attempt, capture_output=True, text=True, check=False)
        if done.returncode == 0:
            break
    else:
        print(done.stderr, file=sys.stderr)
        last = (done.stderr.strip().splitlines() or ["uv pip install failed"])[-1]
        raise _InstallFailed(last.strip())
    _overlay_test_support(session, py, tests_tree)
    args = [
        py,
        "-m",
        "pytest",
        f"packages/{dependent.distribution}/tests",
        "-p",
        "no:cacheprovider",
    ]
    env = dict(os.environ)
    if subset:
        args += ["-q", "-x", "-m", "not slow"]
        env["TAQUBA_HYPOTHESIS_EXAMPLES"] = "20"
    for test in row.deselect:
        # A whole module (no "::") is ignored, so one that cannot even be imported is skipped.
        args += ["--deselect", test] if "::" in test else ["--ignore", test]
    code = subprocess.run(args, cwd=tests_tree, env=env, check=False).returncode
    if code != 0:
        return f"failed (pytest exit {code})"
    if row.deselect:
        # The release's own test is wrong there (tools/releases.toml, [[known-failure]]).
        return f"passed ({len(row.deselect)} known failure(s) deselected)"
    return "passed"


def _overlay_test_support(session: nox.Session, py: str, tests_tree: pathlib.Path) -> None:
    """Put the ``taquba.testing`` of the tests' own tree over the installed taquba's.

    A dependent's tests use the test support (fixtures, crash-child helpers, conformance
    checks) of the tree they come from, which another taquba release may not ship. The row
    tests the dependent's code against that release's queue; the test support is tooling, so
    it comes with the tests. The private modules it imports that the installed taquba lacks
    (``_failpoints``, ...) are added beside it; a module the installed taquba has is never
    replaced, so the queue under test stays the release's. Tests that need the newer queue
    itself (fault injection points, new APIs) fail against an older release: that is a finding.
    """
    found = subprocess.run(
        [py, "-c", "import taquba, pathlib; print(pathlib.Path(taquba.__file__).parent)"],
        check=False,
        capture_output=True,
        text=True,
    )
    if found.returncode != 0:
        # A row without taquba (taquba-client alone, which talks HTTP only): nothing to overlay.
        session.log("compat: taquba is not installed in this row; no test support to overlay")
        return
    site = found.stdout.strip()
    source = tests_tree / "packages" / "taquba" / "src" / "taquba"
    installed = pathlib.Path(site)
    shutil.rmtree(installed / "testing")
    shutil.copytree(
        source / "testing", installed / "testing", ignore=shutil.ignore_patterns("__pycache__")
    )
    added = [
        module.name
        for module in sorted(source.glob("_*.py"))
        if module.name != "__init__.py" and not (installed / module.name).exists()
    ]
    for name in added:
        shutil.copy2(source / name, installed / name)
    if added:
        session.log(f"compat: private modules missing from the release, added: {', '.join(added)}")


def _compat_table(results: list[tuple[Any, str, float]], *, with_time: bool) -> str:
    """A Markdown table: dependent, its version, siblings, resolution, Python, result."""

    def version(pin: Any) -> str:
        where = "workspace" if pin.source == "workspace" else f"release, {pin.commit[:10]}"
        return f"{pin.version} ({where})"

    header = ["Dependent", "Dependent version", "Sibling versions", "Resolution", "Python"]
    header += ["Result", "Time"] if with_time else ["Result"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row, result, seconds in results:
        siblings = "<br>".join(f"{p.distribution} {version(p)}" for p in row.siblings) or "-"
        cells = [
            row.dependent.distribution,
            version(row.dependent),
            siblings,
            row.resolution,
            row.python,
            result.replace("|", "/"),
        ]
        if with_time:
            cells.append(f"{seconds:.0f} s")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _write_compat_page(name: str, table: str) -> None:
    """Rewrite the ``name`` section of docs/design/compat-matrix.md with the last run's table."""
    start, end = f"<!-- compat:{name}:start -->", f"<!-- compat:{name}:end -->"
    text = COMPAT_PAGE.read_text(encoding="utf-8")
    if start not in text or end not in text:
        return
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    COMPAT_PAGE.write_text(f"{head}{start}\n{table}\n{end}{tail}", encoding="utf-8")


@nox.session(python=DEFAULT_PYTHON)
def docs(session: nox.Session) -> None:
    """Build the documentation site with warnings as errors."""
    _sync(session, "--all-packages", "--group", "docs", "--all-extras")
    session.run("mkdocs", "build", "--strict", "--site-dir", str(ROOT / "site"))


def _version(package: str) -> str:
    pyproject = ROOT / "packages" / package / "pyproject.toml"
    return str(tomllib.loads(pyproject.read_text())["project"]["version"])


@nox.session(python=DEFAULT_PYTHON, tags=["check"])
def build(session: nox.Session) -> None:
    """Build all 12 artifacts, twine-check them, and pip-install each outside the workspace."""
    _sync(session, "--only-group", "release")
    with tempfile.TemporaryDirectory() as tmp:
        dist = pathlib.Path(tmp) / "dist"
        session.run("uv", "build", "--all-packages", "--out-dir", str(dist), external=True)
        artifacts = sorted(p.name for p in dist.iterdir() if p.suffix in {".whl", ".gz"})
        if len(artifacts) != 2 * len(PACKAGES):
            session.error(f"expected {2 * len(PACKAGES)} artifacts, got {artifacts}")
        session.run("twine", "check", "--strict", *(str(dist / a) for a in artifacts))
        # Every member at the version just built: pip admits a development version (0.8.2.dev0)
        # into a sibling's range (`taquba>=0.8,<0.9`) only when it is named.
        constraints = pathlib.Path(tmp) / "members.txt"
        constraints.write_text("".join(f"{p}=={_version(p)}\n" for p in PACKAGES))
        for package in PACKAGES:
            venv = pathlib.Path(tmp) / f"venv-{package}"
            session.run("python", "-m", "venv", str(venv))
            pip = str(venv / "bin" / "pip")
            # Plain pip, no workspace: siblings come from the built wheels like any dependency.
            session.run(
                pip,
                "install",
                "--quiet",
                "--find-links",
                str(dist),
                "--constraint",
                str(constraints),
                package,
                external=True,
            )
            module = package.replace("-", "_")
            session.run(
                str(venv / "bin" / "python"), "-c",
                f"import {module}; print({module}.__name__, {module}.__version__)",
                external=True,
            )  # fmt: skip


@nox.session(python=DEFAULT_PYTHON, tags=["check"])
def release_check(session: nox.Session) -> None:
    """Versions, CHANGELOG top entries, RELEASES.md sections and release records agree."""
    _sync(session, "--only-group", "release")
    session.run("python", "tools/release.py", "check")
    session.run("python", "tools/release.py", "matrix")
