"""Where the storage adapter looks for injected faults (tests install them).

`taquba.testing.inject_faults` pushes a fault source onto `INSTALLED`; the adapter asks the
last one, if any, before each write and read. With nothing installed the cost is one check of
this list per call. Nothing in taquba itself installs a source.
"""

from __future__ import annotations

from typing import Literal, Protocol

__all__ = ["INSTALLED", "FaultKind", "FaultSource", "InjectedKind", "Site"]

FaultKind = Literal["slow", "conflict", "unavailable", "permanent", "unknown", "lost"]
"""What a fault does (see `taquba.testing.Fault`)."""

Site = Literal["commit", "put", "delete", "get", "scan", "flush"]
"""Where in the adapter a fault is injected."""


class InjectedKind(Protocol):
    """What the adapter reads of a fault."""

    @property
    def kind(self) -> FaultKind:
        """What the fault does."""
        ...

    @property
    def seconds(self) -> float:
        """How long a ``slow`` fault stalls."""
        ...


class FaultSource(Protocol):
    """Decides which call gets which fault."""

    def pick(
        self, site: Site, *, transaction: bool = False, durable: bool = False
    ) -> InjectedKind | None:
        """The fault to inject into this call, or None."""
        ...


INSTALLED: list[FaultSource] = []
"""The installed fault sources, innermost last; the adapter consults the last one."""
