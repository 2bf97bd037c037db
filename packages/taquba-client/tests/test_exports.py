"""The public surface: every name exported once and documented; no taquba in the main modules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import taquba_client
from taquba.testing import check_public_api

ROOT = Path(__file__).resolve().parents[3]


def test_the_public_api_conforms() -> None:
    check_public_api(taquba_client, mentioned_in=[ROOT / "docs/guides/taquba-client.md"])


def test_importing_the_client_imports_neither_taquba_nor_slatedb() -> None:
    code = (
        "import sys, taquba_client\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('taquba', 'slatedb', 'trio'))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_remote_module_is_the_bridge() -> None:
    from taquba_client import remote

    assert set(remote.__all__) == {"RemoteBlobStore", "RemoteQueue", "open_remote_queue"}
