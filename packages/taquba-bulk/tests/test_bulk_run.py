"""Running batches: counts, outputs, cost rollup, failures, keys, thresholds, headers."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import pytest
import trio

import taquba
from bulk_support import CONFIG, Recorder, bulk, opened, sink_of, statuses, until
from taquba import QueueConfig, Store
from taquba.testing import Fault, inject_faults
from taquba_bulk import (
    Bulk,
    BulkCtx,
    BulkReport,
    CostReport,
    DuplicateItemKey,
    FailureThresholdExceeded,
    InvalidItemKey,
    ItemInputMismatch,
    MemorySink,
    NullSink,
    OutputError,
    OutputRecord,
    PermanentStepError,
    Pipeline,
    TerminalStatus,
    TransientStepError,
    UnserializableItem,
    as_pipeline,
    key_by_content,
)
from taquba_workflow import RunHandle, RunSpec


async def test_runs_every_item_and_rolls_up_cost(store: Store) -> None:
    pipeline = Recorder()
    async with opened(store) as queue:
        runner = bulk(queue, pipeline)
        report = await runner.run(["a", "bb", "ccc"])
    assert report.complete and report.total == 3 and report.succeeded == 3
    assert report.failed == report.cancelled == report.skipped == report.pending == 0
    assert report.completed == 3
    assert report.cost == CostReport({"calls": 3})
    assert report.failed_run_ids == ()
    records = sink_of(runner).by_run_id()
    assert records["item-1"] == OutputRecord(
        "item-1", TerminalStatus.SUCCEEDED, {"item": "bb", "len": 2}, None, CostReport({"calls": 1})
    )
    assert sorted(records) == ["item-0", "item-1", "item-2"]
    assert len(sink_of(runner).records) == 3


async def test_an_empty_batch_is_complete_at_once() -> None:
    async with opened() as queue:
        report = await bulk(queue, Recorder()).run([])
    assert report.complete and report.total == 0 and report.succeeded == 0


async def test_a_thousand_item_batch(memory_store: Store) -> None:
    pipeline = Recorder()
    items = [f"document {i}" for i in range(1000)]
    async with opened(memory_store) as queue:
        runner = bulk(queue, pipeline, key=key_by_content)
        report = await runner.run(items)
        assert report.complete and report.total == 1000 and report.succeeded == 1000
        assert report.cost.get("calls") == 1000
        sink = sink_of(runner)
        assert len(sink.records) == 1000
        assert len({r.run_id for r in sink.records}) == 1000
        assert all(pipeline.runs[item] == 1 for item in items)
        for record in sink.records[:20]:  # every record's end is committed
            status = await runner.runtime.status(record.run_id)
            assert status is not None and status.state.value == "succeeded"


class _Gated(Recorder):
    """A Recorder whose items wait for ``gate``: no item runs while the batch is submitted."""

    def __init__(self, gate: trio.Event) -> None:
        super().__init__()
        self.gate = gate

    async def run(self, ctx: BulkCtx[Any]) -> Any:
        await self.gate.wait()
        return await super().run(ctx)


@dataclass
class _Submissions:
    """What a batch's submissions did: most at once, and durable commits while submitting."""

    most_in_flight: int = 0
    durable_commits: int = 0


async def _submit_and_count(
    queue: taquba.Queue, items: list[str], *, concurrency: int, hold_until: int = 1
) -> tuple[BulkReport, _Submissions]:
    """Run ``items`` with ``submit_concurrency=concurrency``, counting instead of timing.

    Each of the first submissions waits until ``hold_until`` of them are in flight at once, so
    a runner that submits concurrently is seen to, however slow the machine; a serial one
    never gets there. Items run only once every submission returned, so the durable commits
    counted (with a no-op fault on every durable write) are the submissions' own.
    """
    gate = trio.Event()
    runner = bulk(queue, _Gated(gate), submit_concurrency=concurrency, queue_name=items[0])
    submit = runner.runtime.submit
    seen = _Submissions()
    in_flight = finished = 0
    held = trio.Event()

    async def counted_submit(spec: RunSpec[bytes]) -> RunHandle[bytes]:
        nonlocal in_flight, finished
        in_flight += 1
        seen.most_in_flight = max(seen.most_in_flight, in_flight)
        try:
            if seen.most_in_flight >= hold_until:
                held.set()
            with trio.move_on_after(30):  # only a runner that never gets there waits this long
                await held.wait()
            return await submit(spec)
        finally:
            in_flight -= 1
            finished += 1
            if finished == len(items):
                seen.durable_commits = sum(f.site == "commit" for f in faults.injected)
                gate.set()

    with inject_faults() as faults:
        faults.on_write(Fault.slow(0), times=None, durable=True)  # counts, changes nothing
        runner.runtime.submit = counted_submit  # type: ignore[method-assign]
        report = await runner.run(items)
    return report, seen


