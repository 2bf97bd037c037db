"""Layer metrics and traces through the owner: workflow runs, cron firings, job results.

The layers count through `taquba.count_event`; the server's ``GET /metrics`` shows them. The
workflow test also follows one trace from the submitting span through every step.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import trio
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

import taquba
import taquba_server
from taquba.otel import TracingObserver
from taquba.testing import open_test_queue

workflow = pytest.importorskip("taquba_workflow")
cron = pytest.importorskip("taquba_cron")
jobs = pytest.importorskip("taquba_jobs")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def exporter() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    yield provider, exported
    provider.shutdown()


class ThreeSteps:
    async def run_step(self, step: workflow.Step[bytes]) -> workflow.StepOutcome[bytes, bytes]:
        if step.number < 2:
            return workflow.Continue(step.payload + b".")
        return workflow.Succeed(step.payload)


async def test_workflow_cron_and_jobs_metrics_and_a_workflow_trace(
    nursery: trio.Nursery, exporter: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exported = exporter
    tracer = provider.get_tracer("test")
    clock = taquba.MockClock()
    async with open_test_queue(clock=clock) as queue:
        queue.add_observer(TracingObserver(provider))
        server = taquba_server.Server(queue, port=0)
        url = await nursery.start(server.serve)

        runtime = workflow.Runtime(queue, ThreeSteps(), poll_interval=0.01)
        await nursery.start(runtime.serve)
        with tracer.start_as_current_span("submit") as submit:
            handle = await runtime.submit(workflow.RunSpec(input=b"go", run_id="r1"))
        with trio.fail_after(10):
            outcome = await handle.wait()
        assert outcome is not None
        assert outcome.result == b"go.."
        runtime.shutdown()

        scheduler = cron.Scheduler(queue, [cron.Schedule("tick", "* * * * *", "ticks")])
        assert await scheduler.fire_due() == 0
        clock.advance(61)
        assert await scheduler.fire_due() == 1

        @jobs.job(name="double")
        async def double(ctx: jobs.JobContext, x: int) -> int:
            return 2 * x

        runner = jobs.JobRunner(queue, [double], poll_interval=0.01)
        await nursery.start(runner.serve)
        with trio.fail_after(10):
            assert await (await runner.submit(double, 21)).result() == 42
        runner.shutdown()

        async with httpx.AsyncClient(base_url=url) as http:
            found = samples((await http.get("/metrics")).text)
        server.shutdown()

    assert sample(found, "taquba_workflow_runs_total", queue="workflow", state="submitted") == 1
    assert sample(found, "taquba_workflow_runs_total", queue="workflow", state="succeeded") == 1
    assert sample(found, "taquba_cron_firings_total", schedule="tick", outcome="enqueued") == 1
    assert (
        sample(found, "taquba_jobs_results_total", queue=runner.queue_name, status="succeeded") == 1
    )
    # The trace: submit -> create step 0 -> process -> create step 1 -> process -> ...
    spans = exported.get_finished_spans()
    trace_id = submit.get_span_context().trace_id
    steps = [s for s in spans if s.name == "process workflow"]
    assert len(steps) == 3
    assert {s.get_span_context().trace_id for s in steps} == {trace_id}
