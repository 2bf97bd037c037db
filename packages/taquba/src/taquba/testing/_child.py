"""A Python program in a child process, read line by line and killed with SIGKILL.

The scaffolding of crash tests: the child is a fresh interpreter (``sys.executable``, never a
fork of the test process) that reports through stdout, one flushed line per event, printed
only *after* the call it reports returned. Whatever the test read is then a promise the store
must keep after the kill.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import sys
import tempfile
from contextlib import asynccontextmanager
from typing import IO, TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Callable, Mapping

_logger = logging.getLogger("taquba.testing")
_STDERR_TAIL = 4000
_LAST_LINES = 20
_REAP_DEADLINE = 10.0
_EXIT_DEADLINE = 5.0


class ChildExited(AssertionError):
    """The child's output ended before what the test waited for, or it exited unexpectedly.

    It is an `AssertionError`, so pytest reports it as a failed expectation. The message
    describes the child: its command, how it ended, the last lines it printed and the end of
    its standard error.
    """


class Child:
    """A Python program running in a child process, its stdout read line by line.

    Made by `open_child`, which kills the child (if it still runs) when its block ends. The
    reading methods raise `ChildExited` when the output ends before what they wait for; bound
    how long they may wait with `trio.fail_after` around them.
    """

    def __init__(self, process: trio.Process, argv: list[str], stderr: IO[bytes]) -> None:
        self._process = process
        self._argv = argv
        self._stderr = stderr
        self._stderr_text: str | None = None
        self._buffer = b""
        self._eof = False
        self._waiting_for: str | None = None
        self.lines: list[str] = []
        """Every complete line the child printed that was read so far, without its newline."""

    @property
    def process(self) -> trio.Process:
        """The running `trio.Process` (its ``pid``, ``returncode``, ``wait()``)."""
        return self._process

    @property
    def returncode(self) -> int | None:
        """The child's exit status once it is known: negative for a signal, None while it runs."""
        return self._process.returncode

    async def next_line(self) -> str | None:
        """The next complete line the child printed, or None at the end of its output.

        A last line cut short by a kill (no newline) is dropped, never returned half-written.
        """
        stdout = self._process.stdout
        if stdout is None:  # pragma: no cover - open_child always pipes stdout
            raise RuntimeError("the child's stdout is not a pipe")
        while b"\n" not in self._buffer:
            if self._eof:
                return None
            data = await stdout.receive_some(65536)
            if not data:
                self._eof = True
                return None
            self._buffer += data
        raw, self._buffer = self._buffer.split(b"\n", 1)
        line = raw.decode(errors="replace")
        self.lines.append(line)
        return line

    async def expect(self, wanted: str | Callable[[str], bool]) -> str:
        """Read lines until one equals ``wanted`` (or satisfies it, if callable); return it.

        Raises:
            ChildExited: The output ended first.
        """
        if isinstance(wanted, str):
            what = repr(wanted)
            match: Callable[[str], bool] = wanted.__eq__
        else:
            what = f"a line satisfying {getattr(wanted, '__qualname__', repr(wanted))}"
            match = wanted
        self._waiting_for = what
        while (line := await self.next_line()) is not None:
            if match(line):
                self._waiting_for = None
                return line
        raise ChildExited(await self._ended_before(what))

    async def read_until(self, condition: Callable[[], bool]) -> None:
        """Read lines until ``condition()`` holds; it is checked before each line is read.

        Typically the condition counts lines: ``lambda: len(child.tagged("DONE")) >= 10``.

        Raises:
            ChildExited: The output ended first.
        """
        what = f"{getattr(condition, '__qualname__', repr(condition))} to hold"
        self._waiting_for = what
        while not condition():
            if await self.next_line() is None:
                raise ChildExited(await self._ended_before(what))
        self._waiting_for = None

    def tagged(self, tag: str) -> list[list[str]]:
        """The words after ``tag`` of every line read so far whose first word is ``tag``."""
        found: list[list[str]] = []
        for line in self.lines:
            words = line.split()
            if words and words[0] == tag:
                found.append(words[1:])
        return found

    async def kill(self) -> None:
        """SIGKILL the child, read what it printed before dying, and wait until it is gone.

        Raises:
            ChildExited: The child had already exited on its own, so the kill did not land.
        """
        if self._process.returncode is None:
            self._process.send_signal(signal.SIGKILL)
        await self._read_to_end()
        code = await self._process.wait()
        if code != -signal.SIGKILL:
            raise ChildExited(f"the child exited by itself before the SIGKILL\n{self.describe()}")

    async def expect_exit(self, returncode: int = 0) -> None:
        """Read the rest of the child's output and wait for it to exit with ``returncode``.

        Raises:
            ChildExited: It exited with another status.
        """
        self._waiting_for = f"exit status {returncode}"
        await self._read_to_end()
        code = await self._process.wait()
        self._waiting_for = None
        if code != returncode:
            raise ChildExited(f"the child exited with {code}, not {returncode}\n{self.describe()}")

    def stderr(self) -> str:
        """The end (a few thousand characters) of what the child wrote to its standard error."""
        if self._stderr_text is not None:
            return self._stderr_text
        fd = self._stderr.fileno()
        size = os.fstat(fd).st_size
        start = max(0, size - _STDERR_TAIL)
        return os.pread(fd, size - start, start).decode(errors="replace")

    def describe(self) -> str:
        """A report for failure messages: command, state, last lines printed, end of stderr."""
        code = self._process.returncode
        if code is None:
            state = f"running (pid {self._process.pid})"
        elif code < 0:
            state = f"killed by {_signal_name(-code)}"
        else:
            state = f"exited with status {code}"
        report = [f"child process: {shlex.join(self._argv)}", f"state: {state}"]
        if self._waiting_for is not None:
            report.append(f"waiting for: {self._waiting_for}")
        shown = self.lines[-_LAST_LINES:]
        report.append(f"stdout: {len(self.lines)} lines read, the last {len(shown)}:")
        report.extend(f"  | {line}" for line in shown)
        if self._buffer:
            report.append(f"  | {self._buffer.decode(errors='replace')}  (no newline yet)")
        err = self.stderr()
        report.append("stderr (its end):" if err else "stderr: empty")
        report.extend(f"  | {line}" for line in err.splitlines())
        return "\n".join(report)

    async def _read_to_end(self) -> None:
        while await self.next_line() is not None:
            pass

    async def _ended_before(self, what: str) -> str:
        with trio.move_on_after(_EXIT_DEADLINE):
            await self._process.wait()
        return f"the child's output ended before {what}\n{self.describe()}"

    async def _close(self) -> None:
        with trio.CancelScope(shield=True):
            if self._process.returncode is None:
                self._process.kill()  # SIGKILL: never leave a child behind, whatever happened
            with trio.move_on_after(_REAP_DEADLINE):
                await self._process.wait()
            if self._process.stdout is not None:
                await self._process.stdout.aclose()
        self._stderr_text = self.stderr()
        self._stderr.close()


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


