"""The implementation of `taquba.prometheus` (see its docstring)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final, Protocol

import trio

try:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
    from prometheus_client.registry import REGISTRY
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "taquba.prometheus needs prometheus-client: pip install 'taquba[prometheus]'"
    ) from exc

from ._errors import TaqubaError
from ._observe import Observer
from ._validate import check_seconds

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from ._errors import StorageError
    from ._observe import SettleOutcome
    from ._records import JobRecord, QueueStats

__all__ = [
    "DEPTH_STATUSES",
    "JOB_BUCKETS",
    "STORAGE_BUCKETS",
    "PrometheusObserver",
    "StatsSource",
]

log = logging.getLogger("taquba.prometheus")

JOB_BUCKETS: Final[tuple[float, ...]] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
    900.0, 3600.0,
)  # fmt: skip
"""Default buckets (seconds) of the job histograms: handler, end-to-end and wait times."""

STORAGE_BUCKETS: Final[tuple[float, ...]] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
"""Default buckets (seconds) of the commit histograms."""

DEPTH_STATUSES: Final[tuple[str, ...]] = (
    "pending",
    "scheduled",
    "claimed",
    "dead",
    "done",
    "quarantined",
)
"""The ``status`` label values of ``taquba_queue_depth`` (fields of `taquba.QueueStats`)."""


class StatsSource(Protocol):
    """What `PrometheusObserver.refresh_depth` reads: a `taquba.Queue` or `taquba.QueueReader`."""

    async def list_queues(self) -> list[str]:
        """The names of the queues that have jobs or counters."""
        ...

    async def stats(self, queue_name: str) -> QueueStats:
        """The counters of one queue."""
        ...


class PrometheusObserver(Observer):
    """A `taquba.Observer` that fills Prometheus counters, histograms and gauges.

    Args:
        registry: where the metrics are registered (default: prometheus-client's global
            ``REGISTRY``). One observer per registry: a second one would register the same
            names twice (prometheus-client refuses that).
        namespace: the prefix of every metric name.
        job_buckets: histogram buckets (seconds) of the job durations.
        storage_buckets: histogram buckets (seconds) of the commit durations.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        namespace: str = "taquba",
        job_buckets: Sequence[float] = JOB_BUCKETS,
        storage_buckets: Sequence[float] = STORAGE_BUCKETS,
    ) -> None:
        registry = REGISTRY if registry is None else registry
        self.registry: CollectorRegistry = registry
        """The registry the metrics are registered in."""
        ns = namespace

        def counter(name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
            return Counter(name, doc, labels, namespace=ns, registry=registry)

        def histogram(
            name: str, doc: str, labels: Sequence[str], buckets: Sequence[float]
        ) -> Histogram:
            return Histogram(name, doc, labels, namespace=ns, registry=registry, buckets=buckets)

        self._enqueued = counter("jobs_enqueued", "Jobs created by enqueues.", ["queue"])
        self._claimed = counter(
            "jobs_claimed", "Jobs claimed (each claim is an attempt).", ["queue"]
        )
        self._acked = counter("jobs_acked", "Claims acknowledged.", ["queue"])
        self._nacked = counter(
            "jobs_nacked", "Claims nacked (retried or, if out of attempts, dead).", ["queue"]
        )
        self._dead = counter(
            "jobs_dead_lettered",
            "Jobs dead-lettered (nack out of attempts, dead_letter, or an expired last lease).",
            ["queue"],
        )
        self._expired = counter(
            "lease_expiries", "Claims whose lease expired, ended by the reaper.", ["queue"]
        )
        self._recovered = counter(
            "claims_recovered", "Claims of a dead process ended when the queue opened.", ["queue"]
        )
        self._handler = histogram(
            "job_handler_seconds",
            "From claim to durable settlement.",
            ["queue", "outcome"],
            job_buckets,
        )
        self._latency = histogram(
            "job_latency_seconds",
            "From enqueue to durable settlement (end to end).",
            ["queue", "outcome"],
            job_buckets,
        )
        self._wait = histogram(
            "job_wait_seconds",
            "From enqueue to claim (scheduled delay and earlier attempts included).",
            ["queue"],
            job_buckets,
        )
        self._reaper_runs = counter("reaper_runs", "Reaper passes.")
        self._promotions = counter(
            "scheduler_promoted_jobs", "Scheduled jobs (and delayed retries) made pending."
        )
        self._scheduler_runs = counter(
            "scheduler_runs", "Scheduler passes that looked at due jobs."
        )
        self._sweep_runs = counter("sweep_runs", "Retention sweep passes.")
        self._swept = counter(
            "swept_records", "Kept done and dead records deleted by retention sweeps."
        )
        self._storage_errors = counter(
            "storage_errors", "Writes that failed in storage, by error class.", ["kind"]
        )
        self._conflicts = counter(
            "commit_conflicts", "Transaction commits that lost a write conflict (retried)."
        )
        self._commit = histogram(
            "commit_seconds", "Time to apply a transaction commit.", ["durable"], storage_buckets
        )
        self._flush = histogram(
            "commit_durable_seconds",
            "Durability wait of a durable commit (the WAL flush to object storage).",
            [],
            storage_buckets,
        )
        self._depth = Gauge(
            "queue_depth",
            "Jobs in a queue by status (from the queue's stored counters; done is cumulative).",
            ["queue", "status"],
            namespace=ns,
            registry=registry,
        )
        self._depth_updated = Gauge(
            "queue_depth_updated_timestamp_seconds",
            "When taquba_queue_depth was last read from the queue (Unix time).",
            namespace=ns,
            registry=registry,
        )
        self._depth_seen: set[tuple[str, str]] = set()
        self._namespace = ns
        self._layer_counters: dict[str, tuple[Counter, tuple[str, ...]]] = {}

    # ------------------------------------------------------------------ Observer

    def enqueued(self, queue_name: str, jobs: Sequence[JobRecord]) -> None:
        """Count ``jobs_enqueued``."""
        self._enqueued.labels(queue_name).inc(len(jobs))

    def claimed(self, queue_name: str, jobs: Sequence[JobRecord]) -> None:
        """Count ``jobs_claimed`` and observe each job's ``job_wait_seconds``."""
        self._claimed.labels(queue_name).inc(len(jobs))
        wait = self._wait.labels(queue_name)
        for job in jobs:
            if job.claimed_at is not None:
                wait.observe(max(job.claimed_at - job.enqueued_at, 0) / 1000)

    def settled(
        self,
        queue_name: str,
        job: JobRecord,
        outcome: SettleOutcome,
        *,
        dead: bool,
        handler_seconds: float,
        latency_seconds: float,
    ) -> None:
        """Count the settlement and observe ``job_handler_seconds`` and ``job_latency_seconds``."""
        if outcome == "acked":
            self._acked.labels(queue_name).inc()
        elif outcome == "nacked":
            self._nacked.labels(queue_name).inc()
        if dead:
            self._dead.labels(queue_name).inc()
        self._handler.labels(queue_name, outcome).observe(handler_seconds)
        self._latency.labels(queue_name, outcome).observe(latency_seconds)

    def claim_abandoned(self, queue_name: str, job: JobRecord, *, dead: bool, reason: str) -> None:
        """Count ``lease_expiries`` or ``claims_recovered`` (and ``jobs_dead_lettered``)."""
        if reason == "lease expired":
            self._expired.labels(queue_name).inc()
        else:
            self._recovered.labels(queue_name).inc()
        if dead:
            self._dead.labels(queue_name).inc()

    def promoted(self, count: int) -> None:
        """Count ``scheduler_runs`` and ``scheduler_promoted_jobs``."""
        self._scheduler_runs.inc()
        self._promotions.inc(count)

    def reaped(self, count: int) -> None:
        """Count ``reaper_runs``."""
        self._reaper_runs.inc()

    def swept(self, count: int) -> None:
        """Count ``sweep_runs`` and ``swept_records``."""
        self._sweep_runs.inc()
        self._swept.inc(count)

    def committed(self, apply_seconds: float, durable_seconds: float | None) -> None:
        """Observe ``commit_seconds`` and, for a durable commit, ``commit_durable_seconds``."""
        self._commit.labels("true" if durable_seconds is not None else "false").observe(
            apply_seconds
        )
        if durable_seconds is not None:
            self._flush.observe(durable_seconds)

    def storage_error(self, error: StorageError) -> None:
        """Count ``storage_errors`` by the error's class name."""
        self._storage_errors.labels(type(error).__name__).inc()

    def conflicted(self) -> None:
        """Count ``commit_conflicts``."""
        self._conflicts.inc()

    def counted(self, name: str, labels: Mapping[str, str], amount: int) -> None:
        """A layer's event: counter ``<namespace>_<name>_total``, made on first use.

        Its label names are those of the first event of ``name``; a later event with other
        keys raises (the queue logs it once and goes on).
        """
        entry = self._layer_counters.get(name)
        if entry is None:
            keys = tuple(sorted(labels))
            counter = Counter(
                name,
                f"Layer events: {name}.",
                keys,
                namespace=self._namespace,
                registry=self.registry,
            )
            entry = self._layer_counters[name] = (counter, keys)
        counter, keys = entry
        if set(labels) != set(keys):
            raise ValueError(f"{name}: labels {sorted(labels)} differ from {list(keys)}")
        if keys:
            counter.labels(*(labels[k] for k in keys)).inc(amount)
        else:
            counter.inc(amount)

    # ------------------------------------------------------------------ queue depth

    async def refresh_depth(self, queue: StatsSource) -> None:
        """Read every queue's counters (`Queue.stats` of `Queue.list_queues`) into the gauge.

        Queues that no longer exist drop out of the gauge. Bound it with
        ``trio.move_on_after`` where a scrape waits for it; a cancelled refresh leaves the
        previous values.

        Raises:
            TaqubaError: the queue could not be read (the previous values stay).
        """
        names = await queue.list_queues()
        rows = [await queue.stats(name) for name in names]
        seen: set[tuple[str, str]] = set()
        for stats in rows:
            for status in DEPTH_STATUSES:
                self._depth.labels(stats.queue_name, status).set(getattr(stats, status))
                seen.add((stats.queue_name, status))
        for labels in self._depth_seen - seen:
            self._depth.remove(*labels)
        self._depth_seen = seen
        self._depth_updated.set_to_current_time()

    async def serve_depth(
        self,
        queue: StatsSource,
        *,
        interval: float = 15.0,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Refresh the queue depth gauge every ``interval`` seconds, until cancelled.

        Started (``task_status.started()``) after the first refresh; a refresh that fails is
        logged and retried at the next interval.
        """
        interval = check_seconds("interval", interval, positive=True)
        started = False
        while True:
            try:
                await self.refresh_depth(queue)
            except TaqubaError as exc:
                log.warning("could not refresh the queue depth metrics: %s", exc)
            if not started:
                task_status.started()
                started = True
            await trio.sleep(interval)