async def test_submission_is_concurrent_not_one_item_per_flush() -> None:
    """Reference §16 item 29: serial submission capped a batch at one item per WAL flush.

    Each submission waits for a durable commit, about one flush interval. Serial submission
    has one in flight at a time, one durable commit per item; concurrent submissions are in
    flight together and share the group commits. Counted, not timed.
    """
    async with opened(flush_interval=0.1) as queue:
        serial, one_by_one = await _submit_and_count(
            queue, [f"s{i}" for i in range(10)], concurrency=1
        )
        concurrent, together = await _submit_and_count(
            queue, [f"c{i}" for i in range(64)], concurrency=16, hold_until=16
        )
    assert serial.complete and serial.succeeded == 10
    assert concurrent.complete and concurrent.succeeded == 64
    assert one_by_one.most_in_flight == 1
    if one_by_one.durable_commits == 0:
        # The compatibility matrix runs these tests against taquba releases whose storage
        # adapter has no fault injection points: nothing can be counted there.
        pytest.skip("the taquba under test has no fault injection points to count commits by")
    assert one_by_one.durable_commits >= 10  # one per item (or more, were one retried)
    assert together.most_in_flight == 16
    assert together.durable_commits < 64, together  # items shared transactions


async def test_failed_items_are_recorded_and_reported() -> None:
    pipeline = Recorder()
    pipeline.permanent = {"bad"}
    pipeline.fail_times = {"flaky": 1, "hopeless": 99}
    async with opened() as queue:
        runner = bulk(queue, pipeline)
        report = await runner.run(["ok", "bad", "flaky", "hopeless"])
    assert report.complete
    assert (report.succeeded, report.failed) == (2, 2)
    assert report.failed_run_ids in (("item-1", "item-3"), ("item-3", "item-1"))
    records = sink_of(runner).by_run_id()
    assert records["item-1"].error == "LookupError: no such thing as bad"
    assert records["item-3"].error == "RuntimeError: flaky hopeless"
    assert records["item-3"].output is None
    assert records["item-3"].cost == CostReport({"calls": 1})  # the last attempt's cost
    assert pipeline.runs["bad"] == 1  # permanent: not retried
    assert pipeline.runs["flaky"] == 2
    assert pipeline.runs["hopeless"] == CONFIG.max_attempts
    assert pipeline.computed["hopeless"] == 1  # retries replayed the memoized phase
    assert report.cost == CostReport({"calls": 4})


async def test_max_attempts_bounds_the_retries() -> None:
    pipeline = Recorder()
    pipeline.fail_times = {"x": 99}
    async with opened() as queue:
        report = await bulk(queue, pipeline, max_attempts=5).run(["x"])
    assert report.failed == 1 and pipeline.runs["x"] == 5


async def test_step_errors_keep_their_kind_and_other_errors_are_transient() -> None:
    calls: list[str] = []

    async def fn(ctx: BulkCtx[str]) -> str:
        calls.append(ctx.input)
        if ctx.input == "perm":
            raise PermanentStepError("give up")
        if ctx.input == "later" and ctx.attempt == 1:
            raise TransientStepError("not yet")
        if ctx.input == "value" and ctx.attempt == 1:
            raise ValueError("odd")
        return ctx.input.upper()

    async with opened() as queue:
        runner = bulk(queue, as_pipeline(fn, permanent_errors=(KeyError,)))
        report = await runner.run(["perm", "later", "value"])
    assert (report.succeeded, report.failed) == (2, 1)
    assert calls.count("perm") == 1 and calls.count("later") == 2 and calls.count("value") == 2
    assert sink_of(runner).by_run_id()["item-0"].error == "give up"


