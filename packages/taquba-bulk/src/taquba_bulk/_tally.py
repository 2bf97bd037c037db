"""The batch's item accounting: a pure, synchronous state machine.

Events come from three places, in any order and any number of times:

- admission (`admit`): the submitter reached an input; its run id joins the batch;
- observation (`observe`): the workflow's terminal hook saw an item's end. It runs after that
  end committed, at least once (a later retry of the item ends it again), so an observation
  is only a candidate until the database confirms it;
- confirmation (`confirm`): the database says the run has ended (the end committed), or
  `finish_earlier`: the item had succeeded in an earlier run of the batch.

An item is counted exactly once: when it is both admitted and confirmed (or finished
earlier), whichever comes last; later events for it are ignored. Ends of runs that are not
(yet) admitted are kept until the batch is sealed, since the runtime can finish an item left
running by an earlier process before the submitter reaches it. The batch is done when it is
sealed (every input admitted) and every admitted item is counted, never before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from taquba_workflow import TerminalStatus

from ._cost import CostReport
from ._errors import DuplicateItemKey
from ._types import OutputRecord, ProgressSnapshot

__all__ = ["Observation", "Tally"]


@dataclass(frozen=True, slots=True)
class Observation:
    """What the terminal hook saw of an item's end."""

    status: TerminalStatus
    output: Any
    error: str | None
    cost: CostReport | None


class Tally:
    """Counts a batch's items once each; see the module docstring."""

    def __init__(self, *, expected_total: int | None = None) -> None:
        self.expected_total = expected_total
        self.sealed = False
        self._inputs: dict[str, str] = {}  # admitted run id -> input digest
        self._counted: set[str] = set()
        self._observed: dict[str, Observation] = {}
        self._finished: dict[str, OutputRecord] = {}  # confirmed before admission
        self._outbox: list[OutputRecord] = []
        self.succeeded = 0
        self.failed = 0
        self.cancelled = 0
        self.skipped = 0
        self.cost = CostReport()
        self.failed_run_ids: list[str] = []

    # ------------------------------------------------------------------------ admission

    def admit(self, run_id: str, input_digest: str) -> bool:
        """Add an item to the batch; False if the same item was admitted already.

        Raises:
            DuplicateItemKey: the run id was admitted with another input.
        """
        known = self._inputs.get(run_id)
        if known is not None:
            if known != input_digest:
                raise DuplicateItemKey(run_id)
            return False
        self._inputs[run_id] = input_digest
        record = self._finished.pop(run_id, None)
        if record is not None:
            self._count(record)
        return True

    def seal(self) -> None:
        """Every input has been admitted: the total is final."""
        self.sealed = True
        self._finished.clear()
        for run_id in [r for r in self._observed if r not in self._inputs]:
            del self._observed[run_id]

    def is_member(self, run_id: str) -> bool:
        """Whether the run id was admitted."""
        return run_id in self._inputs

    def has_ended(self, run_id: str) -> bool:
        """Whether an end of the run was observed, confirmed or counted in this batch run."""
        return run_id in self._counted or run_id in self._observed or run_id in self._finished

    # ---------------------------------------------------------------------------- ends

    def observe(self, run_id: str, observation: Observation) -> None:
        """The hook saw the run end (its end committed); the latest observation wins."""
        if run_id in self._counted or (self.sealed and run_id not in self._inputs):
            return
        self._observed[run_id] = observation

    def confirm(self, run_id: str, status: TerminalStatus | None, error: str | None = None) -> None:
        """The run's end committed with ``status`` (None: the database no longer knows)."""
        observation = self._observed.pop(run_id, None)
        if run_id in self._counted:
            return
        if status is None:
            if observation is None:
                return
            status = observation.status
        output: Any = None
        cost = CostReport()
        if observation is not None:
            if observation.cost is not None:
                cost = observation.cost
            if observation.status is status:
                output = observation.output
                error = observation.error if observation.error is not None else error
        if status is not TerminalStatus.SUCCEEDED:
            output = None
        record = OutputRecord(run_id, status, output, error, cost)
        if run_id in self._inputs:
            self._count(record)
        elif not self.sealed:
            self._finished[run_id] = record

    def finish_earlier(self, run_id: str, output: Any, cost: CostReport) -> None:
        """The admitted item had succeeded in an earlier run: count it, without running it."""
        if run_id in self._counted:
            return
        self._observed.pop(run_id, None)
        if self._count(OutputRecord(run_id, TerminalStatus.SUCCEEDED, output, None, cost)):
            self.skipped += 1

    def _count(self, record: OutputRecord) -> bool:
        if record.run_id in self._counted:
            return False
        self._counted.add(record.run_id)
        if record.status is TerminalStatus.SUCCEEDED:
            self.succeeded += 1
        elif record.status is TerminalStatus.FAILED:
            self.failed += 1
            self.failed_run_ids.append(record.run_id)
        else:
            self.cancelled += 1
        self.cost.merge(record.cost)
        self._outbox.append(record)
        return True

    # -------------------------------------------------------------------------- queries

    def take_records(self) -> list[OutputRecord]:
        """The records counted since the last call, in counting order (for the sink)."""
        records, self._outbox = self._outbox, []
        return records

    @property
    def admitted(self) -> int:
        """Distinct items admitted."""
        return len(self._inputs)

    @property
    def completed(self) -> int:
        """Items counted."""
        return len(self._counted)

    @property
    def total(self) -> int | None:
        """The batch size: final once sealed, else the expected total (if any)."""
        if self.sealed:
            return self.admitted
        if self.expected_total is None:
            return None
        return max(self.expected_total, self.admitted)

    @property
    def done(self) -> bool:
        """Sealed, and every admitted item counted."""
        return self.sealed and len(self._counted) == len(self._inputs)

    @property
    def pending(self) -> int:
        """Admitted items not counted."""
        return len(self._inputs) - len(self._counted)

    def snapshot(self, elapsed: float) -> ProgressSnapshot:
        """The progress after ``elapsed`` seconds."""
        ran = self.completed - self.skipped
        rate = ran / elapsed if elapsed > 0 else 0.0
        total = self.total
        eta: float | None = None
        if total is not None and rate > 0:
            eta = max(total - self.completed, 0) / rate
        return ProgressSnapshot(
            total=total,
            submitted_all=self.sealed,
            admitted=self.admitted,
            completed=self.completed,
            succeeded=self.succeeded,
            failed=self.failed,
            cancelled=self.cancelled,
            skipped=self.skipped,
            elapsed=elapsed,
            rate=rate,
            eta=eta,
            cost=self.cost.copy(),
        )
