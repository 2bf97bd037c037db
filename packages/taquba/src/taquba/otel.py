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

from ._fixup import fixup_module_metadata as _fixup
from ._otel import MESSAGING_SYSTEM as MESSAGING_SYSTEM
from ._otel import TracingObserver as TracingObserver
from ._otel import job_context as job_context

__all__ = ["MESSAGING_SYSTEM", "TracingObserver", "job_context"]

_fixup(__name__, globals())