async def test_a_custom_step_error_mapping() -> None:
    class Mapping(Pipeline[str, str]):
        async def run(self, ctx: BulkCtx[str]) -> str:
            raise OSError("disk on fire")

        def step_error(self, error: Exception) -> Any:
            return PermanentStepError(f"mapped {type(error).__name__}")

    async with opened() as queue:
        runner = bulk(queue, Mapping())
        report = await runner.run(["x"])
    assert report.failed == 1
    assert sink_of(runner).records[0].error == "mapped OSError"


async def test_undecodable_input_fails_the_item_permanently() -> None:
    class Strict(Pipeline[int, int]):
        runs = 0

        def decode_input(self, data: Any) -> int:
            if not isinstance(data, int):
                raise TypeError("want an int")
            return data

        async def run(self, ctx: BulkCtx[int]) -> int:
            Strict.runs += 1
            return ctx.input * 2

    async with opened() as queue:
        runner = bulk(queue, Strict())
        report = await runner.run([2, "three"])  # type: ignore[list-item]
    assert (report.succeeded, report.failed) == (1, 1)
    assert Strict.runs == 1
    records = sink_of(runner).by_run_id()
    assert records["item-0"].output == 4
    assert records["item-1"].error == "undecodable input: TypeError: want an int"


async def test_outputs_must_be_json_data() -> None:
    async def fn(ctx: BulkCtx[str]) -> Any:
        return {"bytes": b"x"} if ctx.input == "bad" else {"ok": [1, 2.5, None, True]}

    async with opened() as queue:
        runner = bulk(queue, as_pipeline(fn))
        report = await runner.run(["good", "bad"])
    assert (report.succeeded, report.failed) == (1, 1)
    records = sink_of(runner).by_run_id()
    assert records["item-0"].output == {"ok": [1, 2.5, None, True]}
    assert records["item-1"].error == "the output is not JSON data: it holds a bytes"


async def test_typed_inputs_and_outputs_through_the_codec_methods() -> None:
    from dataclasses import asdict, dataclass

    @dataclass(frozen=True)
    class Doc:
        title: str
        words: int

    @dataclass(frozen=True)
    class Summary:
        title: str
        long: bool

    class Summarize(Pipeline[Doc, Summary]):
        def encode_input(self, item: Doc) -> Any:
            return asdict(item)

        def decode_input(self, data: Any) -> Doc:
            return Doc(**data)

        def encode_output(self, output: Summary) -> Any:
            return asdict(output)

        async def run(self, ctx: BulkCtx[Doc]) -> Summary:
            assert isinstance(ctx.input, Doc)
            return Summary(ctx.input.title, ctx.input.words > 100)

    async with opened() as queue:
        runner = bulk(queue, Summarize(), key=lambda doc: doc.title)
        report = await runner.run([Doc("a", 10), Doc("b", 1000)])
    assert report.succeeded == 2
    assert sink_of(runner).by_run_id()["b"].output == {"title": "b", "long": True}


async def test_headers_reach_the_pipeline() -> None:
    seen: list[dict[str, str]] = []

    async def fn(ctx: BulkCtx[int]) -> int:
        seen.append(dict(ctx.headers))
        return ctx.input

    async with opened() as queue:
        await bulk(queue, as_pipeline(fn), headers={"tenant": "acme"}).run([1])
        with pytest.raises(taquba.UsageError, match="reserved"):
            bulk(queue, as_pipeline(fn), headers={"workflow.x": "1"})
    assert seen == [{"tenant": "acme"}]


