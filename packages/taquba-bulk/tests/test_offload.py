"""Bulk on a queue that offloads payloads (`taquba.QueueConfig.payload_offload_threshold`).

Each item is its run's input, so the payload of its step job: an item above the threshold
lives in an object of its own. The pipeline must see the whole item, on the first run and on
a resumed one (which also checks each item against its stored input digest).
"""

from __future__ import annotations

import dataclasses

import pytest
import trio

from bulk_support import Recorder, bulk, opened, sink_of
from taquba import QueueConfig, Store
from taquba_bulk import ItemInputMismatch

pytestmark = pytest.mark.skipif(
    "payload_offload_threshold" not in {f.name for f in dataclasses.fields(QueueConfig)},
    reason="payload offload needs taquba >= 0.10",
)

THRESHOLD = 64
HANG = 30  # seconds: a bound that only catches hangs
ITEMS = [letter * (500 + i) for i, letter in enumerate("abcd")]  # each far above the threshold


def config() -> QueueConfig:
    return QueueConfig(retry_backoff_base=0, lease_duration=60, payload_offload_threshold=THRESHOLD)


async def payload_objects(store: Store) -> list[str]:
    """The offloaded payload objects in the store (``db/<name>/payloads/<ref>``)."""
    return [name for name in await store.list_blobs("db") if "/payloads/" in name]


async def test_large_items_run_and_a_rerun_resumes_the_failed_one(store: Store) -> None:
    pipeline = Recorder()
    pipeline.fail_times = {ITEMS[0]: 1}  # one retry of a step whose payload is an object
    pipeline.permanent = {ITEMS[1]}
    with trio.fail_after(HANG):
        async with opened(store, config=config()) as queue:
            first = await bulk(queue, pipeline).run(ITEMS)
            assert (first.succeeded, first.failed) == (3, 1)
            assert pipeline.runs == {ITEMS[0]: 2, ITEMS[1]: 1, ITEMS[2]: 1, ITEMS[3]: 1}
            pipeline.permanent = set()
            runner = bulk(queue, pipeline)
            second = await runner.run(ITEMS)
            assert await payload_objects(store) == []  # every step job went, with its object
    assert second.complete and second.succeeded == 4 and second.skipped == 3
    assert pipeline.runs[ITEMS[1]] == 2  # only the failed item ran again
    records = sink_of(runner).by_run_id()
    assert [records[f"item-{i}"].output for i in range(4)] == [
        {"item": item, "len": len(item)} for item in ITEMS
    ]


@pytest.mark.parametrize("store", ["memory"], indirect=True)
async def test_a_rerun_with_a_changed_large_item_is_refused(store: Store) -> None:
    with trio.fail_after(HANG):
        async with opened(store, config=config()) as queue:
            report = await bulk(queue, Recorder()).run(ITEMS)
            assert report.succeeded == len(ITEMS)
            with pytest.raises(ItemInputMismatch):
                await bulk(queue, Recorder()).run([*ITEMS[:3], ITEMS[3] + "?"])
