"""Injected storage faults: writes and reads that misbehave on purpose.

The storage adapter asks the installed `FaultInjector`, if any, before each write (a
transaction commit, or a plain put or delete) and each read (a get or a scan); see
`taquba._failpoints`. Tests of taquba and of code built on it install one with
`inject_faults`; nothing else does.

A write fault takes effect at the point where the real fault would:

- ``slow``: the write is applied, then the durability wait is delayed by ``seconds``. Inside
  the commit deadline, so a delay past it is reported as an unknown outcome, exactly as a slow
  WAL flush would be.
- ``conflict``: a transaction commit is refused as conflicting; nothing is applied (a plain
  put or delete cannot conflict, so the rule skips them).
- ``unavailable``: the write is refused as transiently unavailable; nothing is applied.
- ``permanent``: the write fails with a permanent `StorageError`; nothing is applied.
- ``unknown``: the write is applied, then reported as `StorageUnavailable` ("commit outcome
  unknown") instead of waiting for durability, like a durability wait that timed out (the
  write becomes durable with a later flush).
- ``lost``: reported like ``unknown``, but nothing is applied (the other side of "unknown").

Read faults: ``slow`` (the read waits, then runs), ``unavailable`` and ``permanent``.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from .._errors import UsageError
from .._failpoints import INSTALLED, FaultKind, Site

if TYPE_CHECKING:
    from collections.abc import Generator

__all__ = ["Fault", "FaultInjector", "InjectedFault", "inject_faults"]

_WRITE_KINDS: Final = frozenset({"slow", "conflict", "unavailable", "permanent", "unknown", "lost"})
_READ_KINDS: Final = frozenset({"slow", "unavailable", "permanent"})


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault to inject: its kind and, for ``slow``, how long to stall."""

    kind: FaultKind
    """What the fault does."""
    seconds: float = 0.0
    """How long a ``slow`` fault stalls the call."""

    def __post_init__(self) -> None:
        if self.kind not in _WRITE_KINDS:
            raise UsageError(f"unknown fault kind {self.kind!r}")
        if not (self.seconds >= 0):  # also refuses NaN
            raise UsageError(f"fault seconds must be >= 0, not {self.seconds!r}")

    @classmethod
    def slow(cls, seconds: float) -> Fault:
        """Stall the call for ``seconds`` (a write: after it is applied, before durability)."""
        return cls("slow", seconds)

    @classmethod
    def conflict(cls) -> Fault:
        """Refuse a transaction commit as a write conflict; nothing is applied."""
        return cls("conflict")

    @classmethod
    def unavailable(cls) -> Fault:
        """Fail transiently (`StorageUnavailable`) before anything is applied."""
        return cls("unavailable")

    @classmethod
    def permanent(cls) -> Fault:
        """Fail with a permanent `StorageError` before anything is applied."""
        return cls("permanent")

    @classmethod
    def unknown(cls) -> Fault:
        """Apply the write, then report its outcome as unknown (`StorageUnavailable`)."""
        return cls("unknown")

    @classmethod
    def lost(cls) -> Fault:
        """Report the outcome as unknown (`StorageUnavailable`) without applying the write."""
        return cls("lost")


@dataclass(frozen=True, slots=True)
class InjectedFault:
    """A record of one fault the injector injected."""

    site: Site
    """The adapter call it hit."""
    fault: Fault
    """What was injected."""
    durable: bool
    """For a write: whether the caller waited for durability."""


@dataclass(slots=True, eq=False)
class _Rule:
    fault: Fault
    reads: bool
    times: int | None
    skip: int
    probability: float
    durable: bool | None
    transactions_only: bool
    flushes: bool = False

    def matches(self, *, reads: bool, transaction: bool, durable: bool, flush: bool) -> bool:
        if self.flushes != flush:
            return False
        if self.reads != reads:
            return False
        if self.transactions_only and not transaction:
            return False
        return self.durable is None or self.durable == durable


