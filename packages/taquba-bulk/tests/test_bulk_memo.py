"""BulkCtx memo helpers and cost recording, through real batches."""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
import trio

import taquba
from bulk_support import bulk, opened, sink_of
from taquba_bulk import (
    BulkCtx,
    CostReport,
    ItemInputMismatch,
    PermanentStepError,
    TransientStepError,
    as_pipeline,
)


async def test_memoized_runs_once_then_serves_the_cache() -> None:
    computed = Counter[str]()

    async def fn(ctx: BulkCtx[str]) -> str:
        async def shout() -> str:
            computed[ctx.input] += 1
            return ctx.input.upper()

        value = await ctx.memoized(shout, key="shout")
        if ctx.attempt == 1:
            raise TransientStepError("again")  # the retry must hit the memo
        return value

    async with opened() as queue:
        runner = bulk(queue, as_pipeline(fn))
        report = await runner.run(["a", "b"])
    assert report.succeeded == 2
    assert computed == {"a": 1, "b": 1}
    assert sink_of(runner).by_run_id()["item-0"].output == "A"


async def test_errors_are_not_cached() -> None:
    attempts = Counter[str]()

    async def fn(ctx: BulkCtx[str]) -> int:
        async def flaky() -> int:
            attempts[ctx.input] += 1
            if attempts[ctx.input] < 3:
                raise RuntimeError("boom")
            return attempts[ctx.input]

        return await ctx.memoized(flaky, key="flaky")

    async with opened() as queue:
        runner = bulk(queue, as_pipeline(fn))
        report = await runner.run(["x"])
    assert report.succeeded == 1 and attempts["x"] == 3
    assert sink_of(runner).records[0].output == 3


async def test_distinct_keys_cache_independently_and_memos_are_per_item() -> None:
    calls: list[tuple[str, str]] = []

    async def fn(ctx: BulkCtx[str]) -> list[int]:
        async def phase(name: str) -> int:
            calls.append((ctx.input, name))
            return len(calls)

        first = await ctx.memoized(lambda: phase("one"), key="one")
        second = await ctx.memoized(lambda: phase("two"), key="two")
        again = await ctx.memoized(lambda: phase("one"), key="one")
        return [first, second, again]

    async with opened() as queue:
        runner = bulk(queue, as_pipeline(fn), concurrency=1)
        await runner.run(["a", "b"])
    outputs = {r.run_id: r.output for r in sink_of(runner).records}
    assert outputs["item-0"][0] == outputs["item-0"][2] != outputs["item-0"][1]
    assert sorted(calls) == [("a", "one"), ("a", "two"), ("b", "one"), ("b", "two")]


async def test_memoized_by_content_keys_by_the_serialized_content() -> None:
    calls: list[Any] = []

    async def fn(ctx: BulkCtx[str]) -> list[str]:
        async def classify(text: str) -> str:
            calls.append(text)
            return text[::-1]

        return [
            await ctx.memoized(
                functools.partial(classify, text), content={"op": "classify", "text": text}
            )
            for text in ("x", "y", "x")
        ]

    async with opened() as queue:
        runner = bulk(queue, as_pipeline(fn))
        await runner.run(["item"])
    assert calls == ["x", "y"]
    assert sink_of(runner).records[0].output == ["x", "y", "x"]


async def test_cached_cost_is_recorded_on_compute_and_on_hits() -> None:
    paid = Counter[str]()

    async def fn(ctx: BulkCtx[str]) -> str:
        async def call() -> tuple[str, CostReport]:
            paid[ctx.input] += 1
            return ctx.input * 2, CostReport({"tokens": 100, "usd": 0.25})

        async def content_call() -> tuple[int, CostReport]:
            paid[ctx.input + "/content"] += 1
            return 7, CostReport({"tokens": 5})

        value = await ctx.memoized(call, key="llm", cached_cost=True)
        await ctx.memoized(content_call, content=("count", ctx.input), cached_cost=True)
        ctx.record_cost("runs", 1)  # counted only when executed
        if ctx.attempt < 3:
            raise TransientStepError("retry")
        return value

    async with opened() as queue:
        runner = bulk(queue, as_pipeline(fn))
        report = await runner.run(["a"])
    assert paid == {"a": 1, "a/content": 1}
    # The final attempt replayed both memos: the item's cost is the cost of one run.
    assert report.cost == CostReport({"tokens": 105, "usd": 0.25, "runs": 1})
    assert sink_of(runner).records[0].cost == report.cost