async def test_a_custom_key_function_sets_run_ids() -> None:
    async with opened() as queue:
        runner = bulk(queue, Recorder(), key=lambda item: f"doc-{item}")
        await runner.run(["a", "b"])
        status = await runner.runtime.status("doc-a")
    assert sorted(sink_of(runner).by_run_id()) == ["doc-a", "doc-b"]
    assert status is not None and status.state.value == "succeeded"


@pytest.mark.parametrize("bad", ["", "a/b", "x" * 129, 7, "dot.dot"])
async def test_an_invalid_key_stops_the_batch(bad: Any) -> None:
    async with opened() as queue:
        with pytest.raises(InvalidItemKey):
            await bulk(queue, Recorder(), key=lambda item: bad).run(["a"])


async def test_identical_items_under_one_key_run_once_and_different_ones_are_refused() -> None:
    pipeline = Recorder()
    async with opened() as queue:
        report = await bulk(queue, pipeline, key=key_by_content).run(["a", "b", "a"])
        assert report.total == 2 and report.succeeded == 2 and pipeline.runs["a"] == 1
        with pytest.raises(DuplicateItemKey) as info:
            await bulk(queue, pipeline, key=lambda item: "same", queue_name="other").run(["x", "y"])
    assert info.value.run_id == "same"


async def test_unserializable_items_are_refused() -> None:
    async with opened() as queue:
        with pytest.raises(UnserializableItem):
            await bulk(queue, Recorder()).run([object()])


async def test_failure_threshold_trips_when_exceeded() -> None:
    pipeline = Recorder()
    pipeline.permanent = {f"bad{i}" for i in range(3)}
    items = [f"ok{i}" for i in range(7)] + sorted(pipeline.permanent)
    async with opened() as queue:
        with pytest.raises(FailureThresholdExceeded) as info:
            await bulk(queue, pipeline, failure_threshold=0.2, concurrency=1).run(items)
        assert info.value.failed == 3 and info.value.total == 10
        assert info.value.report.failed == 3
        assert "3/10 items failed, over the 20.0% threshold" in str(info.value)
        # At the threshold (not over it) the batch passes.
        pipeline.permanent = {"bad0", "bad1"}
        report = await bulk(
            queue, pipeline, failure_threshold=0.2, queue_name="second", memo_prefix="m2"
        ).run(items)
        assert report.failed == 2 and report.complete


async def test_failure_threshold_stops_early_once_the_outcome_is_certain() -> None:
    """With a zero threshold the first failure decides: the rest of the batch is not run."""
    pipeline = Recorder()
    pipeline.permanent = {"bad"}
    items = ["bad", *[f"ok{i}" for i in range(50)]]
    gate = trio.Event()

    class Gated(Recorder):
        async def run(self, ctx: BulkCtx[Any]) -> Any:
            if ctx.input != "bad":
                await gate.wait()
            return await pipeline.run(ctx)

    async with opened() as queue:
        runner = bulk(queue, Gated(), failure_threshold=0.0, concurrency=4, shutdown_grace=0.05)
        with pytest.raises(FailureThresholdExceeded) as info:
            await runner.run(items)
        report = info.value.report
        assert report.failed == 1 and report.total == 51 and not report.complete
        assert report.pending == 50
        assert sum(pipeline.runs.values()) == 1  # the gated items were handed back unrun
        # Resuming with the gate open and no threshold finishes the batch.
        gate.set()
        pipeline.permanent = set()
        report = await bulk(queue, Gated()).run(items)
    assert report.complete and report.succeeded == 51 and report.failed == 0


async def test_failure_threshold_is_a_fraction() -> None:
    async with opened() as queue:
        for bad in (-0.1, 1.5, 5, True):
            with pytest.raises(taquba.UsageError):
                bulk(queue, Recorder(), failure_threshold=bad)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("concurrency", 0),
        ("submit_concurrency", 0),
        ("poll_interval", 0),
        ("max_attempts", 0),
        ("shutdown_grace", -1),
        ("queue_name", ""),
        ("memo_prefix", "../x"),
        ("key", "not callable"),
        ("output", object()),
    ],
)
async def test_invalid_options_are_refused(option: str, value: Any) -> None:
    async with opened() as queue:
        with pytest.raises(taquba.UsageError):
            bulk(queue, Recorder(), **{option: value})


