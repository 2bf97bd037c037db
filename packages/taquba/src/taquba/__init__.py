"""A durable task queue whose only state lives in object storage, through SlateDB."""

from importlib.metadata import version as _version

__version__: str = _version("taquba")
"""The installed version of the `taquba` distribution."""

__all__ = ["__version__"]
