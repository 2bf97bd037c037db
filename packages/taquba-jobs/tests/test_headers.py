"""Job headers: given at submission, stored with the job, read from the context."""

from __future__ import annotations

from typing import Any

import pytest
import trio

import taquba
from taquba import Store
from taquba.testing import ForwardingQueue, open_test_queue
from taquba_jobs import (
    RESERVED_HEADER_PREFIX,
    JobContext,
    JobFailed,
    JobRunner,
    ReservedHeader,
    job,
)
from taquba_jobs._records import HEADER_FORMAT, HEADER_JOB, HEADER_KEY, HEADER_TIME_LIMIT

HANG = 10  # seconds: bounds that only catch hangs


@job(name="tests.headers.show")
async def show(ctx: JobContext, value: int) -> dict[str, str]:
    return dict(ctx.headers)


def runner_for(queue: taquba.QueueLike, *jobs: Any) -> JobRunner:
    return JobRunner(queue, jobs, poll_interval=0.05)


async def test_headers_round_trip_and_sit_next_to_the_runners_own(
    queue: taquba.Queue, serving: Any
) -> None:
    runner = runner_for(queue, show)
    sent = {"tenant": "acme", "origin": "api"}
    handle = await runner.submit(show, 1, headers=sent, idempotency_key="k-1", time_limit=30)
    record = await queue.get_job(handle.job_id)
    assert record is not None
    assert record.headers == {
        **sent,
        HEADER_JOB: "tests.headers.show",
        HEADER_FORMAT: "1",
        HEADER_KEY: "k-1",
        HEADER_TIME_LIMIT: "30.0",
    }
    plain = await runner.submit(show, 2)
    async with serving(runner):
        with trio.fail_after(HANG):
            assert await handle.result() == sent  # the reserved ones are filtered out
            assert await plain.result() == {}


async def test_the_context_headers_are_read_only(queue: taquba.Queue, serving: Any) -> None:
    seen: list[Exception] = []

    @job(name="tests.headers.mutate")
    async def mutate(ctx: JobContext, value: int) -> None:
        try:
            ctx.headers["x"] = "y"  # type: ignore[index]
        except TypeError as exc:
            seen.append(exc)

    runner = runner_for(queue, mutate)
    async with serving(runner):
        with trio.fail_after(HANG):
            await (await runner.submit(mutate, 1, headers={"a": "b"})).result()
    assert len(seen) == 1


@pytest.mark.parametrize(
    "name",
    [HEADER_JOB, HEADER_KEY, HEADER_FORMAT, HEADER_TIME_LIMIT, RESERVED_HEADER_PREFIX + "mine"],
)
async def test_a_reserved_header_is_refused_and_nothing_is_enqueued(
    queue: taquba.Queue, name: str
) -> None:
    runner = runner_for(queue, show)
    for key in (None, "k"):
        with pytest.raises(ReservedHeader) as info:
            await runner.submit(show, 1, headers={"ok": "1", name: "x"}, idempotency_key=key)
        assert info.value.header == name
        assert isinstance(info.value, taquba.InvalidArgument)
        assert info.value.argument == "headers"
    stats = await queue.stats("jobs")
    assert (stats.pending, stats.scheduled) == (0, 0)
    assert (await queue.kv_scan(b"taquba-jobs/")).entries == []  # no dedup record either


@pytest.mark.parametrize(
    "headers",
    [{"n": 1}, {1: "v"}, {"n": None}, {"n": b"v"}, [("n", "v")], "n=v"],
)
async def test_headers_of_the_wrong_type_are_refused(queue: taquba.Queue, headers: Any) -> None:
    runner = runner_for(queue, show)
    with pytest.raises(taquba.InvalidArgument) as info:
        await runner.submit(show, 1, headers=headers)
    assert info.value.argument == "headers"
    assert not isinstance(info.value, ReservedHeader)
    assert (await queue.stats("jobs")).pending == 0


async def test_headers_are_the_same_on_every_attempt(queue: taquba.Queue, serving: Any) -> None:
    seen: list[tuple[int, dict[str, str]]] = []

    @job(name="tests.headers.flaky")
    async def flaky(ctx: JobContext, value: int) -> int:
        seen.append((ctx.attempt, dict(ctx.headers)))
        if ctx.attempt < 3:
            raise ConnectionError("again")
        return value

    runner = runner_for(queue, flaky)
    async with serving(runner):
        with trio.fail_after(HANG):
            await (await runner.submit(flaky, 1, headers={"trace": "t-1"})).result()
    assert seen == [(1, {"trace": "t-1"}), (2, {"trace": "t-1"}), (3, {"trace": "t-1"})]


async def test_headers_survive_a_restart(store: Store, serving: Any) -> None:
    async with open_test_queue(store) as queue:
        handle = await runner_for(queue, show).submit(show, 1, headers={"tenant": "acme"})
    async with open_test_queue(store) as queue:  # a new process serves it
        runner = runner_for(queue, show)
        async with serving(runner):
            with trio.fail_after(HANG):
                assert await runner.handle(show, handle.job_id).result() == {"tenant": "acme"}


async def test_children_get_their_own_headers(queue: taquba.Queue, serving: Any) -> None:
    @job(name="tests.headers.parent")
    async def parent(ctx: JobContext, value: int) -> dict[str, str]:
        child = await ctx.submit(
            show,
            value,
            idempotency_key=f"{ctx.job_id}/child",
            headers={**ctx.headers, "parent": ctx.job_id},
        )
        return await child.result()

    runner = runner_for(queue, parent, show)
    async with serving(runner):
        with trio.fail_after(HANG):
            handle = await runner.submit(parent, 1, headers={"tenant": "acme"})
            assert await handle.result() == {"tenant": "acme", "parent": handle.job_id}

    @job(name="tests.headers.bad_parent")
    async def bad_parent(ctx: JobContext, value: int) -> None:
        await ctx.submit(show, value, headers={HEADER_JOB: "tests.headers.parent"})

    runner = runner_for(queue, bad_parent, show)
    async with serving(runner):
        with trio.fail_after(HANG), pytest.raises(JobFailed) as info:
            await (await runner.submit(bad_parent, 1)).result()
    assert info.value.error_type == "taquba_jobs.ReservedHeader"


async def test_headers_are_not_part_of_the_idempotency_check(
    queue: taquba.Queue, serving: Any
) -> None:
    """Like ``priority`` or ``time_limit``: the first submission's headers stand."""
    runner = runner_for(queue, show)
    first = await runner.submit(show, 1, idempotency_key="same", headers={"trace": "a"})
    again = await runner.submit(show, 1, idempotency_key="same", headers={"trace": "b"})
    assert again.job_id == first.job_id
    assert not again.newly_submitted
    async with serving(runner):
        with trio.fail_after(HANG):
            assert await again.result() == {"trace": "a"}
    after = await runner.submit(show, 1, idempotency_key="same", headers={"trace": "c"})
    assert after.job_id == first.job_id  # also once it finished


async def test_headers_over_the_protocol(queue: taquba.Queue, serving: Any) -> None:
    runner = runner_for(ForwardingQueue(queue), show)
    async with serving(runner):
        with trio.fail_after(HANG):
            handle = await runner.submit(show, 1, headers={"tenant": "acme"})
            assert await handle.result() == {"tenant": "acme"}
