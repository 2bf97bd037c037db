"""The Python examples in the README and the getting-started page run as written."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
SOURCES = [ROOT / "README.md", ROOT / "docs" / "getting-started.md"]


def _python_blocks(path: pathlib.Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.DOTALL)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_python_snippets_run(path: pathlib.Path, tmp_path: pathlib.Path) -> None:
    blocks = _python_blocks(path)
    assert blocks, f"no python example in {path}"
    for block in blocks:
        result = subprocess.run(
            [sys.executable, "-c", block],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "queue-data").exists()