async def test_a_pipeline_must_be_a_pipeline() -> None:
    async def fn(ctx: BulkCtx[int]) -> int:
        return 1

    async with opened() as queue:
        with pytest.raises(taquba.UsageError, match="as_pipeline"):
            Bulk(queue, fn)  # type: ignore[arg-type]


async def test_a_failing_sink_stops_the_batch_with_output_error() -> None:
    class Broken(MemorySink):
        def write(self, record: OutputRecord) -> None:
            raise OSError("disk full")

    async with opened() as queue:
        with pytest.raises(OutputError, match="disk full"):
            await bulk(queue, Recorder(), output=Broken()).run(["a", "b"])
        # The items are done: a rerun writes their records from the store.
        sink = MemorySink()
        report = await bulk(queue, Recorder(), output=sink).run(["a", "b"])
    assert report.skipped == 2 and len(sink.records) == 2


async def test_cancel_an_item() -> None:
    started = trio.Event()

    async def fn(ctx: BulkCtx[str]) -> str:
        if ctx.input == "slow":
            started.set()
            await ctx.wait_cancel_requested()
            assert ctx.cancel_requested
        return ctx.input

    async with opened() as queue:
        runner = bulk(queue, as_pipeline(fn))
        async with trio.open_nursery() as nursery:

            async def cancel_it() -> None:
                await started.wait()
                assert await runner.cancel("item-1")

            nursery.start_soon(cancel_it)
            report = await runner.run(["fast", "slow"])
        assert not await runner.cancel("item-1")
    assert (report.succeeded, report.cancelled) == (1, 1)
    assert statuses(sink_of(runner)) == {"succeeded": 1, "cancelled": 1}


async def test_one_batch_at_a_time() -> None:
    gate = trio.Event()

    async def fn(ctx: BulkCtx[int]) -> int:
        await gate.wait()
        return ctx.input

    async with opened() as queue:
        runner = bulk(queue, as_pipeline(fn))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(runner.run, [1])
            await trio.sleep(0.05)
            with pytest.raises(taquba.UsageError, match="already running"):
                await runner.run([2])
            gate.set()


async def test_progress_snapshots() -> None:
    gate = trio.Event()
    snapshots: list[Any] = []

    async def fn(ctx: BulkCtx[int]) -> int:
        if ctx.input >= 2:
            await gate.wait()
        ctx.record_cost("units", 2)
        return ctx.input

    async with opened() as queue:
        runner = bulk(queue, as_pipeline(fn))
        before = runner.progress()
        assert before.total is None and before.completed == 0 and before.eta is None
        assert not before.done
        async with trio.open_nursery() as nursery:
            nursery.start_soon(runner.run, [0, 1, 2, 3])
            await until(lambda: runner.progress().completed >= 2)
            snapshots.append(runner.progress())
            gate.set()
    middle = snapshots[0]
    assert middle.total == 4 and middle.submitted_all and middle.admitted == 4
    assert middle.completed == 2 and middle.remaining == 2 and not middle.done
    assert middle.rate > 0 and middle.eta is not None and middle.eta > 0
    assert middle.cost == CostReport({"units": 4})
    final = runner.progress()
    assert final.done and final.completed == 4 and final.eta == 0
    assert final.cost == CostReport({"units": 8})


async def test_expected_total_gives_progress_a_total_before_submission_ends() -> None:
    seen: list[Any] = []

    async def items() -> Any:
        for i in range(3):
            yield i
            await trio.sleep(0.02)

    async def fn(ctx: BulkCtx[int]) -> int:
        return ctx.input

    async with opened() as queue:
        runner = bulk(queue, as_pipeline(fn))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(runner.run, items(), expected_total=3))
            await trio.sleep(0.01)
            seen.append(runner.progress())
        assert runner.progress().done
        with pytest.raises(taquba.UsageError):
            await runner.run([], expected_total=-1)
    assert seen[0].total == 3 and not seen[0].submitted_all


