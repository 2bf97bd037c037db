"""Per-step memos on every kind of store (reference §6.8, §11.3)."""

from __future__ import annotations

import pytest

import taquba
from taquba import MockClock, Store
from taquba_workflow import (
    MemoStore,
    RunSpec,
    Runtime,
    Step,
    StepOutcome,
    Succeed,
    TransientStepError,
)
from wf_support import opened, run_all


async def test_memo_survives_across_attempts_of_a_step(clock: MockClock) -> None:
    work_done = 0

    async def runner(step: Step) -> StepOutcome:
        nonlocal work_done
        cached = await step.memo.get("llm-call")
        if cached is None:
            work_done += 1
            cached = b"expensive answer"
            await step.memo.put("llm-call", cached)
        if step.attempt < 3:
            raise TransientStepError("the next call failed")
        return Succeed(cached)

    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, runner)
        await runtime.submit(RunSpec(input=b"", run_id="m"))
        await run_all(runtime)
        assert work_done == 1
        outcome = await runtime.outcome("m")
        assert outcome is not None and outcome.result == b"expensive answer"


AWKWARD_KEYS = ["", "a/b/c", "../../etc", "with spaces", "ключ 🔑", "x" * 10_000]


async def test_memo_semantics(store: Store) -> None:
    memos = MemoStore(store, "memo-test")
    memo = memos.memo("run-1", 0)
    for i, key in enumerate(AWKWARD_KEYS):
        assert await memo.get(key) is None
        await memo.put(key, str(i).encode())
    for i, key in enumerate(AWKWARD_KEYS):
        assert await memo.get(key) == str(i).encode()
    await memo.put("empty", b"")
    assert await memo.get("empty") == b""
    await memo.put("empty", b"overwritten")
    assert await memo.get("empty") == b"overwritten"
    # isolated by run and by step
    assert await memos.memo("run-1", 1).get("a/b/c") is None
    assert await memos.memo("run-10", 0).get("a/b/c") is None
    assert await MemoStore(store, "other-prefix").memo("run-1", 0).get("a/b/c") is None
    # content keys: deterministic, distinguishing, step-scoped
    await memo.content_put({"prompt": "hi", "model": "m"}, b"answer")
    assert await memo.content_get({"model": "m", "prompt": "hi"}) == b"answer"
    assert await memo.content_get({"model": "m", "prompt": "bye"}) is None
    assert await memos.memo("run-1", 1).content_get({"model": "m", "prompt": "hi"}) is None
    # clearing a run never touches a run whose id it prefixes
    await memos.memo("run-10", 3).put("k", b"v")
    assert await memos.clear_run("run-1") == len(AWKWARD_KEYS) + 2
    assert await memo.get("a/b/c") is None
    assert await memos.memo("run-10", 3).get("k") == b"v"
    assert await memos.clear_run("run-1") == 0
    assert await memos.clear_run("never-ran") == 0


async def test_clear_run_also_removes_step_outputs(memory_store: Store, clock: MockClock) -> None:
    async def runner(step: Step) -> StepOutcome:
        await step.memo.put("k", b"v")
        return Succeed(b"")

    async with opened(memory_store, clock=clock) as queue:
        runtime = Runtime(queue, runner, step_output_replay=True)
        await runtime.submit(RunSpec(input=b"", run_id="r"))
        await run_all(runtime)
    names = await memory_store.list_blobs("workflow-memo")
    assert any(n.startswith("step-outputs/r/0/") for n in names)
    assert any(n.startswith("memos/r/0/") for n in names)
    assert await runtime.memos.clear_run("r") == 2
    assert await memory_store.list_blobs("workflow-memo") == ["outcomes/r"]


def test_memo_argument_checks(memory_store: Store) -> None:
    memos = MemoStore(memory_store)
    assert memos.prefix == "workflow-memo" and memos.store is memory_store
    with pytest.raises(taquba.UsageError):
        memos.memo("r", -1)
    with pytest.raises(taquba.UsageError):
        MemoStore(memory_store, "../up")
    assert "memos/r/2" in repr(memos.memo("r", 2))


async def test_memo_rejects_bad_keys_and_values(memory_store: Store) -> None:
    memo = MemoStore(memory_store).memo("r", 0)
    with pytest.raises(taquba.UsageError):
        await memo.put("k", "text")  # type: ignore[arg-type]
    with pytest.raises(taquba.UsageError):
        await memo.get(b"bytes-key")  # type: ignore[arg-type]
