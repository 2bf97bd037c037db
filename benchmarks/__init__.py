"""taquba's benchmark suite (not a distribution, not part of the test run).

Run ``uv run python -m benchmarks NAME [flags]`` from the repository root, or
``uv run python benchmarks/run.py NAME``. See README.md.
"""
