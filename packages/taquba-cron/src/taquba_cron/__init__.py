"""Cron schedules that enqueue onto a taquba queue."""

from importlib.metadata import version as _version

__version__: str = _version("taquba-cron")
"""The installed version of the `taquba-cron` distribution."""

__all__ = ["__version__"]
