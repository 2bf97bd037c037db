"""The taquba-bulk error tree.

Every error taquba-bulk raises on purpose is a `taquba.TaqubaError`; its own errors derive
from `BulkError`::

    taquba.TaqubaError
    ├── taquba.UsageError           a misuse: a bad argument, a call out of order (never retry)
    │   ├── InvalidItemKey          a key function returned a run id outside [A-Za-z0-9_-]{1,128}
    │   ├── DuplicateItemKey        two different items of one batch share a run id
    │   └── UnserializableItem      an item MessagePack cannot encode
    └── BulkError
        ├── InvalidItemKey, DuplicateItemKey, UnserializableItem   (also usage errors, above)
        ├── ItemInputMismatch       a run id active or succeeded with a different input
        ├── InvalidInputLine        `read_jsonl` met a line that is not JSON (also a ValueError)
        ├── OutputError             the output sink failed; the batch stopped
        └── FailureThresholdExceeded  the share of failed items crossed the threshold

Any other misuse (a bad option, a second concurrent `Bulk.run`) raises `taquba.UsageError`
itself. `InvalidInputLine` is bad input data, not a misuse of the API: a `BulkError`, and a
`ValueError` like the JSON decoder's error it reports.

Pipelines classify their own failures with the step errors of `taquba_workflow`, re-exported
here: `TransientStepError` (retry the item with the queue's backoff) and `PermanentStepError`
(fail the item now), both `StepError`s. Errors of the queue and the store
(`taquba.StorageUnavailable`, `taquba.Fenced`, ...) reach the caller as the `taquba` errors
they are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from taquba import TaqubaError, UsageError

if TYPE_CHECKING:
    from ._types import BulkReport

__all__ = [
    "BulkError",
    "DuplicateItemKey",
    "FailureThresholdExceeded",
    "InvalidInputLine",
    "InvalidItemKey",
    "ItemInputMismatch",
    "OutputError",
    "UnserializableItem",
]


class BulkError(TaqubaError):
    """Base class of every error specific to taquba-bulk (a `taquba.TaqubaError`)."""


class InvalidItemKey(BulkError, UsageError):
    """A key function returned something that is not a valid run id.

    Each item becomes a `taquba_workflow` run, and its key is the run id: 1 to 128 characters
    of ``[A-Za-z0-9_-]``, because it becomes an object-path segment and a key segment. Derive
    keys from URLs or paths by hashing them (`key_by_content` does it for whole items).
    """

    def __init__(self, key: object, reason: str) -> None:
        super().__init__(f"invalid item key {key!r}: {reason}")
        self.key = key
        """The rejected key, as returned by the key function."""
        self.reason = reason
        """Why it was rejected."""


class DuplicateItemKey(BulkError, UsageError):
    """Two items of one batch have the same key but different inputs.

    Items with the same key and the same input are one item (it runs once and is counted
    once); a key shared by different inputs means the key function is not injective.
    """

    def __init__(self, run_id: str) -> None:
        super().__init__(f"two different items of the batch have the key {run_id!r}")
        self.run_id = run_id
        """The shared key."""


class UnserializableItem(BulkError, UsageError, TypeError):
    """An item (after `Pipeline.encode_input`) cannot be serialized with MessagePack."""


class ItemInputMismatch(BulkError):
    """A run id is active, or succeeded earlier, with a different input.

    Rerunning a batch resumes it only if every key still names the same input. This is raised
    when, for example, positional keys (``item-<index>``) meet an edited input file. Use
    content-derived keys (`key_by_content`) or a fresh ``queue_name`` and ``memo_prefix`` for
    a different data set.
    """

    def __init__(self, run_id: str) -> None:
        super().__init__(
            f"item {run_id!r} was submitted before with a different input; "
            "keys must name the same input on every run of a batch"
        )
        self.run_id = run_id
        """The run id whose input changed."""


class InvalidInputLine(BulkError, ValueError):
    """A line of a JSON Lines input is not valid JSON."""

    def __init__(self, line_number: int, line: str, reason: str) -> None:
        excerpt = line if len(line) <= 80 else line[:77] + "..."
        super().__init__(f"line {line_number}: {reason}: {excerpt!r}")
        self.line_number = line_number
        """The 1-based number of the line."""
        self.line = line
        """The line's text (without its newline)."""
        self.reason = reason
        """What the JSON decoder said."""


class OutputError(BulkError):
    """The output sink failed to write or flush a record; the batch stopped.

    The items themselves are complete and durable: running the batch again writes the records
    of every item that succeeded earlier from the store, without running them again.
    """


class FailureThresholdExceeded(BulkError):
    """The share of failed items crossed the configured ``failure_threshold``.

    Raised by `Bulk.run` once the outcome is certain: as soon as the failures alone exceed the
    threshold of the batch's total (the items still in flight are drained first and the rest
    stay queued), or at the end. `report` holds what was done.
    """

    def __init__(self, report: BulkReport, threshold: float) -> None:
        super().__init__(
            f"bulk run failed: {report.failed}/{report.total} items failed, "
            f"over the {threshold:.1%} threshold"
        )
        self.report = report
        """The batch's report at the time it stopped."""
        self.threshold = threshold
        """The threshold that was crossed (a fraction of the batch's items)."""

    @property
    def failed(self) -> int:
        """How many items failed."""
        return self.report.failed

    @property
    def total(self) -> int:
        """How many items the batch has."""
        return self.report.total
