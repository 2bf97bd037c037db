"""Make the tool scripts under ``tools/`` importable as top-level modules in these tests."""

from __future__ import annotations

import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parent.parent

if str(TOOLS) not in sys.path:
    sys.path.insert(0, str(TOOLS))
