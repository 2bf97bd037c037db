"""taquba-bulk: one pipeline over many inputs, with progress, cost rollup and resume.

Each input item becomes one durable `taquba_workflow` run whose single step calls your
`Pipeline`; the pipeline's phases are memoized calls on its `BulkCtx`, so a retried, crashed
or resumed item replays the phases that finished instead of paying for them again. `Bulk`
submits the items with bounded concurrency, runs them, streams one `OutputRecord` per item
to an `OutputSink`, rolls up `CostReport`s, shows live progress, and returns a `BulkReport`.
Running the same inputs again resumes the batch. Everything is trio-native.

    class Summarize(Pipeline[dict[str, str], dict[str, str]]):
        async def run(self, ctx: BulkCtx[dict[str, str]]) -> dict[str, str]:
            summary = await ctx.memoized(lambda: call_llm(ctx.input["text"]), key="summary")
            return {"summary": summary}

    async with taquba.open_queue("./data", "bulk") as queue:
        with JsonlSink("out.jsonl") as sink:
            report = await Bulk(queue, Summarize(), output=sink).run(read_jsonl("in.jsonl"))

The ``taquba-bulk run module:pipeline --input in.jsonl --output out.jsonl --store URL``
command does the same without a driver script.
"""

from importlib.metadata import version as _version

from taquba import fixup_module_metadata as _taquba_fixup

from ._bulk import DEFAULT_MEMO_PREFIX as DEFAULT_MEMO_PREFIX
from ._bulk import DEFAULT_QUEUE_NAME as DEFAULT_QUEUE_NAME
from ._bulk import Bulk as Bulk
from ._codec import key_by_content as key_by_content
from ._cost import CostReport as CostReport
from ._errors import BulkError as BulkError
from ._errors import DuplicateItemKey as DuplicateItemKey
from ._errors import FailureThresholdExceeded as FailureThresholdExceeded
from ._errors import InvalidInputLine as InvalidInputLine
from ._errors import InvalidItemKey as InvalidItemKey
from ._errors import ItemInputMismatch as ItemInputMismatch
from ._errors import OutputError as OutputError
from ._errors import UnserializableItem as UnserializableItem
from ._pipeline import BulkCtx as BulkCtx
from ._pipeline import PermanentStepError as PermanentStepError
from ._pipeline import Pipeline as Pipeline
from ._pipeline import StepError as StepError
from ._pipeline import TransientStepError as TransientStepError
from ._pipeline import as_pipeline as as_pipeline
from ._sinks import JsonlSink as JsonlSink
from ._sinks import MemorySink as MemorySink
from ._sinks import NullSink as NullSink
from ._sinks import OutputSink as OutputSink
from ._sinks import read_jsonl as read_jsonl
from ._types import BulkReport as BulkReport
from ._types import OutputRecord as OutputRecord
from ._types import ProgressSnapshot as ProgressSnapshot
from ._types import TerminalStatus as TerminalStatus

__version__: str = _version("taquba-bulk")
"""The installed version of the `taquba-bulk` distribution."""

# Listed so documentation tools (griffe/mkdocstrings) render the re-exported names here.
__all__ = [  # noqa: RUF022 - grouped by topic, not sorted
    # the runner
    "Bulk",
    "BulkReport",
    "ProgressSnapshot",
    "key_by_content",
    "DEFAULT_QUEUE_NAME",
    "DEFAULT_MEMO_PREFIX",
    # pipelines
    "Pipeline",
    "BulkCtx",
    "as_pipeline",
    "CostReport",
    # input and output
    "read_jsonl",
    "OutputSink",
    "OutputRecord",
    "TerminalStatus",
    "JsonlSink",
    "NullSink",
    "MemorySink",
    # errors
    "BulkError",
    "InvalidItemKey",
    "DuplicateItemKey",
    "UnserializableItem",
    "ItemInputMismatch",
    "InvalidInputLine",
    "OutputError",
    "FailureThresholdExceeded",
    # step errors, re-exported from taquba_workflow
    "StepError",
    "TransientStepError",
    "PermanentStepError",
    "__version__",
]

_taquba_fixup(__name__, globals())
