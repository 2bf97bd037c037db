"""The ``webhooks`` extra stays optional: `taquba_workflow` never imports `taquba_webhooks`."""

from __future__ import annotations

import subprocess
import sys


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_importing_taquba_workflow_loads_no_taquba_webhooks() -> None:
    result = _python(
        "import sys, taquba_workflow\n"
        "assert 'taquba_webhooks' not in sys.modules, 'taquba_webhooks was imported'\n"
        "assert 'taquba_workflow.webhook' not in sys.modules\n"
        "print('ok')\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_the_module_names_the_extra_when_webhooks_is_missing() -> None:
    result = _python(
        "import sys\n"
        "sys.modules['taquba_webhooks'] = None  # as if not installed\n"
        "import taquba_workflow.webhook\n"
    )
    assert result.returncode != 0
    assert "ImportError" in result.stderr
    assert 'pip install "taquba-workflow[webhooks]"' in result.stderr
