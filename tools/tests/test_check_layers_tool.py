"""Tests of ``tools/check_layers.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

import check_layers

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("source", "line", "message"),
    [
        ("import taquba._adapter\n", 1, "imports private module `taquba._adapter`"),
        ("import os\nimport taquba._adapter as a\n", 2, "imports private module `taquba._adapter`"),
        ("import taquba.sub._x.y\n", 1, "imports private module `taquba.sub._x`"),
        ("from taquba._adapter import X\n", 1, "imports from private module `taquba._adapter`"),
        ("from taquba import Queue, _adapter\n", 1, "imports private `taquba._adapter`"),
        ("from taquba.sub import _helper\n", 1, "imports private `taquba.sub._helper`"),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from taquba._x import T\n",
            3,
            "imports from private module `taquba._x`",
        ),
        (
            "import importlib\nm = importlib.import_module('taquba._codec')\n",
            2,
            "imports private module `taquba._codec` dynamically",
        ),
        ("m = __import__('taquba._codec')\n", 1, "imports private module `taquba._codec`"),
        ("import taquba\n\n\ndef f():\n    return taquba._adapter.g()\n", 5, "uses private"),
        ("import taquba as tq\nx = tq._state\n", 2, "uses private `taquba._state`"),
    ],
)
def test_flags_private_taquba_imports(source: str, line: int, message: str) -> None:
    violations = check_layers.find_private_imports(source, "pkg/mod.py")
    assert [(v.path, v.line) for v in violations] == [("pkg/mod.py", line)]
    assert message in violations[0].message


@pytest.mark.parametrize(
    "source",
    [
        "import taquba\nfrom taquba import Queue, __version__\nx = taquba.Queue\n",
        "import taquba_jobs._internal\nfrom taquba_jobs._internal import f\n",
        "from . import _private\nfrom ._x import y\n",
        "import taquba_other._x\nfrom taquba_workflow import _steps\n",
        "x = taquba._adapter  # not bound by an import here\n",
        "import importlib\nimportlib.import_module('taquba')\n",
    ],
)
def test_passes_clean_code(source: str) -> None:
    assert check_layers.find_private_imports(source, "pkg/mod.py") == []


def test_reports_unparsable_files() -> None:
    [violation] = check_layers.find_private_imports("def broken(:\n", "pkg/bad.py")
    assert violation.line == 1
    assert "cannot parse" in violation.message


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _fake_tree(root: Path) -> None:
    for dist, package in [("taquba", "taquba"), ("taquba-jobs", "taquba_jobs")]:
        _write(root / f"packages/{dist}/pyproject.toml", f'[project]\nname = "{dist}"\n')
        _write(root / f"packages/{dist}/src/{package}/__init__.py", '"""Doc."""\n')
    # The core may use its own private modules.
    _write(root / "packages/taquba/src/taquba/queue.py", "from taquba._adapter import A\n")
    # Tests of layers are out of scope.
    _write(root / "packages/taquba-jobs/tests/test_x.py", "import taquba._adapter\n")
    _write(root / "packages/taquba-jobs/src/taquba_jobs/api.py", "import taquba\n")


def test_scan_passes_a_clean_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fake_tree(tmp_path)
    assert check_layers.main(["--root", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == (
        "check_layers.py: ok (2 layer source files, no private taquba imports)"
    )


def test_scan_lists_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fake_tree(tmp_path)
    _write(
        tmp_path / "packages/taquba-jobs/src/taquba_jobs/worker.py",
        '"""Doc."""\n\nfrom taquba import _adapter\n',
    )
    _write(tmp_path / "packages/taquba-jobs/src/taquba_jobs/types.pyi", "import taquba._codec\n")
    violations, _ = check_layers.scan(tmp_path)
    assert [(v.path, v.line) for v in violations] == [
        ("packages/taquba-jobs/src/taquba_jobs/types.pyi", 1),
        ("packages/taquba-jobs/src/taquba_jobs/worker.py", 3),
    ]
    assert check_layers.main(["--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "packages/taquba-jobs/src/taquba_jobs/worker.py:3:1: imports private" in err
    assert "2 private taquba use(s)" in err


def test_real_repo_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_layers.main(["--root", str(REPO)]) == 0
    assert "check_layers.py: ok" in capsys.readouterr().out
