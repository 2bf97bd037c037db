"""`taquba.prometheus.PrometheusObserver` on a real queue: counters match what was done."""

from __future__ import annotations

import json
import pathlib
import re

import pytest
import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import taquba
from taquba import Effects, EnqueueRequest, JobRecord, LeaseHandle, MockClock, QueueConfig, Store
from taquba.prometheus import DEPTH_STATUSES, PrometheusObserver
from taquba.testing import Fault, inject_faults

FAST = {"flush_interval": 0.005, "reaper_interval": 3600.0, "scheduler_interval": 3600.0}
CONFIG = QueueConfig(max_attempts=2, lease_duration=10, retry_backoff_base=1, keep_done=60)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    found = registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


class SetOnSettled(taquba.Observer):
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.event = trio.Event()

    def settled(self, queue_name: str, job: JobRecord, *args: object, **kwargs: object) -> None:
        if job.id == self.job_id:
            self.event.set()


async def test_counters_histograms_and_depth(memory_store: Store) -> None:
    registry = CollectorRegistry()
    metrics = PrometheusObserver(registry)
    clock = MockClock()
    j1 = SetOnSettled("j1")
    j1_nacked = j1.event
    async with taquba.open_queue(
        memory_store, "pm", config=CONFIG, clock=clock, observers=[metrics, j1], **FAST
    ) as queue:
        for n in range(4):
            await queue.enqueue("q", b"", job_id=f"j{n}")

        async def handler(job: JobRecord, lease: LeaseHandle) -> Effects | None:
            if job.id == "j0":
                raise taquba.PermanentFailure("no")
            if job.id == "j1":
                raise RuntimeError("retry me")
            return Effects(enqueues=[EnqueueRequest(queue_name="next", payload=b"")])

        worker = taquba.Worker(queue, "q", handler, poll_interval=0.01)
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            with trio.fail_after(10):
                for job_id in ("j0", "j2", "j3"):
                    await queue.wait_for_completion(job_id)
                await j1_nacked.wait()
            worker.shutdown()
        # A lease that expires (j1's retry, claimed by hand and left to the reaper).
        clock.advance(3600)
        await queue.promote_scheduled_now()
        assert await queue.claim("q") is not None
        clock.advance(60)
        assert await queue.reap_now() == 1
        with inject_faults() as faults:
            faults.on_write(Fault.unavailable(), durable=True)
            with pytest.raises(taquba.StorageUnavailable):
                await queue.enqueue("q", b"", job_id="lost")
        await metrics.refresh_depth(queue)

    assert value(registry, "taquba_jobs_enqueued_total", queue="q") == 4
    assert value(registry, "taquba_jobs_enqueued_total", queue="next") == 2
    assert value(registry, "taquba_jobs_claimed_total", queue="q") == 5
    assert value(registry, "taquba_jobs_acked_total", queue="q") == 2
    assert value(registry, "taquba_jobs_nacked_total", queue="q") == 1
    # j0 by the handler, j1 by the reaper (its expired lease was its last attempt).
    assert value(registry, "taquba_jobs_dead_lettered_total", queue="q") == 2
    assert value(registry, "taquba_lease_expiries_total", queue="q") == 1
    assert value(registry, "taquba_reaper_runs_total") == 1
    assert value(registry, "taquba_scheduler_promoted_jobs_total") == 1
    assert value(registry, "taquba_storage_errors_total", kind="StorageUnavailable") == 1
    handler_count = value(registry, "taquba_job_handler_seconds_count", queue="q", outcome="acked")
    assert handler_count == 2
    assert value(registry, "taquba_job_latency_seconds_count", queue="q", outcome="nacked") == 1
    assert value(registry, "taquba_job_wait_seconds_count", queue="q") == 5
    assert value(registry, "taquba_commit_durable_seconds_count") > 0
    assert value(registry, "taquba_commit_seconds_count", durable="false") > 0
    depth = {s: value(registry, "taquba_queue_depth", queue="q", status=s) for s in DEPTH_STATUSES}
    assert depth == {
        "pending": 0,
        "scheduled": 0,
        "claimed": 0,
        "dead": 2,
        "done": 2,
        "quarantined": 0,
    }
    assert value(registry, "taquba_queue_depth", queue="next", status="pending") == 2
    # The text exposition parses, and holds every family.
    text = generate_latest(registry).decode()
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {"taquba_jobs_enqueued", "taquba_queue_depth", "taquba_commit_seconds"} <= names


