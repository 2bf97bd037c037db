"""taquba-client: a small HTTP client for a taquba server.

Work in progress (issue #17).
"""

from importlib.metadata import version as _version

__version__: str = _version("taquba-client")
"""The installed version of the `taquba-client` distribution."""

__all__: list[str] = []
