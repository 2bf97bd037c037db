"""Word count over a small corpus: ``uv run python examples/bulk_word_count.py [STORE]``.

The smallest taquba-bulk program: a `Pipeline` that counts the words of one line of text, run
over every line with `Bulk`. Each line is one durable item; its output is written as one JSON
record to ``word_counts.jsonl`` (in the store directory); the words counted are recorded as a
cost counter and rolled up into the report. The batch is then run a second time: every item
already succeeded, so nothing runs again and the records are rewritten from the store.

Pass a directory to keep the store and run it again later (default: a temporary directory).
"""

from __future__ import annotations

import sys
import tempfile
from collections import Counter
from pathlib import Path

import trio

import taquba
from taquba_bulk import Bulk, BulkCtx, JsonlSink, Pipeline, key_by_content

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "a journey of a thousand miles begins with a single step",
    "to be or not to be that is the question",
    "all that glitters is not gold",
    "the only thing we have to fear is fear itself",
    "brevity is the soul of wit",
]


class WordCount(Pipeline[str, dict[str, int]]):
    """Counts the words of one line; the three most common become the output."""

    async def run(self, ctx: BulkCtx[str]) -> dict[str, int]:
        """Count the words of ``ctx.input``; record how many as the ``words`` cost."""
        words = ctx.input.split()
        ctx.record_cost("words", len(words))
        return dict(Counter(words).most_common(3))


async def main(directory: str) -> None:
    """Run the corpus twice on the store in ``directory``; print the reports and records."""
    output = Path(directory) / "word_counts.jsonl"
    async with taquba.open_queue(directory, "word-count") as queue:
        for attempt in ("first run", "second run"):
            with JsonlSink(output) as sink:
                bulk = Bulk(queue, WordCount(), output=sink, key=key_by_content)
                report = await bulk.run(CORPUS)
            print(
                f"{attempt}: {report.succeeded}/{report.total} lines counted "
                f"({report.skipped} from an earlier run) in {report.elapsed:.2f} s, "
                f"cost {report.cost.summary()}"
            )
    print(f"records in {output}:")
    print(output.read_text(encoding="utf-8"), end="")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        trio.run(main, sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            trio.run(main, tmp)
