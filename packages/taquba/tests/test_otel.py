"""`taquba.otel.TracingObserver`: a trace follows a job from producer to handler to follow-up."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
import trio
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import taquba
from taquba import Effects, EnqueueRequest, JobRecord, LeaseHandle, Store
from taquba.otel import TracingObserver, job_context

FAST = {"flush_interval": 0.005, "reaper_interval": 3600.0, "scheduler_interval": 3600.0}
KEEP = taquba.QueueConfig(keep_done=3600)  # so wait_for_completion finds a finished job


@pytest.fixture
def traced() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


async def test_trace_follows_job_to_handler_and_follow_up(
    memory_store: Store, traced: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = traced
    tracer = provider.get_tracer("test")
    handled: list[str] = []

    async def first(job: JobRecord, lease: LeaseHandle) -> Effects:
        handled.append(job.id)
        return Effects(enqueues=[EnqueueRequest(queue_name="second", payload=b"", job_id="f")])

    async def second(job: JobRecord, lease: LeaseHandle) -> None:
        handled.append(job.id)
        raise taquba.PermanentFailure("stop here")

    observer = TracingObserver(provider)
    async with taquba.open_queue(
        memory_store, "ot", config=KEEP, observers=[observer], **FAST
    ) as queue:
        with tracer.start_as_current_span("request") as request:
            await queue.enqueue("first", b"", job_id="p")
        stored = await queue.get_job("p")
        assert stored is not None
        assert "traceparent" in stored.headers
        workers = [
            taquba.Worker(queue, "first", first, poll_interval=0.01),
            taquba.Worker(queue, "second", second, poll_interval=0.01),
        ]
        async with trio.open_nursery() as nursery:
            for worker in workers:
                await nursery.start(worker.serve)
            with trio.fail_after(10):
                await queue.wait_for_completion("p")
                await queue.wait_for_completion("f")
            for worker in workers:
                worker.shutdown()
    assert handled == ["p", "f"]

    spans = exporter.get_finished_spans()
    trace_id = request.get_span_context().trace_id
    create_p, create_f = by_name(spans, "create first") + by_name(spans, "create second")
    (process_p,) = by_name(spans, "process first")
    (process_f,) = by_name(spans, "process second")
    # One trace: request -> create p -> process p -> create f -> process f.
    chain = [request, create_p, process_p, create_f, process_f]
    assert {s.get_span_context().trace_id for s in chain} == {trace_id}
    for parent, child in itertools.pairwise(chain):
        assert child.parent is not None
        assert child.parent.span_id == parent.get_span_context().span_id, child.name
    assert create_p.kind is trace.SpanKind.PRODUCER
    assert process_p.kind is trace.SpanKind.CONSUMER
    assert create_p.attributes is not None
    assert create_p.attributes["messaging.message.id"] == "p"
    assert process_p.attributes is not None
    assert process_p.attributes["taquba.job.outcome"] == "acked"
    assert process_f.attributes is not None
    assert process_f.attributes["taquba.job.outcome"] == "dead_lettered"
    assert process_f.status.status_code is trace.StatusCode.ERROR
    # Each claim made a receive span linked to the job's create span.
    (receive_p,) = by_name(spans, "receive first")
    assert [link.context.span_id for link in receive_p.links] == [
        create_p.get_span_context().span_id
    ]


async def test_caller_trace_headers_win_and_hand_settlements_are_left_alone(
    memory_store: Store, traced: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = traced
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with taquba.open_queue(
        memory_store, "oh", observers=[TracingObserver(provider)], **FAST
    ) as queue:
        await queue.enqueue("q", b"", job_id="x", headers={"traceparent": parent})
        claim = await queue.claim("q")
        assert claim is not None
        assert claim.job.headers["traceparent"] == parent  # the caller's header wins
        assert trace.get_current_span(job_context(claim.job)).get_span_context().trace_id == int(
            "0af7651916cd43dd8448eb211c80319c", 16
        )
        await queue.ack(claim)  # by hand: no process span
    names = sorted(s.name for s in exporter.get_finished_spans())
    assert names == ["create q", "receive q"]


async def test_concurrent_handlers_each_get_their_own_outcome(
    memory_store: Store, traced: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """Acks ride one group commit; each `process` span still gets its own job's outcome."""
    provider, exporter = traced
    release = trio.Event()
    all_in = trio.Event()
    entered = 0

    async def handler(job: JobRecord, lease: LeaseHandle) -> None:
        nonlocal entered
        entered += 1
        if entered == 6:
            all_in.set()
        await release.wait()  # all in flight at once, so their acks batch

    async with taquba.open_queue(
        memory_store, "oc", config=KEEP, observers=[TracingObserver(provider)], **FAST
    ) as queue:
        for n in range(6):
            await queue.enqueue("q", b"", job_id=f"j{n}")
        worker = taquba.Worker(queue, "q", handler, concurrency=6, poll_interval=0.01)
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            with trio.fail_after(10):
                await all_in.wait()
                release.set()
                for n in range(6):
                    await queue.wait_for_completion(f"j{n}")
            worker.shutdown()
    processed = by_name(exporter.get_finished_spans(), "process q")
    assert len(processed) == 6
    for span in processed:
        assert span.attributes is not None
        assert span.attributes["taquba.job.outcome"] == "acked", span.attributes
