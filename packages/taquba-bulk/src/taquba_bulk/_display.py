"""The live progress bar (rich), shown when the run is attached to a terminal."""

from __future__ import annotations

from typing import TYPE_CHECKING, Self

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

if TYPE_CHECKING:
    from types import TracebackType

    from ._types import ProgressSnapshot

__all__ = ["LiveProgress", "stderr_is_terminal"]


def stderr_is_terminal() -> bool:
    """Whether standard error is an interactive terminal rich can draw on."""
    return Console(stderr=True).is_terminal


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-:--"
    seconds = int(seconds + 0.5)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class LiveProgress:
    """A one-line rich progress bar on standard error, redrawn by `update`.

    ``bulk ━━━━━━━━━━━━━━ 420/1000 ok 415 failed 5 | 38.2/s eta 0:15 | tokens=91000``
    """

    def __init__(self, description: str = "bulk", *, console: Console | None = None) -> None:
        self._console = console if console is not None else Console(stderr=True)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("ok {task.fields[ok]} failed {task.fields[failed]}"),
            TextColumn("| {task.fields[rate]} eta {task.fields[eta]}"),
            TextColumn("| {task.fields[cost]}"),
            console=self._console,
            auto_refresh=False,  # redrawn from the trio task that calls update()
            transient=False,
        )
        self._task: TaskID | None = None
        self._description = description

    def __enter__(self) -> Self:
        self._progress.start()
        self._task = self._progress.add_task(
            self._description, total=None, ok=0, failed=0, rate="-/s", eta="-:--", cost="-"
        )
        return self

    def update(self, snapshot: ProgressSnapshot) -> None:
        """Redraw the bar from ``snapshot``."""
        if self._task is None:
            return
        failed = snapshot.failed + snapshot.cancelled
        self._progress.update(
            self._task,
            total=snapshot.total,
            completed=snapshot.completed,
            ok=snapshot.succeeded,
            failed=failed,
            rate=f"{snapshot.rate:.1f}/s",
            eta=_duration(0.0 if snapshot.done else snapshot.eta),
            cost=snapshot.cost.summary(),
        )
        self._progress.refresh()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._progress.stop()
