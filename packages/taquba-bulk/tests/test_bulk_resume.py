"""Resume: reruns skip done items, drain on shutdown, count redelivered ends once, unstick."""

from __future__ import annotations

from typing import Any

import trio
import trio.lowlevel

from bulk_support import Recorder, bulk, opened, sink_of, statuses, until
from taquba import LeaseHandle, QueueConfig, Store
from taquba_bulk import Bulk, BulkCtx, CostReport, MemorySink, as_pipeline
from taquba_bulk._codec import encode_item  # the test's own package: the payload format
from taquba_workflow import RunOutcome, RunSpec


async def test_a_rerun_skips_succeeded_items_and_resumes_failed_ones(store: Store) -> None:
    pipeline = Recorder()
    pipeline.permanent = {"b"}
    items = ["a", "b", "c"]
    async with opened(store) as queue:
        first = await bulk(queue, pipeline).run(items)
        assert (first.succeeded, first.failed) == (2, 1)
        pipeline.permanent = set()
        runner = bulk(queue, pipeline)
        second = await runner.run(items)
    assert second.complete and second.succeeded == 3 and second.skipped == 2
    assert pipeline.runs == {"a": 1, "b": 2, "c": 1}  # only the failed item ran again
    assert pipeline.computed == {"a": 1, "b": 1, "c": 1}  # ... resuming from its memo
    # The sink sees the whole batch again, with the stored outputs and costs.
    records = sink_of(runner).by_run_id()
    assert len(sink_of(runner).records) == 3
    assert records["item-0"].output == {"item": "a", "len": 1}
    assert records["item-0"].cost == CostReport({"calls": 1})
    assert second.cost == CostReport({"calls": 3})


async def test_shutdown_drains_in_flight_items_and_a_rerun_resumes() -> None:
    gate = trio.Event()
    started: list[int] = []
    finished: list[int] = []

    async def fn(ctx: BulkCtx[int]) -> int:
        started.append(ctx.input)
        if ctx.input >= 3:
            await gate.wait()
        await trio.sleep(0.01)
        finished.append(ctx.input)
        return ctx.input

    items = list(range(10))
    async with opened() as queue:
        runner = bulk(queue, as_pipeline(fn), concurrency=5)
        async with trio.open_nursery() as nursery:

            async def stop_when_blocked() -> None:
                await until(lambda: runner.progress().completed >= 3 and len(started) >= 5)
                runner.shutdown()
                await trio.sleep(0.05)
                gate.set()  # the drain waits for the two gated items in flight

            nursery.start_soon(stop_when_blocked)
            first = await runner.run(items)
        assert not first.complete
        assert sorted(started) == sorted(finished)  # the items in flight were drained
        assert 3 < first.succeeded == len(finished) < 10  # 3 quick ones + those drained
        assert first.pending == first.total - first.succeeded
        second = await bulk(queue, as_pipeline(fn)).run(items)
    assert second.complete and second.succeeded == 10 and second.skipped == first.succeeded
    assert sorted(started) == items  # each item ran exactly once over both runs


async def test_shutdown_grace_hands_slow_items_back() -> None:
    runs: list[int] = []
    release = trio.Event()

    async def fn(ctx: BulkCtx[int]) -> int:
        runs.append(ctx.input)
        await release.wait()
        return ctx.input

    async with opened() as queue:
        runner = bulk(queue, as_pipeline(fn), shutdown_grace=0.05)
        async with trio.open_nursery() as nursery:

            async def stop() -> None:
                await until(lambda: len(runs) >= 2)
                runner.shutdown()

            nursery.start_soon(stop)
            first = await runner.run([1, 2])
        assert first.succeeded == 0 and first.pending == 2 and not first.complete
        release.set()
        second = await bulk(queue, as_pipeline(fn)).run([1, 2])
    assert second.succeeded == 2 and second.skipped == 0


