"""Typed async background functions with awaitable, idempotent results on a taquba queue."""

from importlib.metadata import version as _version

__version__: str = _version("taquba-jobs")
"""The installed version of the `taquba-jobs` distribution."""

__all__ = ["__version__"]
