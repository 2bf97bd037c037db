"""Typed payloads and results, the run handle, serve/shutdown, and runs stored by 0.7."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

import ormsgpack
import pytest
import trio

import taquba
from taquba import MockClock, Store
from taquba_workflow import (
    HEADER_RUN_ID,
    HEADER_STEP,
    Continue,
    Fail,
    RunOutcome,
    RunSpec,
    RunState,
    Runtime,
    Step,
    StepOutcome,
    Succeed,
    TerminalStatus,
    read_run_outcome,
)
from taquba_workflow._keys import run_key  # pyright: ignore[reportPrivateUsage]
from taquba_workflow._records import RunRecord  # pyright: ignore[reportPrivateUsage]
from wf_support import Hook, jobs_in, opened, run_all


@dataclass(frozen=True)
class Order:
    item: str
    quantity: int
    receipt: str | None = None


class Receipt(TypedDict):
    item: str
    total: float


async def typed_step(step: Step[Order]) -> StepOutcome[Order, Receipt]:
    order = step.payload
    assert isinstance(order, Order)
    if step.number == 0:
        return Continue(Order(order.item, order.quantity, receipt="r-1"))
    return Succeed({"item": order.item, "total": 2.5 * order.quantity})


async def test_the_runner_annotations_declare_the_types(clock: MockClock) -> None:
    hook = Hook()
    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, typed_step, hook)
        assert (runtime.payload_type, runtime.result_type) == (Order, Receipt)
        handle = await runtime.submit(RunSpec(input=Order("lamp", 2), run_id="typed"))
        assert handle.newly_submitted and handle.run_id == "typed"
        [job] = await jobs_in(queue, taquba.JobStatus.PENDING)
        assert job.payload == taquba.Codec(Order).encode(Order("lamp", 2))  # MessagePack
        await run_all(runtime)
        outcome = await handle.wait()
        assert outcome is not None and outcome.status is TerminalStatus.SUCCEEDED
        assert outcome.result == {"item": "lamp", "total": 5.0}
        assert [o.result for o in hook.outcomes] == [{"item": "lamp", "total": 5.0}]
        raw = await read_run_outcome(queue.store, "typed", result_type=Receipt)
        assert raw is not None and raw.result == {"item": "lamp", "total": 5.0}
        # Resubmission compares encodings: an equal value is the same input.
        again = await runtime.submit(RunSpec(input=Order("lamp", 2), run_id="typed"))
        assert not again.newly_submitted


async def test_explicit_types_win_over_annotations(clock: MockClock) -> None:
    seen: list[object] = []

    async def runner(step: Step[bytes]) -> StepOutcome[bytes, bytes]:
        seen.append(step.payload)
        return Succeed(step.payload)  # an int, whatever the annotations say

    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, runner, payload_type=int, result_type=int)  # pyright: ignore[reportArgumentType]
        await runtime.submit(RunSpec(input=41, run_id="n"))  # pyright: ignore[reportArgumentType]
        await run_all(runtime)
        outcome = await runtime.outcome("n")
        assert seen == [41] and outcome is not None and outcome.result == 41


async def test_a_value_that_does_not_fit_is_refused_or_fails_the_run(clock: MockClock) -> None:
    async def wrong(step: Step[Order]) -> StepOutcome[Order, Receipt]:
        return Continue("not an order")  # type: ignore[arg-type]

    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, wrong, payload_type=Order, result_type=Receipt)
        with pytest.raises(taquba.TypeMismatch):
            await runtime.submit(RunSpec(input={"item": "x"}, run_id="bad"))  # type: ignore[arg-type]
        assert await runtime.status("bad") is None  # nothing stored
        await runtime.submit(RunSpec(input=Order("x", 1), run_id="r"))
        await run_all(runtime)
        status = await runtime.status("r")
        assert status is not None and status.state is RunState.FAILED
        assert status.error is not None and "Continue.payload" in status.error


async def test_a_stored_payload_that_no_longer_decodes_fails_its_run(clock: MockClock) -> None:
    async with opened(clock=clock) as queue:
        as_bytes = Runtime(queue, typed_step, payload_type=bytes)
        await as_bytes.submit(RunSpec(input=b"\xc1 not msgpack", run_id="old"))
        runtime = Runtime(queue, typed_step)
        await run_all(runtime)
        status = await runtime.status("old")
        assert status is not None and status.state is RunState.FAILED
        assert status.error is not None and "undecodable payload" in status.error


async def test_unsupported_types_are_refused_at_construction(clock: MockClock) -> None:
    async with opened(clock=clock) as queue:
        with pytest.raises(taquba.UnsupportedType):
            Runtime(queue, typed_step, payload_type=complex)

        def local() -> None:
            @dataclass
            class Local:
                x: int

            async def runner(step: Step[Local]) -> StepOutcome[Local, Local]:
                return Fail("no")

            with pytest.raises(taquba.UsageError, match="payload_type"):
                Runtime(queue, runner)  # the annotations cannot be resolved
            Runtime(queue, runner, payload_type=Local, result_type=Local)

        local()


async def test_a_run_stored_by_0_7_completes_after_the_upgrade(
    memory_store: Store, clock: MockClock
) -> None:
    """0.7 stored raw bytes: the step job's payload, and the run record next to it.

    The run record and step job are written here exactly as 0.7's ``submit`` wrote them (the
    record format is unchanged, and the step payload is the input bytes, not MessagePack); a
    0.8 runtime that keeps ``bytes`` runs it to the end and stores the result as is.
    """
    async with opened(memory_store, clock=clock) as queue:
        job_id = queue.next_job_id()
        record = RunRecord(
            run_id="legacy",
            incarnation=job_id,
            input_hash="0" * 64,
            submitted_at_ms=clock.now_ms(),
            step=0,
            job_id=job_id,
            headers={"tenant": "acme"},
        )
        await queue.enqueue(
            "workflow",
            b"raw \x00 bytes",
            headers={"tenant": "acme", HEADER_RUN_ID: "legacy", HEADER_STEP: "0"},
            job_id=job_id,
            kv_writes={run_key("workflow", "legacy"): record.encode()},
        )
    seen: list[bytes] = []

    async def runner(step: Step[bytes]) -> StepOutcome[bytes, bytes]:
        seen.append(step.payload)
        if step.number == 0:
            return Continue(step.payload + b"!", delay=5)
        return Succeed(step.payload)

    async with opened(memory_store, clock=clock) as queue:  # the upgraded process
        runtime = Runtime(queue, runner)
        await run_all(runtime)
        clock.advance(5)
        await queue.promote_scheduled_now()
        await run_all(runtime)
        outcome = await runtime.outcome("legacy")
        assert seen == [b"raw \x00 bytes", b"raw \x00 bytes!"]
        assert outcome is not None and outcome.result == b"raw \x00 bytes!"
        blob = await queue.store.get_blob("workflow-memo/outcomes/legacy")
        assert blob is not None
        assert ormsgpack.unpackb(blob)["result"] == b"raw \x00 bytes!"  # as 0.7 stored it


async def test_serve_reports_ready_and_shutdown_stops_it() -> None:
    async with opened() as queue:
        runtime = Runtime(queue, typed_step, Hook(), poll_interval=0.05)
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                await nursery.start(runtime.serve)
                with pytest.raises(taquba.UsageError):
                    await runtime.serve()  # one serve at a time
                handle = await runtime.submit(RunSpec(input=Order("a", 1), run_id="live"))
                outcome: RunOutcome[Receipt] | None = await handle.wait()
                assert outcome is not None and outcome.result == {"item": "a", "total": 2.5}
                assert (await handle.status()) is not None
                runtime.shutdown()
                runtime.shutdown()  # idempotent
            assert runtime.shutting_down


async def test_shutdown_before_serve_returns_at_once() -> None:
    async with opened() as queue:
        runtime = Runtime(queue, typed_step)
        runtime.shutdown()
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                await nursery.start(runtime.serve)  # started, then returns
        await runtime.submit(RunSpec(input=Order("a", 1), run_id="queued"))
        assert (await queue.stats("workflow")).pending == 1  # nothing was processed


def test_options_are_checked_in_the_constructor() -> None:
    with pytest.raises(taquba.UsageError):
        Continue(b"", delay=-1)
    with pytest.raises(taquba.UsageError):
        Continue(b"", delay="soon")  # type: ignore[arg-type]


async def test_shutdown_grace_is_checked(clock: MockClock) -> None:
    async with opened(clock=clock) as queue:
        for bad in (-1, float("nan"), "10"):
            with pytest.raises(taquba.UsageError):
                Runtime(queue, typed_step, shutdown_grace=bad)  # type: ignore[arg-type]
