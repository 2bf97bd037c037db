"""Durable multi-step runs with per-step memoization on a taquba queue."""

from importlib.metadata import version as _version

__version__: str = _version("taquba-workflow")
"""The installed version of the `taquba-workflow` distribution."""

__all__ = ["__version__"]
