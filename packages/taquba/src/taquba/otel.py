"""OpenTelemetry traces of a queue: `TracingObserver` (extra ``taquba[otel]``).

Depends on ``opentelemetry-api`` only: spans go to whatever tracer provider the application
configured (none: no-op spans). Register the observer with the queue::

    from taquba.otel import TracingObserver

    async with taquba.open_queue(store, observers=[TracingObserver()]) as queue:
        ...

What it records (the observability guide lists every span and attribute):

- ``create <queue>`` (kind PRODUCER), one per job enqueued, a child of the span current in
  the enqueuing task. Its context is written into the job's headers (``traceparent``, and
  ``tracestate`` when set: W3C trace context, through the configured propagator), so the job
  carries the trace with it.
- ``receive <queue>`` (CONSUMER), one per claim call that claimed jobs, linked to each
  claimed job's ``create`` span.
- ``process <queue>`` (CONSUMER), one per handler run in `taquba.Worker`, a child of the
  job's ``create`` span, covering the handler and its settlement; it is current while the
  handler runs, so the follow-up enqueues of the settlement (`taquba.Effects`, workflow
  steps) and anything the handler enqueues are its children. Its ``taquba.job.outcome``
  attribute is the settlement (``acked``, ``nacked``, ``dead_lettered``); a settlement other
  than an ack sets its status to error.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import TYPE_CHECKING

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("taquba.otel needs opentelemetry-api: pip install 'taquba[otel]'") from exc

from ._fixup import fixup_module_metadata
from ._observe import Observer

if TYPE_CHECKING:
    from collections.abc import Generator, Mapping, Sequence

    from ._observe import SettleOutcome
    from ._records import JobRecord
    from ._types import Claim

__all__ = ["MESSAGING_SYSTEM", "TracingObserver", "job_context"]

MESSAGING_SYSTEM = "taquba"
"""The ``messaging.system`` attribute of every span."""


_PROCESSING: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "taquba_otel_processing", default=None
)
"""The id of the job whose ``process`` span is current (set by `TracingObserver.handling`)."""


def job_context(job: JobRecord) -> otel_context.Context:
    """The trace context a job carries in its headers (empty if it carries none)."""
    return propagate.extract(dict(job.headers))


class TracingObserver(Observer):
    """A `taquba.Observer` that makes OpenTelemetry spans and carries their context in jobs.

    Args:
        tracer_provider: where spans go (default: the global tracer provider).
    """

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        from . import __version__

        self._tracer = trace.get_tracer("taquba", __version__, tracer_provider=tracer_provider)

    def enqueue_headers(self, queue_name: str, job_id: str) -> Mapping[str, str] | None:  # noqa: D102
        span = self._tracer.start_span(
            f"create {queue_name}",
            kind=trace.SpanKind.PRODUCER,
            attributes={
                "messaging.system": MESSAGING_SYSTEM,
                "messaging.operation.type": "create",
                "messaging.destination.name": queue_name,
                "messaging.message.id": job_id,
            },
        )
        try:
            carrier: dict[str, str] = {}
            propagate.inject(carrier, context=trace.set_span_in_context(span))
            return carrier
        finally:
            span.end()

    def claimed(self, queue_name: str, jobs: Sequence[JobRecord]) -> None:  # noqa: D102
        links = [
            trace.Link(context)
            for job in jobs
            if (context := trace.get_current_span(job_context(job)).get_span_context()).is_valid
        ]
        span = self._tracer.start_span(
            f"receive {queue_name}",
            kind=trace.SpanKind.CONSUMER,
            links=links,
            attributes={
                "messaging.system": MESSAGING_SYSTEM,
                "messaging.operation.type": "receive",
                "messaging.destination.name": queue_name,
                "messaging.batch.message_count": len(jobs),
            },
        )
        span.end()

    @contextlib.contextmanager
    def handling(self, claim: Claim) -> Generator[None]:  # noqa: D102
        job = claim.job
        with self._tracer.start_as_current_span(
            f"process {job.queue_name}",
            context=job_context(job),
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": MESSAGING_SYSTEM,
                "messaging.operation.type": "process",
                "messaging.destination.name": job.queue_name,
                "messaging.message.id": job.id,
                "taquba.job.attempt": job.attempts,
            },
        ):
            token = _PROCESSING.set(job.id)
            try:
                yield
            finally:
                _PROCESSING.reset(token)

    def settled(  # noqa: D102
        self,
        queue_name: str,
        job: JobRecord,
        outcome: SettleOutcome,
        *,
        dead: bool,
        handler_seconds: float,
        latency_seconds: float,
    ) -> None:
        if _PROCESSING.get() != job.id:
            return  # not settled inside this job's `process` span (a settlement by hand)
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute("taquba.job.outcome", outcome)
            span.set_attribute("taquba.job.dead", dead)
            if outcome != "acked":
                span.set_status(trace.Status(trace.StatusCode.ERROR, outcome))


fixup_module_metadata(__name__, globals())
