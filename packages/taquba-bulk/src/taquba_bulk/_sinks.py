"""Input and output: `read_jsonl`, the `OutputSink` protocol and the bundled sinks."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, Protocol, Self, TextIO, runtime_checkable

from taquba import UsageError

from ._errors import InvalidInputLine

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from types import TracebackType

    from ._types import OutputRecord

__all__ = ["JsonlSink", "MemorySink", "NullSink", "OutputSink", "read_jsonl"]


@runtime_checkable
class OutputSink(Protocol):
    """Where a batch's results go: one `OutputRecord` per item.

    `write` is called from the event loop, once per item, as soon as the item's end has
    committed (in completion order, not input order); `flush` at least at the end of a run
    (and about once a second while records arrive). Both are synchronous: keep them fast (a
    buffered file, a list). An exception from either stops the batch with `OutputError`; the
    items stay done, and running the batch again writes their records again.
    """

    def write(self, record: OutputRecord) -> None:
        """Take one item's record."""
        ...

    def flush(self) -> None:
        """Push buffered records to where they go."""
        ...


class NullSink:
    """Discards every record: for pipelines whose work is their side effects."""

    def write(self, record: OutputRecord) -> None:
        """Discard ``record``."""

    def flush(self) -> None:
        """Do nothing."""


class MemorySink:
    """Keeps every record in `records`, in completion order (for tests and small batches)."""

    def __init__(self) -> None:
        self.records: list[OutputRecord] = []
        """The records received so far."""

    def write(self, record: OutputRecord) -> None:
        """Append ``record`` to `records`."""
        self.records.append(record)

    def flush(self) -> None:
        """Do nothing."""

    def by_run_id(self) -> dict[str, OutputRecord]:
        """The records by run id (the last one wins)."""
        return {record.run_id: record for record in self.records}


class JsonlSink:
    """Writes one JSON object per line: ``{"run_id", "status", "output"?, "error"?, "cost"?}``.

    Every line carries the item's ``run_id``, so a consumer can deduplicate records an
    interrupted and resumed batch wrote twice. Give it a path (opened for writing, truncated
    unless ``append``; closed by `close` or the ``with`` block) or an open text stream (left
    open). Records are JSON with UTF-8 text (``ensure_ascii=False``) and no NaN or infinity.

        with JsonlSink("out.jsonl") as sink:
            report = await Bulk(queue, pipeline, output=sink).run(items)
    """

    def __init__(self, target: str | os.PathLike[str] | TextIO, *, append: bool = False) -> None:
        """Write to the file at ``target`` or to the text stream ``target``.

        Raises:
            OSError: the file cannot be opened.
        """
        if isinstance(target, (str, os.PathLike)):
            self._file: TextIO = open(  # noqa: SIM115 - closed by close()
                target, "a" if append else "w", encoding="utf-8", newline="\n"
            )
            self._owned = True
        elif hasattr(target, "write"):
            self._file = target
            self._owned = False
        else:
            raise UsageError("JsonlSink takes a path or a text stream")
        self._written = 0

    @property
    def written(self) -> int:
        """How many records this sink has written."""
        return self._written

    def write(self, record: OutputRecord) -> None:
        """Write ``record`` as one line of JSON."""
        line = json.dumps(
            record.to_json_dict(), ensure_ascii=False, separators=(",", ":"), allow_nan=False
        )
        self._file.write(line + "\n")
        self._written += 1

    def flush(self) -> None:
        """Flush the stream's buffer to the operating system."""
        self._file.flush()

    def close(self) -> None:
        """Flush, and close the file if the sink opened it."""
        if self._file.closed:
            return
        self._file.flush()
        if self._owned:
            self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def read_jsonl(
    source: str | os.PathLike[str] | Iterable[str],
    *,
    on_error: Callable[[InvalidInputLine], None] | None = None,
) -> Iterator[Any]:
    """Yield the JSON value of each line of a JSON Lines file, lazily.

    Blank lines are skipped. A line that is not JSON raises `InvalidInputLine` (with its line
    number), unless ``on_error`` is given: then it is called with the error and reading goes
    on (``errors = []; read_jsonl(path, on_error=errors.append)``).

    Args:
        source: a path (opened as UTF-8, closed when the iterator ends) or an iterable of lines
            such as an open text file.
        on_error: called for each bad line instead of raising.
    """
    if isinstance(source, (str, os.PathLike)):
        return _read_path(os.fspath(source), on_error)
    if not hasattr(source, "__iter__"):
        raise UsageError("read_jsonl takes a path or an iterable of lines")
    return _read_lines(source, on_error)


def _read_path(path: str, on_error: Callable[[InvalidInputLine], None] | None) -> Iterator[Any]:
    with open(path, encoding="utf-8") as lines:
        yield from _read_lines(lines, on_error)


def _read_lines(
    lines: Iterable[str], on_error: Callable[[InvalidInputLine], None] | None
) -> Iterator[Any]:
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            error = InvalidInputLine(number, line, str(exc))
            if on_error is None:
                raise error from exc
            on_error(error)
            continue
        yield value


def count_jsonl_items(path: str | os.PathLike[str]) -> int:
    """How many non-blank lines a JSON Lines file has (the CLI's expected total)."""
    count = 0
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                count += 1
    return count
