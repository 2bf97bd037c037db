"""The dashboard's workflow-runs pages (``/ui/workflow``), when taquba-workflow is installed.

The server has the queue but not the application's step functions, so it cannot build a
``taquba_workflow.Runtime``; these pages use the runtime-free functions of taquba-workflow
(``list_runs``, ``get_run``, ``cancel_run``, ``list_memos``, ``read_run_outcome``) on the
records any runtime writes.

Which queues run workflows is not configured anywhere the server sees: the index page looks at
every queue of ``Queue.list_queues`` (every queue that ever held a job, which includes every
runtime's ``queue_name``) and shows those with an active run or a recorded outcome (two
one-entry KV scans per queue). Memos and outcome blobs are read from the queue's own store
under the default memo prefix (``workflow-memo``); a runtime configured with another
``store`` or ``memo_prefix`` shows its runs but not their memos and outcome blobs.

taquba-workflow is optional: without it (or with a release older than these functions) the
routes answer 404 and the navigation has no link.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

from starlette.routing import Route

import taquba

from ._dashboard import (
    PAGE_SIZE,
    PREFIX,
    Dashboard,
    _here,  # pyright: ignore[reportPrivateUsage]
    _Page,  # pyright: ignore[reportPrivateUsage]
    audit,
)
from ._ui_format import PAYLOAD_PREVIEW, age, preview

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from ._session import Session

__all__ = ["installed", "workflow_routes"]


def installed() -> bool:
    """Whether a taquba-workflow with the runtime-free run functions is importable."""
    if importlib.util.find_spec("taquba_workflow") is None:
        return False
    import taquba_workflow

    return hasattr(taquba_workflow, "list_runs") and hasattr(taquba_workflow, "get_run")


def _prefix(queue_name: str, kind: str) -> bytes:
    return f"workflow/{queue_name}/{kind}/".encode()


class WorkflowPages:
    """The workflow pages and the cancel action of one `Dashboard` (library-internal)."""

    def __init__(self, dashboard: Dashboard) -> None:
        self.dashboard = dashboard
        self.queue = dashboard.queue
        self.installed = installed()

    def _require(self) -> None:
        if not self.installed:
            raise _Page(404, "taquba-workflow (0.9 or later) is not installed")

    async def queue_names(self) -> list[str]:
        """The queues with an active run or a recorded outcome, sorted."""
        found: list[str] = []
        for name in await self.queue.list_queues():
            for kind in ("runs", "outcomes"):
                if (await self.queue.kv_scan(_prefix(name, kind), limit=1)).entries:
                    found.append(name)
                    break
        return found

    async def index(self, request: Request, session: Session) -> Response:
        """Every workflow queue, with links to its active and ended runs."""
        self._require()
        names = await self.queue_names()
        return self.dashboard._render(  # pyright: ignore[reportPrivateUsage]
            request, "workflow.html", session=session, names=names
        )

    async def runs(self, request: Request, session: Session) -> Response:
        """One page of a workflow queue's active or ended runs."""
        self._require()
        import taquba_workflow

        name = request.query_params.get("name", "")
        taquba.validate_queue_name(name)
        ended = request.query_params.get("ended") == "1"
        after = request.query_params.get("after") or None
        page = await taquba_workflow.list_runs(
            self.queue, name, ended=ended, after=after, limit=PAGE_SIZE
        )
        now = self.dashboard._now()  # pyright: ignore[reportPrivateUsage]
        rows = [
            {"run": run, "age": age(run.submitted_at_ms or run.finished_at_ms, now)}
            for run in page.runs
        ]
        return self.dashboard._render(  # pyright: ignore[reportPrivateUsage]
            request,
            "workflow_runs.html",
            session=session,
            name=name,
            ended=ended,
            rows=rows,
            skipped=page.skipped,
            next_after=page.next_after,
            here=_here(request),
        )

    async def run(self, request: Request, session: Session) -> Response:
        """One run: its summary, its current step job, its memo entries and its outcome."""
        self._require()
        import taquba_workflow

        name = request.query_params.get("name", "")
        taquba.validate_queue_name(name)
        run_id = request.path_params["run_id"]
        run = await taquba_workflow.get_run(self.queue, name, run_id)
        if run is None:
            raise _Page(404, f"no run {run_id!r} on workflow queue {name!r}")
        memos = await taquba_workflow.list_memos(self.queue.store, run_id)
        job = None if run.job_id is None else await self.queue.get_job(run.job_id)
        outcome: Any = None
        outcome_problem: str | None = None
        result: dict[str, Any] | None = None
        if run.state.terminal:
            try:
                outcome = await taquba_workflow.read_run_outcome(self.queue.store, run_id)
            except taquba_workflow.WorkflowDataError as exc:
                outcome_problem = f"the outcome blob cannot be decoded: {exc}"
            if outcome is not None and outcome.result is not None:
                shown, text, truncated = preview(outcome.result, "auto")
                result = {"view": shown, "text": text, "truncated": truncated}
        return self.dashboard._render(  # pyright: ignore[reportPrivateUsage]
            request,
            "workflow_run.html",
            session=session,
            name=name,
            run=run,
            job=job,
            memos=memos,
            outcome=outcome,
            outcome_problem=outcome_problem,
            result=result,
            cap=PAYLOAD_PREVIEW,
            here=_here(request),
        )

    async def cancel(self, session: Session, fields: dict[str, str]) -> str:
        """Cancel this workflow run."""
        self._require()
        import taquba_workflow

        name = fields.get("queue_name", "")
        taquba.validate_queue_name(name)
        run_id = fields.get("run_id", "")
        requested = await taquba_workflow.cancel_run(self.queue, name, run_id)
        audit.info(
            "ui cancel-run: %s %s workflow run %s of %s",
            session.who,
            "requested the cancellation of" if requested else "found no active",
            run_id,
            name,
        )
        if not requested:
            return f"run {run_id} is not active: nothing to cancel"
        return f"cancellation of run {run_id} requested"


def workflow_routes(dashboard: Dashboard) -> list[Route]:
    """The workflow pages' routes (under ``/ui``) and the cancel action."""
    pages = WorkflowPages(dashboard)
    view, action = dashboard._view, dashboard._action  # pyright: ignore[reportPrivateUsage]
    get, post = ["GET"], ["POST"]
    return [
        Route(PREFIX + "/workflow", view(pages.index), methods=get),
        Route(PREFIX + "/workflow/runs", view(pages.runs), methods=get),
        Route(PREFIX + "/workflow/runs/{run_id}", view(pages.run), methods=get),
        Route(PREFIX + "/actions/cancel-run", action(pages.cancel), methods=post),
    ]