async def test_record_cost_accumulates_and_rolls_up() -> None:
    async def fn(ctx: BulkCtx[int]) -> int:
        for _ in range(ctx.input):
            ctx.record_cost("calls")
        ctx.record_cost("seconds", 0.5)
        assert ctx.cost.get("calls") == ctx.input
        return ctx.input

    async with opened() as queue:
        report = await bulk(queue, as_pipeline(fn)).run([1, 2, 3])
    assert report.cost == CostReport({"calls": 6, "seconds": 1.5})


async def test_values_that_do_not_round_trip_need_decode() -> None:
    @dataclass(frozen=True)
    class Label:
        name: str
        score: float

    async def fn(ctx: BulkCtx[str]) -> Any:
        async def label() -> Label:
            return Label(ctx.input, 0.5)

        async def pair() -> tuple[int, int]:
            return (1, 2)

        if ctx.input == "raw":
            await ctx.memoized(label, key="label")  # a dataclass comes back as a dict
        if ctx.input == "tuple":
            await ctx.memoized(pair, key="pair")
        got = await ctx.memoized(label, key="label", decode=lambda d: Label(**d))
        again = await ctx.memoized(label, key="label", decode=lambda d: Label(**d))
        assert got == again == Label(ctx.input, 0.5)
        assert await ctx.memoized(pair, key="pair2", decode=tuple) == (1, 2)
        return got.name

    async with opened() as queue:
        runner = bulk(queue, as_pipeline(fn))
        report = await runner.run(["ok", "raw", "tuple"])
    records = sink_of(runner).by_run_id()
    assert report.succeeded == 1 and report.failed == 2
    assert "does not come back equal" in (records["item-1"].error or "")
    assert "pass decode=" in (records["item-2"].error or "")


async def test_unserializable_values_and_bad_pairs_fail_the_item() -> None:
    async def fn(ctx: BulkCtx[str]) -> Any:
        async def thing() -> Any:
            return object()

        async def not_a_pair() -> Any:
            return 5

        async def bad_cost() -> Any:
            return 5, {"tokens": 1}

        if ctx.input == "object":
            return await ctx.memoized(thing, key="x")
        if ctx.input == "pair":
            return await ctx.memoized(not_a_pair, key="x", cached_cost=True)
        if ctx.input == "cost":
            return await ctx.memoized(bad_cost, key="x", cached_cost=True)
        return await ctx.memoized(thing, content=object())

    async with opened() as queue:
        runner = bulk(queue, as_pipeline(fn))
        report = await runner.run(["object", "pair", "cost", "content"])
    assert report.failed == 4
    errors = {r.run_id: r.error or "" for r in sink_of(runner).records}
    assert "cannot serialize the value" in errors["item-0"]
    assert "must return (value, CostReport)" in errors["item-1"]
    assert "not (value, dict)" in errors["item-2"]
    assert "memo content cannot be serialized" in errors["item-3"]


async def test_memo_keys_must_be_non_empty_strings() -> None:
    async def fn(ctx: BulkCtx[str]) -> Any:
        async def one() -> int:
            return 1

        return await ctx.memoized(one, key="")

    async with opened() as queue:
        runner = bulk(queue, as_pipeline(fn, permanent_errors=(ValueError,)))
        report = await runner.run(["x"])
    assert report.failed == 1
    assert "memo key must be a non-empty str" in (sink_of(runner).records[0].error or "")


