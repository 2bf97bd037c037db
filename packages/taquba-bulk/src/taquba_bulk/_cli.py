"""The ``taquba-bulk`` command: run a pipeline over a JSON Lines file without writing a driver.

::

    taquba-bulk run MODULE:PIPELINE --input IN.jsonl --store URL [--output OUT.jsonl]
        [--db NAME] [--queue-name NAME] [--memo-prefix PREFIX] [--key index|content|field:NAME]
        [--header NAME=VALUE ...] [--concurrency N] [--submit-concurrency N]
        [--max-attempts N] [--failure-threshold F] [--poll-interval S] [--shutdown-grace S]
        [--progress | --no-progress] [--skip-bad-lines] [--append]

``MODULE:PIPELINE`` names a `Pipeline` instance, a `Pipeline` subclass (built without
arguments) or an async function ``fn(ctx) -> output`` (wrapped with `as_pipeline`), importable
from the current directory. Each non-blank input line is one item (its JSON value, handed to
`Pipeline.decode_input`); each item's `OutputRecord` becomes one line of ``--output``. Running
the same command again resumes the batch. SIGINT or SIGTERM drains the items in flight and
stops (a second one stops at once). Exit status: 0 when every item completed (some may have
failed, under ``--failure-threshold``), 1 when the run failed (threshold exceeded, storage or
output errors), 2 for bad input (options, the pipeline reference, the input file, keys),
130/143 when interrupted by SIGINT/SIGTERM. Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, Any, Final, TextIO

import trio

import taquba
from taquba import Store, TaqubaError

from . import _codec as codec  # pyright: ignore[reportPrivateUsage]
from ._bulk import DEFAULT_MEMO_PREFIX, DEFAULT_QUEUE_NAME, Bulk
from ._errors import (
    BulkError,
    FailureThresholdExceeded,
    InvalidInputLine,
    InvalidItemKey,
    ItemInputMismatch,
)
from ._pipeline import BulkCtx, Pipeline, StepError, as_pipeline
from ._sinks import JsonlSink, NullSink, OutputSink, count_jsonl_items, read_jsonl

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from ._types import BulkReport

__all__ = ["CliError", "build_parser", "main"]

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
_SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}

log = logging.getLogger("taquba_bulk")


class CliError(Exception):
    """A problem the user can fix; reported as one line on stderr."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code
        """The exit status to report it with."""


class _JsonInputs(Pipeline[Any, Any]):
    """The user's pipeline, fed the JSON value of each line as the item's plain form."""

    def __init__(self, inner: Pipeline[Any, Any]) -> None:
        self._inner = inner

    async def run(self, ctx: BulkCtx[Any]) -> Any:
        return await self._inner.run(ctx)

    def decode_input(self, data: Any) -> Any:
        return self._inner.decode_input(data)

    def encode_output(self, output: Any) -> Any:
        return self._inner.encode_output(output)

    def step_error(self, error: Exception) -> StepError:
        return self._inner.step_error(error)