async def test_a_resumed_batch_does_not_report_completion_early() -> None:
    """The reference counted a resumed run's leftover items as done but not as part of the
    total, so its batch could finish while they still ran (§8.3 observation). Here the total
    is every item, and done means every item's end committed."""
    gate = trio.Event()

    async def slow(ctx: BulkCtx[int]) -> int:
        await gate.wait()
        return ctx.input

    items = list(range(30))
    async with opened() as queue:
        # First run: everything is submitted, nothing finishes (the pipeline blocks).
        runner = bulk(queue, as_pipeline(slow), shutdown_grace=0.01)
        async with trio.open_nursery() as nursery:

            async def stop() -> None:
                await until(lambda: runner.progress().submitted_all)
                runner.shutdown()

            nursery.start_soon(stop)
            first = await runner.run(items)
        assert first.total == 30 and first.succeeded == 0 and first.pending == 30

        # Second run: 30 leftovers active in the queue, plus 5 new items.
        done_early: list[Any] = []
        resumed = bulk(queue, as_pipeline(slow), concurrency=4)
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                while True:
                    snapshot = resumed.progress()
                    if snapshot.done:
                        for run_id in (f"item-{i}" for i in range(35)):
                            status = await resumed.runtime.status(run_id)
                            if status is None or not status.state.terminal:
                                done_early.append((run_id, snapshot))
                        return
                    await trio.lowlevel.checkpoint()

            nursery.start_soon(watch)

            async def open_gate_later() -> None:
                await until(lambda: resumed.progress().submitted_all)
                gate.set()

            nursery.start_soon(open_gate_later)
            second = await resumed.run([*items, 30, 31, 32, 33, 34])
    assert done_early == []
    assert second.total == 35 and second.succeeded == 35 and second.complete
    assert len(sink_of(resumed).records) == 35


async def test_a_redelivered_end_counts_once() -> None:
    """Reference §16 item 30: an item whose end was reported twice (the first report's
    delivery never committed) writes one record and counts once."""
    runs: list[int] = []

    async def fn(ctx: BulkCtx[str]) -> str:
        runs.append(ctx.attempt)
        return ctx.input.upper()

    async with opened() as queue:
        sink = MemorySink()
        runner = bulk(queue, as_pipeline(fn), output=sink)
        # The item is submitted and claimed here first, so the bulk's runtime cannot take it.
        await runner.runtime.submit(RunSpec(input=encode_item("x"), run_id="item-0"))
        claim = await queue.claim(runner.queue_name)
        assert claim is not None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(runner.run, ["x"])
            await until(lambda: runner.progress().submitted_all)
            # A first delivery runs the item and reports its end (the terminal hook), but its
            # process "crashes" before the end commits: the job goes back to the queue.
            effects = await runner.runtime.process(claim.job, LeaseHandle(queue, claim))
            assert effects is not None
            await trio.sleep(0.05)
            assert runner.progress().completed == 0  # observed, but not committed
            await queue.nack(claim, "simulated crash before the commit")
        report = runner.progress()
    assert runs == [1, 2]  # the end was reported twice
    assert report.completed == 1 and report.succeeded == 1 and report.done
    assert [r.run_id for r in sink.records] == ["item-0"]
    assert sink.records[0].output == "X"


async def test_an_item_whose_step_died_on_its_last_attempt_fails_instead_of_hanging() -> None:
    """A step dead-lettered outside the runtime (its process died on its last attempt): the
    workflow runtime ends its run as failed, and a later run retries it."""
    calls: list[str] = []

    async def fn(ctx: BulkCtx[str]) -> str:
        calls.append(ctx.input)
        return ctx.input

    config = QueueConfig(retry_backoff_base=0, lease_duration=60, max_attempts=1)
    async with opened(config=config) as queue:
        runner = bulk(queue, as_pipeline(fn))
        await runner.runtime.submit(RunSpec(input=encode_item("poison"), run_id="item-0"))
        claim = await queue.claim(runner.queue_name)
        assert claim is not None
        await queue.dead_letter(claim, "process died")  # what crash recovery does at open
        report = await runner.run(["poison", "fine"])
        assert report.complete and (report.succeeded, report.failed) == (1, 1)
        record = sink_of(runner).by_run_id()["item-0"]
        assert record.error == "step 0 dead-lettered: process died after 1 attempt"
        assert calls == ["fine"]
        # The next run retries it (and nothing ends the retried run).
        again = await bulk(queue, as_pipeline(fn)).run(["poison", "fine"])
    assert again.complete and again.succeeded == 2 and again.skipped == 1
    assert calls == ["fine", "poison"]


