"""The demo's console: narration and the live progress block of `taquba demo`.

ANSI styling and the in-place redraw are used only on a terminal at least 80 columns wide
(and colour only without ``NO_COLOR``); anywhere else the demo writes plain lines, at most
one progress line a second, so a log stays readable.
"""

from __future__ import annotations

import os
import shutil
import textwrap
import time
from collections import deque
from typing import TYPE_CHECKING, TextIO

import trio

if TYPE_CHECKING:
    from taquba import QueueStats
    from taquba._demo_jobs import Tracker

__all__ = ["Console", "Progress", "progress_bar"]


class Console:
    """Narration and the live progress block. ANSI only when writing to a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        isatty = getattr(stream, "isatty", None)
        columns = shutil.get_terminal_size((88, 24)).columns
        # The live block needs ~80 columns: a wrapped line would break the redraw.
        self.live = bool(isatty and isatty()) and os.environ.get("TERM") != "dumb" and columns >= 80
        self.color = self.live and "NO_COLOR" not in os.environ
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        self.unicode = encoding.startswith("utf")
        self.width = max(40, min(columns, 88) - 2)

    def _style(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color else text

    def bold(self, text: str) -> str:
        """Bold text on a terminal."""
        return self._style(text, "1")

    def dim(self, text: str) -> str:
        """Dimmed text on a terminal."""
        return self._style(text, "2")

    def good(self, text: str) -> str:
        """Green text on a terminal."""
        return self._style(text, "32")

    def bad(self, text: str) -> str:
        """Red text on a terminal."""
        return self._style(text, "31")

    def write(self, text: str = "") -> None:
        """Write one line."""
        self.stream.write(text + "\n")
        self.stream.flush()

    def heading(self, text: str) -> None:
        """A phase heading, after a blank line."""
        self.write()
        self.write(self.bold(text))

    def say(self, text: str) -> None:
        """A narration paragraph, wrapped to the terminal."""
        for line in textwrap.wrap(" ".join(text.split()), self.width - 2):
            self.write("  " + line)

    def item(self, text: str, *, indent: int = 4, wrap: bool = True) -> None:
        """An indented result, wrapped to the terminal (continuation lines indented more)."""
        first = " " * indent
        if not wrap:
            self.write(first + text)
            return
        for line in textwrap.wrap(
            text, self.width, initial_indent=first, subsequent_indent=first + "  "
        ):
            self.write(line)

    async def pause(self, seconds: float) -> None:
        """Give a human time to read (terminals only; logs do not wait)."""
        if self.live:
            await trio.sleep(seconds)


def progress_bar(fraction: float, width: int, *, unicode: bool) -> str:
    fraction = min(max(fraction, 0.0), 1.0)
    filled = round(fraction * width)
    full, empty = ("█", "░") if unicode else ("#", "-")
    return full * filled + empty * (width - filled)


class Progress:
    """Queue counters while workers run: redrawn in place on a terminal, else a line a second."""

    def __init__(
        self, console: Console, *, label: str, total: int, base: QueueStats, tracker: Tracker
    ) -> None:
        self._console = console
        self._label = label
        self._total = max(total, 1)
        self._base = base
        self._tracker = tracker
        self._started = time.monotonic()
        self._samples: deque[tuple[float, int]] = deque()
        self._drawn = 0
        self._last_line = -1.0

    @property
    def interval(self) -> float:
        """How often to sample the counters."""
        return 0.1 if self._console.live else 0.25

    def _settled(self, stats: QueueStats) -> int:
        return (stats.done - self._base.done) + (stats.dead - self._base.dead)

    def _rate(self, now: float, settled: int) -> float:
        self._samples.append((now, settled))
        while len(self._samples) > 2 and now - self._samples[0][0] > 2.0:
            self._samples.popleft()
        first_time, first_settled = self._samples[0]
        span = now - first_time
        return (settled - first_settled) / span if span > 0 else 0.0

    def update(self, stats: QueueStats, *, final: bool = False) -> None:
        """Show ``stats``: redraw the block, or print a line if a second has passed."""
        now = time.monotonic()
        elapsed = now - self._started
        settled = self._settled(stats)
        rate = self._rate(now, settled)
        if self._console.live:
            self._redraw(stats, settled, rate, elapsed)
        elif final or elapsed - self._last_line >= 1.0:
            self._last_line = elapsed
            self._console.write(
                f"  [{elapsed:5.1f}s] {self._label}: pending {stats.pending}, "
                f"scheduled {stats.scheduled}, claimed {stats.claimed}, done {stats.done}, "
                f"dead {stats.dead} | {settled}/{self._total} settled, {rate:.0f} jobs/s, "
                f"{self._tracker.transient_failures} transient failures"
            )

    def _redraw(self, stats: QueueStats, settled: int, rate: float, elapsed: float) -> None:
        c = self._console
        fraction = settled / self._total
        bar = progress_bar(fraction, 24, unicode=c.unicode)
        dead = f"dead {stats.dead:<5}"
        lines = [
            f"  {c.bold(f'{self._label:<10}')} [{c.good(bar)}] {fraction:4.0%}  "
            f"{settled}/{self._total} settled",
            f"    pending {stats.pending:<5} scheduled {stats.scheduled:<5} "
            f"claimed {stats.claimed:<5} {c.good(f'done {stats.done:<6}')} "
            f"{c.bad(dead) if stats.dead else dead}",
            f"    {rate:5.1f} jobs/s   {elapsed:5.1f} s   "
            f"{self._tracker.transient_failures} transient failures, each retried after a backoff",
        ]
        out = c.stream
        if self._drawn:
            out.write(f"\x1b[{self._drawn}F")
        for line in lines:
            out.write("\x1b[2K" + line + "\n")
        out.flush()
        self._drawn = len(lines)
