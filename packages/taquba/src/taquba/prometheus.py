"""Prometheus metrics of a queue: `PrometheusObserver` (extra ``taquba[prometheus]``).

Register the observer with the queue and expose its registry the way your process already
does (``prometheus_client.start_http_server``, an ASGI app, or taquba-server's
``GET /metrics``, which does this for you)::

    from prometheus_client import CollectorRegistry
    from taquba.prometheus import PrometheusObserver

    registry = CollectorRegistry()
    metrics = PrometheusObserver(registry)
    async with taquba.open_queue(store, observers=[metrics]) as queue:
        nursery.start_soon(metrics.serve_depth, queue)  # queue depth, every 15 s
        ...

Every metric, its labels and its meaning are listed in the observability guide
(``docs/guides/observability.md``). Counters count from the observer's creation (one
process's share); the queue depth gauge is read from the queue's stored counters and so is
the same in every process that samples it.
"""

from ._fixup import fixup_module_metadata as _fixup
from ._prometheus import DEPTH_STATUSES as DEPTH_STATUSES
from ._prometheus import JOB_BUCKETS as JOB_BUCKETS
from ._prometheus import STORAGE_BUCKETS as STORAGE_BUCKETS
from ._prometheus import PrometheusObserver as PrometheusObserver
from ._prometheus import StatsSource as StatsSource

__all__ = ["DEPTH_STATUSES", "JOB_BUCKETS", "STORAGE_BUCKETS", "PrometheusObserver", "StatsSource"]

_fixup(__name__, globals())