def load_pipeline(reference: str) -> Pipeline[Any, Any]:
    """The pipeline ``MODULE:ATTRIBUTE`` names (see the module docstring)."""
    module_name, sep, attribute = reference.partition(":")
    if not sep or not module_name or not attribute:
        raise CliError(f"the pipeline must be given as MODULE:NAME, not {reference!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise CliError(f"cannot import {module_name!r}: {exc}") from exc
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as exc:
            raise CliError(f"{module_name!r} has no attribute {attribute!r}") from exc
    if isinstance(target, Pipeline):
        return target  # pyright: ignore[reportUnknownVariableType]
    if inspect.isclass(target) and issubclass(target, Pipeline):
        try:
            return target()  # pyright: ignore[reportUnknownVariableType]
        except TypeError as exc:
            raise CliError(f"cannot build {reference} without arguments: {exc}") from exc
    if inspect.iscoroutinefunction(target):
        return as_pipeline(target)
    raise CliError(
        f"{reference} is a {type(target).__name__}, not a Pipeline, a Pipeline subclass or "
        "an async function"
    )


def _key_function(spec: str) -> Callable[[Any], str] | None:
    if spec == "index":
        return None
    if spec == "content":
        return codec.key_by_content
    if spec.startswith("field:") and len(spec) > len("field:"):
        name = spec[len("field:") :]

        def by_field(item: Any) -> str:
            fields: dict[str, Any] = item if isinstance(item, dict) else {}  # pyright: ignore[reportUnknownVariableType]
            if name not in fields:
                raise InvalidItemKey(None, f"the item has no field {name!r}")
            value: Any = fields[name]
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise InvalidItemKey(value, f"field {name!r} must be a str or an int")
            return str(value)

        return by_field
    raise CliError(f"--key must be index, content or field:NAME, not {spec!r}")


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"a header is NAME=VALUE, not {text!r}")
    return name, value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number: {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a fraction from 0 to 1: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``taquba-bulk`` command."""
    parser = argparse.ArgumentParser(
        prog="taquba-bulk",
        description="Run one pipeline over every line of a JSON Lines file, durably.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="run a pipeline over a JSON Lines file (run it again to resume)",
        description="Run MODULE:PIPELINE over every line of --input; write one JSON record "
        "per item to --output. Running the same command again resumes the batch.",
    )
    run.add_argument("pipeline", metavar="MODULE:PIPELINE", help="the pipeline to run")
    run.add_argument(
        "--input", required=True, metavar="PATH", help="JSON Lines input (- for stdin)"
    )
    run.add_argument(
        "--output", metavar="PATH", help="JSON Lines output (- for stdout); default: none"
    )
    run.add_argument(
        "--append", action="store_true", help="append to --output instead of replacing it"
    )
    run.add_argument(
        "--store",
        required=True,
        metavar="URL",
        help="the store: a directory, file:///dir, s3://bucket/prefix or memory://",
    )
    run.add_argument(
        "--db",
        default="bulk",
        metavar="NAME",
        help="the queue database in the store (default: bulk)",
    )
    run.add_argument(
        "--queue-name",
        default=DEFAULT_QUEUE_NAME,
        metavar="NAME",
        help=f"the queue items run on (default: {DEFAULT_QUEUE_NAME})",
    )
    run.add_argument(
        "--memo-prefix",
        default=DEFAULT_MEMO_PREFIX,
        metavar="PREFIX",
        help=f"blob prefix of memos (default: {DEFAULT_MEMO_PREFIX})",
    )
    run.add_argument(
        "--key",
        default="index",
        metavar="KIND",
        help="item keys: index (line position, default), content (hash of the line's value) "
        "or field:NAME",
    )
    run.add_argument(
        "--header",
        action="append",
        type=_header,
        default=[],
        metavar="NAME=VALUE",
        help="a header every item sees (repeatable)",
    )
    run.add_argument(
        "--concurrency",
        type=_positive_int,
        default=200,
        metavar="N",
        help="items processed at once (default: 200)",
    )
    run.add_argument(
        "--submit-concurrency",
        type=_positive_int,
        default=32,
        metavar="N",
        help="submissions in flight at once (default: 32)",
    )
    run.add_argument(
        "--max-attempts",
        type=_positive_int,
        metavar="N",
        help="attempts per item (default: the queue's, 3)",
    )
    run.add_argument(
        "--failure-threshold",
        type=_fraction,
        metavar="F",
        help="fail the run when more than this fraction of items fail",
    )
    run.add_argument(
        "--poll-interval",
        type=_positive_float,
        default=0.25,
        metavar="S",
        help="longest idle wait between claims (default: 0.25)",
    )
    run.add_argument(
        "--shutdown-grace",
        type=_positive_float,
        metavar="S",
        help="on SIGINT/SIGTERM, seconds in-flight items get before they are handed back",
    )
    run.add_argument(
        "--skip-bad-lines",
        action="store_true",
        help="skip input lines that are not JSON (reported) instead of stopping",
    )
    progress = run.add_mutually_exclusive_group()
    progress.add_argument(
        "--progress",
        dest="progress",
        action="store_const",
        const=True,
        default=None,
        help="always draw the progress bar",
    )
    progress.add_argument(
        "--no-progress",
        dest="progress",
        action="store_const",
        const=False,
        help="never draw the progress bar (default: when stderr is a terminal)",
    )
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def _summary(report: BulkReport, out: TextIO) -> None:
    skipped = f" ({report.skipped} from an earlier run)" if report.skipped else ""
    state = "complete" if report.complete else f"stopped, {report.pending} pending"
    print(
        f"taquba-bulk: {report.total} items, {state}: {report.succeeded} succeeded{skipped}, "
        f"{report.failed} failed, {report.cancelled} cancelled in {report.elapsed:.1f} s",
        file=out,
    )
    if report.cost:
        print(f"taquba-bulk: cost {report.cost.summary()}", file=out)
    if report.failed_run_ids:
        shown = ", ".join(report.failed_run_ids[:10])
        more = (
            f" (+{len(report.failed_run_ids) - 10} more)" if len(report.failed_run_ids) > 10 else ""
        )
        print(f"taquba-bulk: failed: {shown}{more}", file=out)


async def _watch_signals(
    bulk: Bulk[Any, Any], received: list[int], scope: trio.CancelScope
) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            received.append(signum)
            if len(received) == 1:
                print(
                    "taquba-bulk: stopping: draining the items in flight (again to stop now)",
                    file=sys.stderr,
                )
                bulk.shutdown()
            else:
                scope.cancel()
                return


async def _run(args: argparse.Namespace, err: TextIO) -> int:
    pipeline = _JsonInputs(load_pipeline(args.pipeline))
    key = _key_function(args.key)
    try:
        store = Store.from_url(args.store)
    except TaqubaError as exc:
        raise CliError(str(exc)) from exc
    bad_lines: list[InvalidInputLine] = []

    def on_bad_line(error: InvalidInputLine) -> None:
        bad_lines.append(error)
        print(f"taquba-bulk: skipping input {error}", file=err)

    on_error = on_bad_line if args.skip_bad_lines else None
    expected: int | None = None
    items: Iterator[Any]
    if args.input == "-":
        items = read_jsonl(sys.stdin, on_error=on_error)
    else:
        try:
            expected = count_jsonl_items(args.input)
        except OSError as exc:
            raise CliError(f"cannot read {args.input}: {exc.strerror or exc}") from exc
        items = read_jsonl(args.input, on_error=on_error)
    sink: OutputSink
    if args.output is None:
        sink = NullSink()
    elif args.output == "-":
        sink = JsonlSink(sys.stdout)
    else:
        try:
            sink = JsonlSink(args.output, append=args.append)
        except OSError as exc:
            raise CliError(f"cannot write {args.output}: {exc.strerror or exc}") from exc
    received: list[int] = []
    try:
        async with taquba.open_queue(store, args.db) as queue:
            bulk = Bulk(
                queue,
                pipeline,
                output=sink,
                key=key,
                headers=dict(args.header),
                concurrency=args.concurrency,
                submit_concurrency=args.submit_concurrency,
                poll_interval=args.poll_interval,
                queue_name=args.queue_name,
                memo_prefix=args.memo_prefix,
                failure_threshold=args.failure_threshold,
                max_attempts=args.max_attempts,
                shutdown_grace=args.shutdown_grace,
                progress=args.progress,
            )
            report: BulkReport | None = None
            error: Exception | None = None
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_watch_signals, bulk, received, nursery.cancel_scope)
                try:
                    report = await bulk.run(items, expected_total=expected)
                except Exception as exc:  # raised below, outside the nursery
                    error = exc
                finally:
                    nursery.cancel_scope.cancel()
    finally:
        if isinstance(sink, JsonlSink) and args.output != "-":
            sink.close()
    if isinstance(error, FailureThresholdExceeded):
        _summary(error.report, err)
        raise CliError(str(error), EXIT_FAILURE) from error
    if error is not None:
        raise error
    if report is None:  # a second signal stopped the run at once
        print("taquba-bulk: stopped without draining", file=err)
        return _SIGNAL_EXIT.get(signal.Signals(received[0]), EXIT_FAILURE)
    _summary(report, err)
    if bad_lines:
        print(f"taquba-bulk: {len(bad_lines)} input lines skipped", file=err)
    if received:
        return _SIGNAL_EXIT.get(signal.Signals(received[0]), EXIT_FAILURE)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``taquba-bulk`` command; return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="taquba-bulk: %(message)s", stream=sys.stderr)
    err = sys.stderr
    try:
        return trio.run(_run, args, err)
    except CliError as exc:
        print(f"taquba-bulk: error: {exc}", file=err)
        return exc.code
    except (taquba.UsageError, InvalidInputLine, ItemInputMismatch) as exc:
        print(f"taquba-bulk: error: {exc}", file=err)
        return EXIT_USAGE
    except BulkError as exc:
        print(f"taquba-bulk: error: {exc}", file=err)
        return EXIT_FAILURE
    except UnicodeDecodeError as exc:
        print(f"taquba-bulk: error: the input is not UTF-8 text: {exc}", file=err)
        return EXIT_USAGE
    except TaqubaError as exc:
        print(f"taquba-bulk: error: {type(exc).__name__}: {exc}", file=err)
        return EXIT_FAILURE
    except OSError as exc:
        print(f"taquba-bulk: error: {exc}", file=err)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