@dataclass(slots=True, eq=False)
class FaultInjector:
    """A set of fault rules the storage adapter consults while installed (`inject_faults`).

    Each rule matches writes (`on_write`) or reads (`on_read`); the first matching rule that
    fires decides the call's fault. A rule can skip its first matches, fire a limited number
    of times, and fire with a probability (drawn from the injector's seeded generator, so a
    failing run can be replayed with the same seed).
    """

    seed: int | None = None
    """Seed of the generator behind rule probabilities."""
    injected: list[InjectedFault] = field(default_factory=list[InjectedFault], init=False)
    """Every fault injected so far, in order."""
    _rules: list[_Rule] = field(default_factory=list[_Rule], init=False)
    _random: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def on_write(
        self,
        fault: Fault,
        *,
        times: int | None = 1,
        skip: int = 0,
        probability: float = 1.0,
        durable: bool | None = None,
    ) -> None:
        """Inject ``fault`` into matching writes (commits, puts, deletes).

        Args:
            fault: What to inject.
            times: How many times the rule fires (None: for as long as it is installed).
            skip: Matching writes to let through before the rule starts firing.
            probability: The chance that a matching write (past ``skip``) gets the fault.
            durable: Only writes that wait for durability (True) or that do not (False, e.g.
                claims and background work); None matches both.
        """
        self._add(
            fault, reads=False, times=times, skip=skip, probability=probability, durable=durable
        )

    def on_read(
        self, fault: Fault, *, times: int | None = 1, skip: int = 0, probability: float = 1.0
    ) -> None:
        """Inject ``fault`` (``slow``, ``unavailable`` or ``permanent``) into gets and scans.

        Arguments as for `on_write`.
        """
        if fault.kind not in _READ_KINDS:
            raise UsageError(f"a read cannot fail with {fault.kind!r}")
        self._add(fault, reads=True, times=times, skip=skip, probability=probability, durable=None)

    def on_flush(
        self, fault: Fault, *, times: int | None = 1, skip: int = 0, probability: float = 1.0
    ) -> None:
        """Inject ``fault`` (``slow``, ``unavailable`` or ``permanent``) into requested WAL flushes.

        A durable write asks for a WAL flush (durability on demand); a ``slow`` fault stalls
        that flush (writes queue behind it), a failing one makes its writers fall back to
        SlateDB's flush timer. Arguments as for `on_write`.
        """
        if fault.kind not in _READ_KINDS:
            raise UsageError(f"a flush cannot fail with {fault.kind!r}")
        self._add(fault, reads=False, times=times, skip=skip, probability=probability, durable=None)
        self._rules[-1].flushes = True

    def clear(self) -> None:
        """Remove every rule (what was injected stays in `injected`)."""
        self._rules.clear()

    @property
    def armed(self) -> int:
        """How many rules can still fire."""
        return len(self._rules)

    def _add(
        self,
        fault: Fault,
        *,
        reads: bool,
        times: int | None,
        skip: int,
        probability: float,
        durable: bool | None,
    ) -> None:
        if times is not None and times < 1:
            raise UsageError(f"times must be >= 1 or None, not {times!r}")
        if skip < 0:
            raise UsageError(f"skip must be >= 0, not {skip!r}")
        if not 0.0 <= probability <= 1.0:
            raise UsageError(f"probability must be within [0, 1], not {probability!r}")
        self._rules.append(
            _Rule(
                fault,
                reads,
                times,
                skip,
                probability,
                durable,
                transactions_only=fault.kind == "conflict",
            )
        )

    def pick(self, site: Site, *, transaction: bool = False, durable: bool = False) -> Fault | None:
        """The fault to inject into this call, or None (called by the adapter)."""
        reads = site in ("get", "scan")
        flush = site == "flush"
        for rule in self._rules:
            if not rule.matches(reads=reads, transaction=transaction, durable=durable, flush=flush):
                continue
            if rule.skip:
                rule.skip -= 1
                continue
            if rule.probability < 1.0 and self._random.random() >= rule.probability:
                continue
            if rule.times is not None:
                rule.times -= 1
                if rule.times == 0:
                    self._rules.remove(rule)
            self.injected.append(InjectedFault(site, rule.fault, durable))
            return rule.fault
        return None


@contextlib.contextmanager
def inject_faults(seed: int | None = None) -> Generator[FaultInjector]:
    """Install a fresh `FaultInjector` for the ``with`` block and yield it.

    The injector applies to every queue and database of the process (the adapter is shared).
    Blocks nest: the innermost injector is the one consulted.
    """
    injector = FaultInjector(seed)
    INSTALLED.append(injector)
    try:
        yield injector
    finally:
        INSTALLED.remove(injector)
