"""taquba-server: a taquba queue's owner process as an HTTP service.

Work in progress (issue #17).
"""

from importlib.metadata import version as _version

__version__: str = _version("taquba-server")
"""The installed version of the `taquba-server` distribution."""

__all__: list[str] = []
