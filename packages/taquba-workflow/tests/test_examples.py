"""The examples run: the multi-step demo, and the crash-resume demo killed and restarted."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parents[3] / "examples"


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=60, check=False
    )
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_the_multi_step_example_runs(tmp_path: Path) -> None:
    out = run(str(EXAMPLES / "workflow_steps.py"), str(tmp_path / "store")).stdout
    assert "status order-1: succeeded at step 3" in out
    assert "status order-2: failed at step 0" in out
    assert "status order-3: cancelled" in out
    assert out.count("order-1: charged the card") == 1  # memoized across the retry


@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")
def test_the_crash_resume_example_resumes_after_a_kill(tmp_path: Path) -> None:
    demo = [str(EXAMPLES / "workflow_crash_resume.py"), str(tmp_path / "demo")]
    fast = ["--work-seconds", "0.01"]
    crashed = run(*demo, *fast, "--crash-at", "2", check=False)
    assert crashed.returncode == -signal.SIGKILL
    assert "[enrich] crashing now" in crashed.stdout
    resumed = run(*demo, *fast).stdout
    assert "resuming run crash-demo at stage enrich" in resumed
    assert "[enrich] memo hit after a restart" in resumed
    assert "[fetch]" not in resumed and "[parse]" not in resumed
    assert "finished: succeeded at stage publish" in resumed
    assert "already succeeded" in run(*demo).stdout


ROOT = Path(__file__).parents[3]


def first_python_block(path: Path) -> str:
    text = path.read_text()
    start = text.index("```python\n") + len("```python\n")
    return text[start : text.index("```", start)]


@pytest.mark.parametrize(
    "document",
    [ROOT / "packages" / "taquba-workflow" / "README.md", ROOT / "docs/guides/taquba-workflow.md"],
    ids=["readme", "guide"],
)
def test_the_documented_quickstart_runs(tmp_path: Path, document: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", first_python_block(document)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "succeeded" in result.stdout
