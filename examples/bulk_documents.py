"""A document pipeline with a (fake) paid API: ``uv run python examples/bulk_documents.py``.

Each document goes through three paid stages, extract, classify and validate, each a memoized
call on `BulkCtx` that reports its cost (`memoized(..., cached_cost=True)`), so:

- a retried item replays the stages that already succeeded: the classify service fails once
  on the "invoice" document (a transient error), and its retry does not pay for extract again;
- the item's cost is counted once however often it runs;
- an empty document fails permanently (`permanent_errors`) and is listed in the report.

The batch runs twice on the same store. The second run skips the documents that succeeded
and runs only the failed one again (it still fails), resuming from its memos.

Pass a directory to keep the store (default: a temporary directory).
"""

from __future__ import annotations

import sys
import tempfile
from collections import Counter
from dataclasses import dataclass

import trio

import taquba
from taquba_bulk import Bulk, BulkCtx, CostReport, MemorySink, Pipeline, TransientStepError

DOCUMENTS = [
    {"id": "invoice-17", "text": "Invoice 17: 3 lamps, 120 EUR, due 2026-12-01"},
    {"id": "letter-4", "text": "Dear customer, thank you for your order of lamps."},
    {"id": "receipt-9", "text": "Receipt 9: paid 45 EUR in cash"},
    {"id": "empty-1", "text": ""},
]


class EmptyDocument(Exception):
    """A document without text: retrying cannot help."""


class PaidApi:
    """A stand-in for a metered service: it counts calls and charges per token."""

    PRICE_PER_TOKEN = 0.0001

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.flaky = {"classify:invoice-17"}  # fails once, then works

    async def call(self, stage: str, doc_id: str, text: str) -> tuple[str, CostReport]:
        """One paid call: its result and what it cost."""
        self.calls[stage] += 1
        await trio.sleep(0.01)
        if f"{stage}:{doc_id}" in self.flaky:
            self.flaky.discard(f"{stage}:{doc_id}")
            raise TransientStepError(f"{stage} service unavailable")
        tokens = len(text.split()) + 10
        cost = CostReport({"api_calls": 1, "tokens": tokens, "usd": tokens * self.PRICE_PER_TOKEN})
        return f"{stage}({doc_id})", cost


@dataclass(frozen=True)
class Document:
    """One input document."""

    id: str
    text: str


class DocumentPipeline(Pipeline[Document, dict[str, str]]):
    """Extract, classify and validate one document; each stage paid for once."""

    permanent_errors = (EmptyDocument,)

    def __init__(self, api: PaidApi) -> None:
        self.api = api

    def encode_input(self, item: Document) -> dict[str, str]:
        """A document as plain data (what the item's run stores)."""
        return {"id": item.id, "text": item.text}

    def decode_input(self, data: dict[str, str]) -> Document:
        """The document back from its plain form."""
        return Document(**data)

    async def run(self, ctx: BulkCtx[Document]) -> dict[str, str]:
        """The three paid stages, each memoized with its cost."""
        doc = ctx.input
        if not doc.text:
            raise EmptyDocument(f"{doc.id} has no text")
        fields = await ctx.memoized(
            lambda: self.api.call("extract", doc.id, doc.text), key="extract", cached_cost=True
        )
        label = await ctx.memoized(
            lambda: self.api.call("classify", doc.id, fields), key="classify", cached_cost=True
        )
        verdict = await ctx.memoized(
            lambda: self.api.call("validate", doc.id, label), key="validate", cached_cost=True
        )
        return {"fields": fields, "label": label, "verdict": verdict}


async def main(directory: str) -> None:
    """Run the documents twice on the store in ``directory``; print what each run did."""
    api = PaidApi()
    documents = [Document(**d) for d in DOCUMENTS]
    config = taquba.QueueConfig(retry_backoff_base=0.2)  # a quick retry, for the demo
    async with taquba.open_queue(directory, "documents", config=config) as queue:
        for attempt in ("first run", "second run"):
            sink = MemorySink()
            bulk = Bulk(
                queue,
                DocumentPipeline(api),
                output=sink,
                key=lambda doc: doc.id,
                max_attempts=3,
                progress=False,
            )
            report = await bulk.run(documents)
            print(
                f"{attempt}: {report.succeeded} succeeded ({report.skipped} from an earlier "
                f"run), {report.failed} failed {list(report.failed_run_ids)}"
            )
            print(f"  cost: {report.cost.summary()}")
            print(f"  paid API calls so far: {dict(sorted(api.calls.items()))}")
            for record in sorted(sink.records, key=lambda r: r.run_id):
                print(f"  {record.run_id}: {record.status} {record.output or record.error}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        trio.run(main, sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            trio.run(main, tmp)
