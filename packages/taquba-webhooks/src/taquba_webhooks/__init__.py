"""Durable outbound webhook delivery with retries and dead-letter on a taquba queue."""

from importlib.metadata import version as _version

__version__: str = _version("taquba-webhooks")
"""The installed version of the `taquba-webhooks` distribution."""

__all__ = ["__version__"]
