"""The implementation of `taquba.otel` (see its docstring)."""

from __future__ import annotations

import contextlib
import contextvars
from typing import TYPE_CHECKING

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("taquba.otel needs opentelemetry-api: pip install 'taquba[otel]'") from exc

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

    def enqueue_headers(self, queue_name: str, job_id: str) -> Mapping[str, str] | None:
        """Start and end a ``create`` span; return its context as W3C headers."""
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

    def claimed(self, queue_name: str, jobs: Sequence[JobRecord]) -> None:
        """Record a ``receive`` span linked to each job's ``create`` span."""
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
    def handling(self, claim: Claim) -> Generator[None]:
        """The job's ``process`` span, current while its handler runs and settles."""
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
        """Set the outcome attributes (and error status) of the job's ``process`` span."""
        if _PROCESSING.get() != job.id:
            return  # not settled inside this job's `process` span (a settlement by hand)
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute("taquba.job.outcome", outcome)
            span.set_attribute("taquba.job.dead", dead)
            if outcome != "acked":
                span.set_status(trace.Status(trace.StatusCode.ERROR, outcome))