@asynccontextmanager
async def open_child(
    *argv: str | os.PathLike[str],
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> AsyncGenerator[Child]:
    """Run ``python *argv`` in a child process for the block; SIGKILL it if it still runs after.

    The interpreter is `sys.executable`, started afresh (never forked), with unbuffered
    output, stdin from ``/dev/null`` and stderr kept in a temporary file for error reports.
    Pass a script path, or ``"-m", "package.module"``, then the program's arguments.

        async with open_child(CHILD, str(store_dir)) as child:
            with trio.fail_after(30):
                await child.expect("READY")
                await child.read_until(lambda: len(child.tagged("ACK")) >= 10)
            await child.kill()
        acked = child.tagged("ACK")  # everything it printed, kill included

    An exception leaving the block gets `Child.describe` as a note; when the block is
    cancelled (say by a `trio.fail_after` around it), the description is logged as a warning
    on the ``taquba.testing`` logger instead, which pytest shows with the failure. POSIX only.

    Args:
        *argv: The interpreter's arguments: a script or ``-m module``, then its own.
        cwd: The child's working directory (default: the test's).
        env: Variables added to (or replacing some of) the inherited environment.
    """
    command = [sys.executable, *(os.fspath(arg) for arg in argv)]
    stderr = tempfile.TemporaryFile()  # noqa: SIM115 - the Child owns it and closes it
    try:
        process = await trio.lowlevel.open_process(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            cwd=cwd,
            env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
        )
    except BaseException:
        stderr.close()
        raise
    child = Child(process, command, stderr)
    try:
        yield child
    except ChildExited:
        raise  # it describes the child already
    except Exception as exc:
        exc.add_note(child.describe())
        raise
    except BaseException:
        _logger.warning("the block running a child process was interrupted\n%s", child.describe())
        raise
    finally:
        await child._close()  # pyright: ignore[reportPrivateUsage]
