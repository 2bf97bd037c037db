"""The dashboard's "Job results" pages: taquba-jobs outcomes, read without a runner.

The server has the queue but not the user's job functions, so it cannot build a
``taquba_jobs.JobRunner``; it reads the result blobs with ``taquba_jobs.list_results`` and
``taquba_jobs.read_result``, which need only the store. taquba-jobs is optional: without it
the pages say so (404) and the navigation has no link to them.

Pending and running taquba-jobs jobs are ordinary queue jobs (the runner's queue, with the
job's name in the ``taquba_jobs.job`` header), shown by the queue and job pages; these pages
link there rather than list them a second time.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import logging
from typing import TYPE_CHECKING, Any, Protocol

import ormsgpack

import taquba

from ._ui_format import PAYLOAD_PREVIEW, preview

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from ._session import Session

__all__ = ["JobResultsPages"]

log = logging.getLogger("taquba_server.ui")

PAGE_SIZE = 50
_SUFFIX = "-results"
_VIEWS = ("auto", "json", "text", "hex")


class Render(Protocol):
    """The dashboard's page renderer (``Dashboard._render``)."""

    def __call__(
        self, request: Request, template: str, status: int = 200, **context: Any
    ) -> Response:
        """Render ``template`` with the dashboard's common context and ``context``."""
        ...


class JobResultsPages:
    """The ``/ui/results`` pages of one dashboard (library-internal)."""

    def __init__(
        self, queue: taquba.Queue, render: Render, *, result_prefix: str | None = None
    ) -> None:
        self.queue = queue
        self.render = render
        self.installed = importlib.util.find_spec("taquba_jobs") is not None
        if result_prefix is None:
            result_prefix = "jobs-results"  # taquba_jobs.DEFAULT_RESULT_PREFIX
        self.result_prefix = result_prefix

    def _error(self, request: Request, session: Session, status: int, message: str) -> Response:
        return self.render(request, "error.html", status, session=session, error=message)

    async def _jobs_queue(self) -> str | None:
        """The runner's queue, when the prefix is a default one (``<queue>-results``)."""
        if not self.result_prefix.endswith(_SUFFIX):
            return None
        name = self.result_prefix[: -len(_SUFFIX)]
        return name if name in await self.queue.list_queues() else None

    async def list_page(self, request: Request, session: Session) -> Response:
        """One page of stored outcomes, oldest submission first."""
        if not self.installed:
            return self._error(request, session, 404, "taquba-jobs is not installed")
        import taquba_jobs

        after = request.query_params.get("after") or None
        if after is not None:
            taquba.validate_job_id(after)  # InvalidId: a 400 page
        page = await taquba_jobs.list_results(
            self.queue.store, result_prefix=self.result_prefix, after=after, limit=PAGE_SIZE
        )
        return self.render(
            request,
            "results.html",
            session=session,
            results=page.results,
            skipped=page.skipped,
            next_after=page.next_after,
            first=after is None,
            prefix=self.result_prefix,
            jobs_queue=await self._jobs_queue(),
        )

    async def result_page(self, request: Request, session: Session) -> Response:
        """One stored outcome: its error or its output (previewed), and its queue job."""
        if not self.installed:
            return self._error(request, session, 404, "taquba-jobs is not installed")
        import taquba_jobs

        job_id = request.path_params["id"]
        taquba.validate_job_id(job_id)
        view = request.query_params.get("view", "auto")
        if view not in _VIEWS:
            return self._error(request, session, 400, f"unknown view {view!r}")
        try:
            result = await taquba_jobs.read_result(
                self.queue.store, job_id, result_prefix=self.result_prefix
            )
        except taquba.DataError as exc:
            log.warning("dashboard: the result of job %s does not decode: %s", job_id, exc)
            return self._error(
                request, session, 500, f"the stored result of job {job_id} does not decode: {exc}"
            )
        if result is None:
            return self._error(
                request,
                session,
                404,
                f"no stored result for job {job_id} under {self.result_prefix}/ (still pending "
                "or running, ended without one, swept by retention, or never existed)",
            )
        shown = text = ""
        truncated = False
        if result.value is not None:
            shown, text, truncated = _preview(result.value, view)
        return self.render(
            request,
            "results_one.html",
            session=session,
            result=result,
            queue_job=await self.queue.get_job(job_id),
            view=shown,
            value=text,
            truncated=truncated,
            cap=PAYLOAD_PREVIEW,
            here=str(request.url.path),
        )


def _jsonable(value: object) -> object:
    """A decoded MessagePack value as JSON data (bytes as base64 text, keys as strings)."""
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        items: dict[Any, Any] = value  # pyright: ignore[reportUnknownVariableType]
        return {str(k): _jsonable(v) for k, v in items.items()}
    if isinstance(value, list | tuple):
        seq: list[Any] | tuple[Any, ...] = value  # pyright: ignore[reportUnknownVariableType]
        return [_jsonable(v) for v in seq]
    return value


def _preview(value: bytes, view: str) -> tuple[str, str, bool]:
    """The output as JSON (decoded from its MessagePack), text or hex; capped like payloads.

    ``auto`` and ``json`` show the decoded MessagePack as JSON when it decodes (a value too
    large to preview whole is shown as hex instead); ``text`` and ``hex`` show the raw bytes.
    """
    if view in ("auto", "json") and len(value) <= PAYLOAD_PREVIEW:
        try:
            decoded = ormsgpack.unpackb(value)
            text = json.dumps(_jsonable(decoded), indent=2, ensure_ascii=False)
        except (TypeError, ValueError):
            pass
        else:
            return "json", text[:PAYLOAD_PREVIEW], len(text) > PAYLOAD_PREVIEW
    return preview(value, "hex" if view in ("auto", "json") else view)
