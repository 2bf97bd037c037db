"""The examples and the documented quickstarts run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[3]
EXAMPLES = ROOT / "examples"


def run(*args: str, cwd: Path | None = None) -> str:
    result = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=60, cwd=cwd, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_the_word_count_example_runs_and_resumes(tmp_path: Path) -> None:
    out = run(str(EXAMPLES / "bulk_word_count.py"), str(tmp_path / "store"))
    assert "first run: 6/6 lines counted (0 from an earlier run)" in out
    assert "second run: 6/6 lines counted (6 from an earlier run)" in out
    assert "cost words=52" in out
    assert out.count('"status":"succeeded"') == 6


def test_the_document_example_pays_for_each_stage_once(tmp_path: Path) -> None:
    out = run(str(EXAMPLES / "bulk_documents.py"), str(tmp_path / "store"))
    assert "first run: 3 succeeded (0 from an earlier run), 1 failed ['empty-1']" in out
    assert "second run: 3 succeeded (3 from an earlier run), 1 failed ['empty-1']" in out
    # classify failed once on the invoice: 4 calls; extract was not paid for again.
    assert out.count("paid API calls so far: {'classify': 4, 'extract': 3, 'validate': 3}") == 2
    assert out.count("cost: api_calls=9 tokens=120 usd=0.012") == 2
    assert "empty-1: failed EmptyDocument: empty-1 has no text" in out


def first_python_block(path: Path) -> str:
    text = path.read_text()
    start = text.index("```python\n") + len("```python\n")
    return text[start : text.index("```", start)]


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (ROOT / "packages" / "taquba-bulk" / "README.md", "2 succeeded, cost tokens=10"),
        (ROOT / "docs" / "guides" / "taquba-bulk.md", "2 succeeded, 1 failed"),
    ],
    ids=["readme", "guide"],
)
def test_the_documented_quickstart_runs(tmp_path: Path, document: Path, expected: str) -> None:
    out = run("-c", first_python_block(document), cwd=tmp_path)
    assert expected in out
