"""`CostReport`: named cost counters, per item and rolled up per batch."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from taquba import UsageError

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

__all__ = ["CostReport"]


def _check_metric(metric: object) -> str:
    if not isinstance(metric, str) or not metric:
        raise UsageError(f"a cost metric must be a non-empty str, not {metric!r}")
    return metric


def _check_amount(amount: object) -> float:
    if isinstance(amount, bool) or not isinstance(amount, (int, float)):
        raise UsageError(f"a cost amount must be a number, not {type(amount).__name__}")
    value = float(amount)
    if not math.isfinite(value):
        raise UsageError(f"a cost amount must be finite, not {value}")
    return value


class CostReport:
    """Named cost counters: tokens, paid-API calls, compute seconds, dollars, ...

    A counter is a float identified by any non-empty name; an absent counter reads 0.0.
    Pipelines add to the item's report with `BulkCtx.record_cost` (or through the
    ``*_with_cached_cost`` memo helpers); the runner rolls item reports up into the batch's,
    which `ProgressSnapshot.cost` and `BulkReport.cost` show. It serializes to a plain
    ``{metric: amount}`` map (`to_dict` / `from_dict`), sorted by name.

        cost = CostReport()
        cost.record("tokens", 1200)
        cost.record("usd", 0.0031)
        cost.get("tokens")         # 1200.0
        cost.merge(other)          # adds other's counters
    """

    __slots__ = ("_counters",)

    def __init__(self, counters: Mapping[str, float] | None = None) -> None:
        """Start from ``counters`` (copied), or empty.

        Raises:
            taquba.UsageError: a name is not a non-empty str or an amount not a finite number.
        """
        self._counters: dict[str, float] = {}
        for metric, amount in (counters or {}).items():
            self.record(metric, amount)

    def record(self, metric: str, amount: float = 1.0) -> None:
        """Add ``amount`` to the counter ``metric`` (creating it).

        Raises:
            taquba.UsageError: ``metric`` is not a non-empty str or ``amount`` not finite.
        """
        name = _check_metric(metric)
        self._counters[name] = self._counters.get(name, 0.0) + _check_amount(amount)

    def get(self, metric: str) -> float:
        """The counter ``metric``, 0.0 if it was never recorded."""
        return self._counters.get(metric, 0.0)

    def merge(self, other: CostReport) -> None:
        """Add every counter of ``other`` to this report."""
        if not isinstance(other, CostReport):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise UsageError(f"can only merge a CostReport, not {type(other).__name__}")
        for metric, amount in other._counters.items():
            self._counters[metric] = self._counters.get(metric, 0.0) + amount

    def items(self) -> list[tuple[str, float]]:
        """The ``(metric, amount)`` pairs, sorted by name."""
        return sorted(self._counters.items())

    def to_dict(self) -> dict[str, float]:
        """The counters as a plain dict, sorted by name (JSON and MessagePack friendly)."""
        return dict(self.items())

    @classmethod
    def from_dict(cls, data: Mapping[str, float]) -> CostReport:
        """The report `to_dict` produced.

        Raises:
            taquba.UsageError: ``data`` is not a map of names to finite numbers.
        """
        if not hasattr(data, "items"):
            raise UsageError(f"a cost report is a map, not {type(data).__name__}")
        return cls(data)

    def copy(self) -> CostReport:
        """An independent copy."""
        clone = CostReport()
        clone._counters = dict(self._counters)
        return clone

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._counters))

    def __len__(self) -> int:
        return len(self._counters)

    def __contains__(self, metric: object) -> bool:
        return metric in self._counters

    def __bool__(self) -> bool:
        return bool(self._counters)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CostReport):
            return NotImplemented
        return self._counters == other._counters

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        inner = ", ".join(f"{k!r}: {v!r}" for k, v in self.items())
        return f"CostReport({{{inner}}})"

    def summary(self, *, digits: int = 4) -> str:
        """A short human-readable form, ``"tokens=1200 usd=0.0031"`` (empty: ``"-"``)."""
        if not self._counters:
            return "-"
        return " ".join(f"{k}={_fmt(v, digits)}" for k, v in self.items())


def _fmt(value: float, digits: int) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.{digits}g}"
