"""One pipeline over many inputs, with progress, cost rollup and resume, on taquba-workflow."""

from importlib.metadata import version as _version

__version__: str = _version("taquba-bulk")
"""The installed version of the `taquba-bulk` distribution."""

__all__ = ["__version__"]
