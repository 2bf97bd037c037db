"""``GET /metrics``: the queue's Prometheus metrics, in the text exposition format.

The server serves the registry of the queue's `taquba.prometheus.PrometheusObserver`: the one
the application registered itself (its registry, its namespace), or else one the server adds
with a registry of its own. The queue depth gauge is refreshed on a scrape when it is older
than `DEPTH_MAX_AGE`, within `DEPTH_REFRESH_BOUND` (a slow store leaves the previous values).
"""

from __future__ import annotations

import logging
import time
from typing import Final

import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.responses import Response

import taquba
from taquba.prometheus import PrometheusObserver

__all__ = ["DEPTH_MAX_AGE", "DEPTH_REFRESH_BOUND", "Metrics", "observer_of"]

log = logging.getLogger("taquba_server")

DEPTH_MAX_AGE: Final = 5.0
"""Seconds a scrape reuses the last queue depth read instead of reading it again."""

DEPTH_REFRESH_BOUND: Final = 2.0
"""Seconds a scrape waits for the queue depth read."""


def observer_of(queue: taquba.Queue) -> PrometheusObserver:
    """The queue's first `PrometheusObserver`, registering one on a new registry if none."""
    for observer in queue.observers:
        if isinstance(observer, PrometheusObserver):
            return observer
    observer = PrometheusObserver(CollectorRegistry())
    queue.add_observer(observer)
    return observer


class Metrics:
    """The metrics of one server: its observer, and the last queue depth refresh."""

    def __init__(self, queue: taquba.Queue) -> None:
        self.queue = queue
        self.observer = observer_of(queue)
        self._refreshed = -float("inf")
        self._lock = trio.Lock()

    async def refresh(self) -> None:
        """Refresh the queue depth if it is older than `DEPTH_MAX_AGE` (bounded, never raises)."""
        async with self._lock:  # concurrent scrapes share one refresh
            if time.monotonic() - self._refreshed < DEPTH_MAX_AGE:
                return
            with trio.move_on_after(DEPTH_REFRESH_BOUND) as scope:
                try:
                    await self.observer.refresh_depth(self.queue)
                except taquba.TaqubaError as exc:
                    log.warning("/metrics: could not read the queue depth: %s", exc)
                    return
            if scope.cancelled_caught:
                log.warning("/metrics: the queue depth read took over %gs", DEPTH_REFRESH_BOUND)
                return
            self._refreshed = time.monotonic()

    async def response(self) -> Response:
        """The text exposition of the observer's registry."""
        await self.refresh()
        body = generate_latest(self.observer.registry)
        return Response(body, 200, media_type=CONTENT_TYPE_LATEST)