async def test_items_left_running_by_an_earlier_run_count_in_this_one() -> None:
    """An item the runtime finishes before the submitter reaches it is counted when admitted."""
    async with opened() as queue:
        first = bulk(queue, Recorder())
        for i, item in enumerate(["a", "b", "c"]):
            await first.runtime.submit(RunSpec(input=encode_item(item), run_id=f"item-{i}"))

        async def items() -> Any:
            yield "a"
            await trio.sleep(0.3)  # the runtime finishes b and c meanwhile
            yield "b"
            yield "c"

        runner = bulk(queue, Recorder())
        report = await runner.run(items())
    assert report.complete and report.total == 3 and report.succeeded == 3
    assert report.skipped == 0
    assert statuses(sink_of(runner)) == {"succeeded": 3}


class _LateHooks(Bulk[Any, Any]):
    """A Bulk whose terminal hook is held until every input is admitted (a slow hook queue)."""

    async def _on_end(self, outcome: RunOutcome) -> None:
        await until(lambda: self.progress().submitted_all)
        await super()._on_end(outcome)


async def test_items_this_run_ended_before_admission_count_when_notified_late() -> None:
    """Ends are visible (``status``) before their notification reaches the hook: an item the
    runtime ended before the submitter reached it is neither taken for an item of an earlier
    run (skipped) nor retried; its notification counts it."""
    async with opened() as queue:
        first = bulk(queue, Recorder())
        for i, item in enumerate(["a", "b", "c"]):
            await first.runtime.submit(RunSpec(input=encode_item(item), run_id=f"item-{i}"))
        pipeline = Recorder()
        pipeline.permanent = {"c"}
        runner = _LateHooks(
            queue, pipeline, output=MemorySink(), progress=False, poll_interval=0.05
        )

        async def items() -> Any:
            yield "a"
            for run_id in ("item-1", "item-2"):  # ended here, their hooks not yet called
                await runner.runtime.wait_finished(run_id)
            yield "b"
            yield "c"

        with trio.fail_after(30):  # a hang guard only
            report = await runner.run(items())
    assert report.complete and report.total == 3
    assert (report.succeeded, report.failed, report.skipped) == (2, 1, 0)
    assert pipeline.runs == {"a": 1, "b": 1, "c": 1}  # the failed item is not run again
    assert statuses(sink_of(runner)) == {"succeeded": 2, "failed": 1}


async def test_an_unreadable_stored_outcome_fails_the_item_with_the_reason() -> None:
    """Submission is idempotent: a succeeded item whose output is lost cannot run again."""
    pipeline = Recorder()
    async with opened() as queue:
        first = bulk(queue, pipeline)
        await first.run(["a", "b"])
        store = queue.store
        await store.put_blob("bulk-memo/outcomes/item-0", b"\xc1 not an outcome")
        runner = bulk(queue, pipeline)
        report = await runner.run(["a", "b"])
    assert report.complete and (report.succeeded, report.failed) == (1, 1)
    assert report.skipped == 1 and report.failed_run_ids == ("item-0",)
    record = sink_of(runner).by_run_id()["item-0"]
    assert record.error is not None and "earlier success cannot be read back" in record.error
    assert pipeline.runs == {"a": 1, "b": 1}


async def test_shutdown_is_sticky_and_before_run_runs_nothing() -> None:
    pipeline = Recorder()
    async with opened() as queue:
        runner = bulk(queue, pipeline)
        runner.shutdown()
        runner.shutdown()  # idempotent
        assert runner.shutting_down
        with trio.fail_after(5):
            report = await runner.run(["a", "b"])
        assert not report.complete and report.total == 0 and pipeline.runs == {}
        assert (await queue.stats(runner.queue_name)).pending == 0  # nothing submitted
        fresh = await bulk(queue, pipeline).run(["a", "b"])
    assert fresh.complete and fresh.succeeded == 2


async def test_a_bulk_runs_several_batches() -> None:
    """Each batch serves a fresh workflow runtime (a runtime's shutdown is sticky)."""
    pipeline = Recorder()
    async with opened() as queue:
        runner = bulk(queue, pipeline)
        first = await runner.run(["a"])
        second = await runner.run(["a", "b"])
    assert first.succeeded == 1 and second.succeeded == 2 and second.skipped == 1