async def test_an_undecodable_memo_entry_is_recomputed() -> None:
    computed = 0

    async def fn(ctx: BulkCtx[str]) -> int:
        nonlocal computed

        async def work() -> int:
            nonlocal computed
            computed += 1
            return 42

        if ctx.attempt == 1:
            # Corrupt the entry the way a foreign writer could.
            from taquba_bulk._codec import memo_key  # the test's own package

            await ctx._memo.put(memo_key(ctx._digest, "work"), b"\xc1garbage")
            raise TransientStepError("retry")
        return await ctx.memoized(work, key="work")

    async with opened() as queue:
        runner = bulk(queue, as_pipeline(fn))
        report = await runner.run(["x"])
    assert report.succeeded == 1 and computed == 1


async def test_a_failed_key_rerun_with_another_input_is_a_mismatch() -> None:
    """A key's run keeps its input once submitted, even after it failed (idempotent)."""
    seen: list[str] = []

    async def fn(ctx: BulkCtx[str]) -> str:
        async def echo() -> str:
            seen.append(ctx.input)
            return ctx.input

        value = await ctx.memoized(echo, key="echo")
        if value == "old":
            raise PermanentStepError("fails")
        return value

    async with opened() as queue:
        first = await bulk(queue, as_pipeline(fn), key=lambda item: "k").run(["old"])
        with pytest.raises(ItemInputMismatch):
            await bulk(queue, as_pipeline(fn), key=lambda item: "k").run(["new"])
    assert first.failed == 1
    assert seen == ["old"]


async def test_cancellation_signal_and_lease_are_exposed() -> None:
    async def fn(ctx: BulkCtx[str]) -> str:
        assert not ctx.cancel_requested
        assert ctx.lease.expires_at is not None
        assert ctx.run_id == "item-0" and ctx.attempt == 1
        assert "item-0" in repr(ctx)
        with trio.move_on_after(0.01):
            await ctx.wait_cancel_requested()
        return "ok"

    async with opened() as queue:
        report = await bulk(queue, as_pipeline(fn)).run(["x"])
    assert report.succeeded == 1


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "1", None])
async def test_record_cost_refuses_bad_amounts(bad: Any) -> None:
    async def fn(ctx: BulkCtx[str]) -> str:
        ctx.record_cost("x", bad)
        return "unreachable"

    async with opened() as queue:
        runner = bulk(queue, as_pipeline(fn, permanent_errors=(ValueError,)))
        report = await runner.run(["x"])
    assert report.failed == 1
    assert "cost amount" in (sink_of(runner).records[0].error or "")


async def test_a_permanent_step_error_from_a_memoized_function_passes_through() -> None:
    async def fn(ctx: BulkCtx[str]) -> str:
        async def refuse() -> str:
            raise PermanentStepError("refused")

        return await ctx.memoized(refuse, key="x")

    async with opened() as queue:
        runner = bulk(queue, as_pipeline(fn))
        report = await runner.run(["x"])
    assert report.failed == 1 and sink_of(runner).records[0].error == "refused"


async def test_memoized_takes_exactly_one_of_key_and_content() -> None:
    seen: list[str] = []

    async def fn(ctx: BulkCtx[str]) -> Any:
        async def one() -> int:
            return 1

        for call in (
            lambda: ctx.memoized(one),
            lambda: ctx.memoized(one, key="k", content=("k",)),
        ):
            with pytest.raises(taquba.UsageError, match="exactly one of key= and content="):
                await call()
            seen.append("refused")
        # None is valid content (not "no content"): it names a phase of its own.
        return await ctx.memoized(one, content=None)

    async with opened() as queue:
        report = await bulk(queue, as_pipeline(fn)).run(["x"])
    assert report.succeeded == 1 and seen == ["refused", "refused"]
