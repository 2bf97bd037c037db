"""nox sessions for the taquba workspace.

Every session installs from the committed lock (`uv sync --frozen`) into its own virtualenv,
so what CI tests is exactly what `uv.lock` pins. Sessions:

- ``lint``: ruff check + ruff format --check, and the layer-import guard.
- ``typecheck``: pyright strict on every package's ``src/``.
- ``tests-<python>``: each package's test suite on Python 3.11, 3.12 and 3.13.
- ``compat``: each dependent against every admitted release of its siblings (built from the
  recorded commit) plus a lowest-direct resolution of third-party dependencies.
- ``docs``: the mkdocs site with ``--strict``.
- ``build``: wheels and sdists of all six distributions, checked with ``twine check --strict``
  and installed with pip into a clean venv outside the workspace.
- ``release_check``: versions, CHANGELOGs, RELEASES.md and release records agree.

``uv run nox -t check`` runs the set the README calls "the tests".
"""

from __future__ import annotations

import glob
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import tomllib

import nox

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


def _test_requirements() -> list[str]:
    """The root ``test`` dependency group, for venvs built outside the workspace."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return list(data["dependency-groups"]["test"])


def _pytest_dirs() -> list[str]:
    dirs = [f"packages/{p}/tests" for p in PACKAGES] + ["tools/tests"]
    return [d for d in dirs if (ROOT / d).is_dir()]


@nox.session(python=DEFAULT_PYTHON, tags=["check"])
def lint(session: nox.Session) -> None:
    """Ruff lint and format check, plus the rule that layers use only taquba's public API."""
    _sync(session, "--only-group", "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("python", "tools/check_layers.py")


@nox.session(python=DEFAULT_PYTHON, tags=["check"])
def typecheck(session: nox.Session) -> None:
    """Pyright in strict mode over every package's src/."""
    _sync(session, "--all-packages", "--group", "lint", "--group", "test", "--all-extras")
    session.run("pyright")


@nox.session(python=PYTHONS, tags=["check"])
def tests(session: nox.Session) -> None:
    """Each package's tests (and the tools' tests) on one Python version."""
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


@nox.session(python=DEFAULT_PYTHON)
def compat(session: nox.Session) -> None:
    """Dependents against admitted sibling releases, and against lowest-direct resolution."""
    rows = json.loads(
        subprocess.run(
            [sys.executable, "tools/release.py", "matrix", "--json"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    released = [r for r in rows if r["source"] == "release"]
    # `nox -s compat -- taquba-jobs lowest` runs only those dependents' rows / the floors.
    only = set(session.posargs)
    if only:
        released = [r for r in released if r["dependent"] in only]
    session.log(f"{len(rows)} matrix rows, {len(released)} against recorded releases to run")
    with tempfile.TemporaryDirectory() as tmp:
        wheels = pathlib.Path(tmp) / "wheels"
        session.run(
            "uv", "build", "--all-packages", "--wheel", "--out-dir", str(wheels), external=True
        )
        for row in released:
            _compat_release(session, row, pathlib.Path(tmp), wheels)
    if not only or "lowest" in only:
        _compat_lowest(session)


def _compat_release(
    session: nox.Session, row: dict[str, str], tmp: pathlib.Path, wheels: pathlib.Path
) -> None:
    """Test a dependent from the workspace against a sibling built at its recorded commit."""
    dependent, sibling, version, commit = (
        row["dependent"],
        row["sibling"],
        row["sibling_version"],
        row["commit"],
    )
    session.log(f"compat: {dependent} (workspace) x {sibling} {version} @ {commit[:10]}")
    src = tmp / f"{sibling}-{version}"
    session.run("git", "worktree", "add", "--detach", str(src), commit, external=True)
    try:
        links = tmp / f"links-{dependent}-{sibling}-{version}"
        session.run(
            "uv", "build", "--directory", str(src), "--package", sibling, "--wheel",
            "--out-dir", str(links), external=True,
        )  # fmt: skip
        # The other siblings come from the workspace's own wheels.
        prefix = sibling.replace("-", "_") + "-"
        for wheel in wheels.glob("*.whl"):
            if not wheel.name.startswith(prefix):
                shutil.copy(wheel, links)
        venv = tmp / f"venv-{dependent}-{sibling}-{version}"
        session.run("uv", "venv", "-p", str(session.python), str(venv), external=True)
        py = str(venv / "bin" / "python")
        session.run(
            "uv", "pip", "install", "-p", py, "--find-links", str(links),
            f"{sibling}=={version}", dependent, "taquba[s3]", *_test_requirements(),
            external=True,
        )  # fmt: skip
        if sibling == "taquba":
            _overlay_test_support(session, py)
        session.run(py, "-m", "pytest", f"packages/{dependent}/tests", external=True)
    finally:
        session.run("git", "worktree", "remove", "--force", str(src), external=True)


def _overlay_test_support(session: nox.Session, py: str) -> None:
    """Put the workspace's ``taquba.testing`` over the released taquba's, in the compat venv.

    The dependents' test suites use the newest test support (fixtures, crash-child helpers,
    conformance checks), which older taquba releases do not ship. The row tests the dependent's
    code against the release's queue; the test support is tooling, so it comes from the
    workspace. It only uses names every admitted release has (the rows prove it).
    """
    site = subprocess.run(
        [py, "-c", "import taquba, pathlib; print(pathlib.Path(taquba.__file__).parent)"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    target = pathlib.Path(site) / "testing"
    session.log(f"compat: test support from the workspace -> {target}")
    shutil.rmtree(target)
    shutil.copytree(
        ROOT / "packages" / "taquba" / "src" / "taquba" / "testing",
        target,
        ignore=shutil.ignore_patterns("__pycache__"),
    )


def _compat_lowest(session: nox.Session) -> None:
    """Every package's tests with third-party dependencies at their declared floors.

    The resolution happens in a copy of the workspace so the committed ``uv.lock`` is never
    touched; for workspace members, lowest-direct puts every declared dependency at its floor.
    """
    session.log("compat: lowest-direct resolution of third-party dependencies")
    with tempfile.TemporaryDirectory() as tmp:
        copy = pathlib.Path(tmp) / "workspace"
        shutil.copytree(
            ROOT,
            copy,
            ignore=shutil.ignore_patterns(
                ".git", ".venv", ".nox", "site", "__pycache__", "*.egg-info"
            ),
        )
        env = {"UV_PROJECT_ENVIRONMENT": session.virtualenv.location}
        session.run_install(
            "uv", "sync", "--project", str(copy), "--resolution", "lowest-direct",
            "--all-packages", "--no-default-groups", "--group", "test", "--all-extras",
            env=env, external=True,
        )  # fmt: skip
        with session.chdir(copy):
            session.run("pytest", *_pytest_dirs())


@nox.session(python=DEFAULT_PYTHON)
def docs(session: nox.Session) -> None:
    """Build the documentation site with warnings as errors."""
    _sync(session, "--all-packages", "--group", "docs", "--all-extras")
    session.run("mkdocs", "build", "--strict", "--site-dir", str(ROOT / "site"))


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
        for package in PACKAGES:
            venv = pathlib.Path(tmp) / f"venv-{package}"
            session.run("python", "-m", "venv", str(venv))
            pip = str(venv / "bin" / "pip")
            # Plain pip, no workspace: siblings come from the built wheels like any dependency.
            session.run(
                pip, "install", "--quiet", "--find-links", str(dist), package, external=True
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
