"""Public records: output records, progress snapshots and batch reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from taquba_workflow import TerminalStatus

from ._cost import CostReport

__all__ = ["BulkReport", "OutputRecord", "ProgressSnapshot", "TerminalStatus"]


@dataclass(frozen=True, slots=True)
class OutputRecord:
    """The result of one item, as an output sink receives it.

    Sinks get exactly one record per item of a batch run (an item counted once even when its
    end is reported more than once), written once the item's end has committed. Across runs
    of a batch (a crash, a resume) a consumer can see an item again: deduplicate on
    ``run_id``.
    """

    run_id: str
    """The item's key (its workflow run id)."""
    status: TerminalStatus
    """How the item ended: ``succeeded``, ``failed`` or ``cancelled``."""
    output: Any = None
    """The pipeline's output in plain form (`Pipeline.encode_output`); None unless succeeded."""
    error: str | None = None
    """Why the item failed or was cancelled (None when succeeded or not known)."""
    cost: CostReport = field(default_factory=CostReport)
    """The item's cost counters (for a failed item: those of its last attempt, if known)."""

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON object `JsonlSink` writes for this record.

        Keys: ``run_id``, ``status``, then ``output`` (when succeeded), ``error`` (when set)
        and ``cost`` (when not empty).
        """
        data: dict[str, Any] = {"run_id": self.run_id, "status": self.status.value}
        if self.status is TerminalStatus.SUCCEEDED:
            data["output"] = self.output
        if self.error is not None:
            data["error"] = self.error
        if self.cost:
            data["cost"] = self.cost.to_dict()
        return data


@dataclass(frozen=True, slots=True, kw_only=True)
class ProgressSnapshot:
    """A point-in-time view of a batch run (`Bulk.progress`)."""

    total: int | None
    """Items in the batch: exact once `submitted_all`; before that the expected count
    (``len(inputs)`` or ``expected_total``) or None if unknown."""
    submitted_all: bool
    """Every input has been read and admitted (submitted, recognised as running, or found
    done), so `total` is final."""
    admitted: int
    """Distinct items admitted so far."""
    completed: int
    """Items whose end has committed: `succeeded` + `failed` + `cancelled`."""
    succeeded: int
    """Items that succeeded (including `skipped` ones)."""
    failed: int
    """Items that failed (a permanent error, or every attempt failed)."""
    cancelled: int
    """Items that were cancelled (`Bulk.cancel`)."""
    skipped: int
    """Items that had succeeded in an earlier run of the batch and were not run again."""
    elapsed: float
    """Seconds since the run started."""
    rate: float
    """Items completed per second by this run (skipped items excluded)."""
    eta: float | None
    """Estimated seconds until the batch is complete at the current rate; None while
    unknown (no total yet, or nothing completed)."""
    cost: CostReport
    """The cost counters rolled up over the completed items (a copy)."""

    @property
    def remaining(self) -> int | None:
        """Items not completed yet, None while the total is unknown."""
        return None if self.total is None else max(self.total - self.completed, 0)

    @property
    def done(self) -> bool:
        """Whether every item of the batch has completed."""
        return self.submitted_all and self.completed >= (self.total or 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class BulkReport:
    """What a batch run did (`Bulk.run`)."""

    total: int
    """Distinct items admitted (all the inputs, unless the run was interrupted early)."""
    succeeded: int
    """Items that succeeded (including `skipped` ones)."""
    failed: int
    """Items that failed."""
    cancelled: int
    """Items that were cancelled."""
    skipped: int
    """Items that had succeeded in an earlier run and were not run again."""
    pending: int
    """Admitted items that have not completed (an interrupted run); run again to resume."""
    complete: bool
    """Every input was admitted and every item completed."""
    elapsed: float
    """Seconds the run took."""
    submit_elapsed: float
    """Seconds spent admitting the inputs (submission runs concurrently with processing)."""
    cost: CostReport
    """The cost counters rolled up over the completed items."""
    failed_run_ids: tuple[str, ...]
    """Keys of the failed items, in completion order (rerunning the batch resumes them from
    their memos)."""

    @property
    def completed(self) -> int:
        """Items that completed: `succeeded` + `failed` + `cancelled`."""
        return self.succeeded + self.failed + self.cancelled
