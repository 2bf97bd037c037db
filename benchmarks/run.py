"""Run a benchmark without ``-m``: ``uv run python benchmarks/run.py NAME [flags]``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