async def test_a_null_sink_discards_and_an_input_iterator_error_stops_the_batch() -> None:
    def items() -> Any:
        yield 1
        raise RuntimeError("input broke")

    async with opened() as queue:
        with pytest.raises(RuntimeError, match="input broke"):
            await Bulk(queue, Recorder(), output=NullSink(), progress=False).run(items())


async def test_the_same_key_with_another_input_is_a_mismatch() -> None:
    async with opened() as queue:
        await bulk(queue, Recorder()).run(["a", "b"])
        with pytest.raises(ItemInputMismatch) as info:
            await bulk(queue, Recorder()).run(["b", "a"])  # positional keys, reordered
    assert info.value.run_id in ("item-0", "item-1")


async def test_a_mismatch_of_an_active_item() -> None:
    gate = trio.Event()

    async def fn(ctx: BulkCtx[str]) -> str:
        await gate.wait()
        return ctx.input

    async with opened() as queue:
        runner = bulk(queue, as_pipeline(fn), shutdown_grace=0.01)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(runner.run, ["a"])
            await until(lambda: runner.progress().submitted_all)
            runner.shutdown()
        with pytest.raises(ItemInputMismatch):
            await bulk(queue, as_pipeline(fn), shutdown_grace=0.01).run(["changed"])
        gate.set()


async def test_concurrency_bounds_items_in_flight() -> None:
    running = 0
    peak = 0

    async def fn(ctx: BulkCtx[int]) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await trio.sleep(0.01)
        running -= 1
        return ctx.input

    async with opened() as queue:
        await bulk(queue, as_pipeline(fn), concurrency=3).run(range(20))
    assert peak == 3


async def test_the_lease_is_kept_alive_for_slow_items() -> None:
    """A pipeline slower than the lease is not reaped and run twice."""
    runs = 0

    async def fn(ctx: BulkCtx[int]) -> int:
        nonlocal runs
        runs += 1
        await trio.sleep(0.6)
        return ctx.input

    config = QueueConfig(retry_backoff_base=0, lease_duration=0.2)
    async with opened(config=config) as queue:
        report = await bulk(queue, as_pipeline(fn)).run([1])
    assert report.succeeded == 1 and runs == 1


async def test_encode_output_and_step_error_failures_are_contained() -> None:
    class Awkward(Pipeline[str, str]):
        def encode_output(self, output: str) -> Any:
            if output == "unencodable":
                raise ValueError("cannot encode")
            return output

        def step_error(self, error: Exception) -> Any:
            if isinstance(error, KeyError):
                raise RuntimeError("the mapping itself broke")
            return "not a StepError"

        async def run(self, ctx: BulkCtx[str]) -> str:
            if ctx.input == "raise" and ctx.attempt == 1:
                raise KeyError("x")
            if ctx.input == "odd" and ctx.attempt == 1:
                raise OSError("y")
            return ctx.input

    async with opened() as queue:
        runner = bulk(queue, Awkward())
        report = await runner.run(["unencodable", "raise", "odd"])
    records = sink_of(runner).by_run_id()
    assert (report.succeeded, report.failed) == (2, 1)
    assert records["item-0"].error == "encode_output failed: ValueError: cannot encode"
    assert records["item-1"].output == "raise"  # a broken mapping means transient: retried
    assert records["item-2"].output == "odd"


async def test_a_failing_flush_stops_the_batch_with_output_error() -> None:
    class NoFlush(MemorySink):
        def flush(self) -> None:
            raise OSError("cannot flush")

    async with opened() as queue:
        with pytest.raises(OutputError, match="cannot flush"):
            await bulk(queue, Recorder(), output=NoFlush()).run(["a"])


async def test_bulk_properties() -> None:
    pipeline = Recorder()
    async with opened() as queue:
        runner = Bulk(queue, pipeline)
        assert runner.queue is queue and runner.pipeline is pipeline
        assert runner.queue_name == "bulk-items"
        assert runner.runtime.memos.prefix == "bulk-memo"
        with pytest.raises(taquba.UsageError):
            bulk(queue, pipeline, headers={"x": 1})