async def test_serve_depth_refreshes_and_drops_gone_queues(memory_store: Store) -> None:
    registry = CollectorRegistry()
    metrics = PrometheusObserver(registry)
    async with taquba.open_queue(memory_store, "dp", observers=[metrics], **FAST) as queue:
        await queue.enqueue("a", b"")
        async with trio.open_nursery() as nursery:
            await nursery.start(metrics.serve_depth, queue)
            assert value(registry, "taquba_queue_depth", queue="a", status="pending") == 1
            assert value(registry, "taquba_queue_depth_updated_timestamp_seconds") > 0
            nursery.cancel_scope.cancel()
        metrics._depth_seen.add(("gone", "pending"))  # pyright: ignore[reportPrivateUsage]
        metrics._depth.labels("gone", "pending").set(3)  # pyright: ignore[reportPrivateUsage]
        await metrics.refresh_depth(queue)
    gone = {"queue": "gone", "status": "pending"}
    assert registry.get_sample_value("taquba_queue_depth", gone) is None


async def test_one_observer_per_registry() -> None:
    registry = CollectorRegistry()
    PrometheusObserver(registry, namespace="x")
    with pytest.raises(ValueError, match="Duplicated"):
        PrometheusObserver(registry, namespace="x")
    PrometheusObserver(registry, namespace="y")  # another namespace is fine


async def test_serve_depth_checks_interval() -> None:
    metrics = PrometheusObserver(CollectorRegistry())
    with pytest.raises(taquba.InvalidArgument):
        await metrics.serve_depth(None, interval=0)  # type: ignore[arg-type]


async def test_count_event_makes_layer_counters(
    memory_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    metrics = PrometheusObserver(registry)
    async with taquba.open_queue(memory_store, "ce", observers=[metrics], **FAST) as queue:
        taquba.count_event(queue, "cron_firings", {"schedule": "s", "outcome": "enqueued"}, 2)
        taquba.count_event(queue, "cron_firings", {"outcome": "enqueued", "schedule": "s"})
        taquba.count_event(queue, "plain")
        with caplog.at_level("ERROR", logger="taquba.observe"):
            taquba.count_event(queue, "cron_firings", {"other": "x"})  # logged, ignored
        assert "labels ['other'] differ" in caplog.text
    taquba.count_event(object(), "ignored")  # not a Queue: a no-op
    labels = {"schedule": "s", "outcome": "enqueued"}
    assert value(registry, "taquba_cron_firings_total", **labels) == 3
    assert value(registry, "taquba_plain_total") == 1


LAYER_COUNTERS = {
    "taquba_workflow_runs_total",
    "taquba_jobs_results_total",
    "taquba_cron_firings_total",
    "taquba_cron_skips_total",
    "taquba_webhook_deliveries_total",
}


def test_the_guide_and_the_dashboard_name_only_real_metrics() -> None:
    """Every metric is in the observability guide; the Grafana dashboard uses no other."""
    root = pathlib.Path(__file__).resolve().parents[3]
    registry = CollectorRegistry()
    PrometheusObserver(registry)
    real: set[str] = set()
    for family in registry.collect():
        suffix = "_total" if family.type == "counter" else ""
        real.add(family.name + suffix)
    real |= LAYER_COUNTERS
    guide = (root / "docs" / "guides" / "observability.md").read_text()
    documented = set(re.findall(r"`(taquba_[a-z_]+)`", guide))
    assert real == documented
    dashboard = json.loads((root / "docs" / "operations" / "grafana-dashboard.json").read_text())
    used: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            used |= set(re.findall(r"taquba_[a-z_]+", target["expr"]))
    used = {re.sub(r"_(bucket|count|sum)$", "", name) for name in used}
    assert used <= real, used - real
    assert used == real, real - used  # the dashboard shows every metric
