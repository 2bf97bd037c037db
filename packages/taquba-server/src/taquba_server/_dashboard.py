"""The web dashboard under ``/ui``: server-rendered pages (Jinja2), htmx, no JavaScript build.

Views need a login with an API scope (``metrics`` alone is refused); actions (requeue, purge,
cancel, pause, resume) need ``admin``, a CSRF token bound to the session, and a confirmation
step. Every action is written to the ``taquba_server.audit`` log with who did what.

The pages, the actions and their plumbing (sessions, rendering, error pages) stay in this one
module, over 600 lines, because every view and action goes through the same few helpers; the
pure formatting lives in ``_ui_format`` and the sessions in ``_session``.
"""

from __future__ import annotations

import base64
import binascii
import collections
import importlib.util
import itertools
import logging
import urllib.parse
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

import jinja2
import trio
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

import taquba

from ._auth import find_token
from ._dashboard_jobs import JobResultsPages
from ._session import COOKIE_NAME, Session, SessionSigner
from ._ui_format import PAYLOAD_PREVIEW, age, preview, spark, when, zoned

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from starlette.requests import Request

    from taquba_cron import Scheduler
    from taquba_webhooks import EndpointStats

    from ._auth import Token

__all__ = ["Dashboard"]

log = logging.getLogger("taquba_server.ui")
audit = logging.getLogger("taquba_server.audit")

PREFIX = "/ui"
SAMPLE_INTERVAL = 15.0
"""Seconds between two samples of the queue statistics."""
HISTORY = 3600.0
"""Seconds of samples kept in memory (the charts' window)."""
PAGE_SIZE = 50
RATE_WINDOW = 60.0
"""Seconds the rates look back over (at least; the samples decide)."""
MAX_FORM = 64 * 1024
_STATIC = {"htmx.min.js": "text/javascript", "dashboard.css": "text/css"}
_STATUSES = [s.value for s in taquba.JobStatus]
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


class _Page(Exception):
    """An error page (status and message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class _Sample:
    at: float
    stats: dict[str, taquba.QueueStats]


def _cursor_out(cursor: bytes | None) -> str | None:
    return None if cursor is None else base64.urlsafe_b64encode(cursor).decode()


def _cursor_in(text: str | None) -> bytes | None:
    if not text:
        return None
    try:
        return base64.urlsafe_b64decode(text.encode())
    except (binascii.Error, ValueError):
        raise _Page(400, "bad cursor") from None


class Dashboard:
    """The ``/ui`` pages of one `ServerApp` (library-internal)."""

    def __init__(
        self,
        queue: taquba.Queue,
        tokens: Sequence[Token],
        *,
        cron: Scheduler | None = None,
        jobs_result_prefix: str | None = None,
    ) -> None:
        self.queue = queue
        self.tokens = list(tokens)
        self.cron = cron
        self.signer = SessionSigner(tokens)
        # The webhooks page appears once the layer is installed and the store has endpoints.
        self.webhooks_installed = importlib.util.find_spec("taquba_webhooks") is not None
        self.webhooks_seen = False
        # The workflow pages (their own module) need taquba-workflow 0.9 or later.
        from ._dashboard_workflow import installed as workflow_installed

        self.workflow_installed = workflow_installed()
        self.samples: collections.deque[_Sample] = collections.deque(
            maxlen=int(HISTORY / SAMPLE_INTERVAL) + 1
        )
        loader = jinja2.PackageLoader("taquba_server", "ui/templates")
        self.env = jinja2.Environment(
            loader=loader, autoescape=True, undefined=jinja2.StrictUndefined
        )
        self.env.filters["when"] = when  # pyright: ignore[reportArgumentType]
        self.results = JobResultsPages(queue, self._render, result_prefix=jobs_result_prefix)

    # ------------------------------------------------------------------ routes

    def routes(self) -> list[Route]:
        """The dashboard's routes, under ``/ui``."""
        from ._dashboard_workflow import workflow_routes

        p = PREFIX
        get, post = ["GET"], ["POST"]
        return [
            Route(p, self._redirect_home, methods=get),
            Route(p + "/", self._view(self._overview), methods=get),
            Route(p + "/static/{name}", self._static, methods=get),
            Route(p + "/login", self._login_form, methods=get),
            Route(p + "/login", self._login, methods=post),
            Route(p + "/logout", self._logout, methods=post),
            Route(p + "/queue", self._view(self._jobs), methods=get),
            Route(p + "/dead", self._view(self._dead), methods=get),
            Route(p + "/jobs/{id}", self._view(self._job), methods=get),
            Route(p + "/actions/requeue", self._action(self._requeue), methods=post),
            Route(p + "/actions/requeue-all", self._action(self._requeue_all), methods=post),
            Route(p + "/actions/purge", self._action(self._purge), methods=post),
            Route(p + "/actions/cancel", self._action(self._cancel), methods=post),
            Route(p + "/cron", self._view(self._cron_page), methods=get),
            Route(p + "/actions/pause", self._action(self._pause), methods=post),
            Route(p + "/actions/resume", self._action(self._resume), methods=post),
            Route(p + "/webhooks", self._view(self._webhooks_page), methods=get),
            Route(p + "/actions/disable-endpoint", self._action(self._disable), methods=post),
            Route(p + "/actions/enable-endpoint", self._action(self._enable), methods=post),
            *workflow_routes(self),
            Route(p + "/results", self._view(self.results.list_page), methods=get),
            Route(p + "/results/{id}", self._view(self.results.result_page), methods=get),
        ]

    # ------------------------------------------------------------------ samples

    def _now(self) -> float:
        """Now on the queue's clock (the one its job timestamps come from), in seconds."""
        return self.queue.clock.now_ms() / 1000

    async def sample(self) -> None:
        """Record the statistics of every queue now (the charts' data)."""
        names = await self.queue.list_queues()
        stats = {name: await self.queue.stats(name) for name in names}
        self.samples.append(_Sample(self._now(), stats))
        if self.webhooks_installed and not self.webhooks_seen:
            self.webhooks_seen = bool(await self._endpoint_stats())

    async def run_sampler(self) -> None:
        """Sample every `SAMPLE_INTERVAL` seconds until cancelled; a taquba error skips one."""
        while True:
            try:
                await self.sample()
            except taquba.TaqubaError as exc:
                log.warning("dashboard sample skipped: %s: %s", type(exc).__name__, exc)
            await trio.sleep(SAMPLE_INTERVAL)

    # ------------------------------------------------------------------ plumbing

    def _render(
        self, request: Request, template: str, status: int = 200, **context: Any
    ) -> Response:
        session: Session | None = context.pop("session", None)
        html = self.env.get_template(template).render(
            ui=PREFIX,
            session=session,
            csrf="" if session is None else self.signer.csrf_token(session),
            cron=self.cron is not None,
            webhooks=self.webhooks_seen,
            workflow=self.workflow_installed,
            job_results=self.results.installed,
            message=request.query_params.get("msg"),
            queue_label=self.queue.name,
            **context,
        )
        return HTMLResponse(html, status, headers=self._headers())

    @staticmethod
    def _headers() -> dict[str, str]:
        return {
            "Content-Security-Policy": _CSP,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
            "Cache-Control": "no-store",
        }

    def _set_cookie(self, request: Request, response: Response, value: str) -> None:
        response.set_cookie(
            COOKIE_NAME,
            value,
            max_age=12 * 3600,
            path=PREFIX,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )

    def _session(self, request: Request) -> Session | None:
        return self.signer.verify(request.cookies.get(COOKIE_NAME))

    def _error(self, request: Request, session: Session | None, page: _Page) -> Response:
        return self._render(request, "error.html", page.status, session=session, error=page.message)

    def _guarded(self, request: Request, session: Session | None, exc: Exception) -> Response:
        if isinstance(exc, _Page):
            return self._error(request, session, exc)
        if isinstance(exc, taquba.JobNotFound):
            return self._error(request, session, _Page(404, str(exc)))
        if isinstance(exc, taquba.InvalidState):
            return self._error(request, session, _Page(409, str(exc)))
        if isinstance(exc, taquba.UsageError):
            return self._error(request, session, _Page(400, str(exc)))
        if isinstance(exc, taquba.StorageError):
            return self._error(request, session, _Page(503, f"{type(exc).__name__}: {exc}"))
        if isinstance(exc, taquba.TaqubaError):  # e.g. DataError: an undecodable record
            log.error("dashboard page failed", exc_info=exc)
            return self._error(request, session, _Page(500, f"{type(exc).__name__}: {exc}"))
        raise exc

    def _view(
        self, page: Callable[[Request, Session], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            session = self._session(request)
            if session is None:
                if self.signer.open:
                    session = self.signer.verify(value := self.signer.issue(None))
                    assert session is not None
                    response = await self._call(page, request, session)
                    self._set_cookie(request, response, value)
                    return response
                target = urllib.parse.quote(request.url.path)
                return RedirectResponse(f"{PREFIX}/login?next={target}", 303)
            return await self._call(page, request, session)

        return endpoint

    async def _call(
        self,
        page: Callable[[Request, Session], Awaitable[Response]],
        request: Request,
        session: Session,
    ) -> Response:
        try:
            return await page(request, session)
        except Exception as exc:
            return self._guarded(request, session, exc)

    def _action(
        self,
        act: Callable[[Session, dict[str, str]], Awaitable[str]],
        *,
        admin: bool = True,
        confirm: bool = True,
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            session = self._session(request)
            if session is None:
                return self._error(request, None, _Page(401, "log in first"))
            try:
                fields = await _form(request)
            except _Page as exc:
                return self._error(request, session, exc)
            if not self.signer.check_csrf(session, fields.get("csrf")):
                return self._error(request, session, _Page(403, "missing or wrong CSRF token"))
            if admin and not session.admin:
                return self._error(
                    request, session, _Page(403, "this action needs the admin scope")
                )
            back = fields.get("back", "")
            if not back.startswith(PREFIX + "/") or "//" in back or "\\" in back:
                back = PREFIX + "/"
            if confirm and fields.get("confirm") != "yes":
                shown = {k: v for k, v in fields.items() if k not in ("csrf", "confirm", "back")}
                return self._render(
                    request,
                    "confirm.html",
                    session=session,
                    action=request.url.path,
                    fields=shown,
                    back=back,
                    title=(act.__doc__ or "Confirm.").rstrip("."),
                )
            try:
                message = await act(session, fields)
            except Exception as exc:
                return self._guarded(request, session, exc)
            separator = "&" if "?" in back else "?"
            return RedirectResponse(f"{back}{separator}msg={urllib.parse.quote(message)}", 303)

        return endpoint

    # ------------------------------------------------------------------ login

    async def _redirect_home(self, request: Request) -> Response:
        return RedirectResponse(PREFIX + "/", 307)

    async def _static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in _STATIC:
            return Response("not found", 404)
        data = resources.files("taquba_server").joinpath("ui", "static", name).read_bytes()
        return Response(
            data,
            media_type=_STATIC[name],
            headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
        )

    def _next(self, request: Request, value: str | None) -> str:
        target = value or PREFIX + "/"
        if not target.startswith(PREFIX + "/") or "//" in target or "\\" in target:
            return PREFIX + "/"
        return target

    async def _login_form(self, request: Request) -> Response:
        return self._render(
            request,
            "login.html",
            next=self._next(request, request.query_params.get("next")),
            error=None,
        )

    async def _login(self, request: Request) -> Response:
        try:
            form = await _form(request)
        except _Page as exc:
            return self._error(request, None, exc)
        secret = form.get("token", "").strip()
        target = self._next(request, form.get("next"))
        if self.signer.open:
            token = None
        else:
            token = find_token(self.tokens, secret) if secret else None
            if token is None:
                log.warning("dashboard login refused from %s", _client(request))
                return self._render(request, "login.html", 401, next=target, error="unknown token")
            if not token.allows("produce"):
                # A `metrics` token grants the scrape endpoint and nothing else: job payloads
                # are not for a monitoring system's credentials.
                log.warning("dashboard login refused to %s (metrics scope only)", token.name)
                return self._render(
                    request, "login.html", 403, next=target, error="this token may not read queues"
                )
        response = RedirectResponse(target, 303)
        self._set_cookie(request, response, self.signer.issue(token))
        audit.info(
            "ui login: %s from %s", "anonymous" if token is None else token.name, _client(request)
        )
        return response

    async def _logout(self, request: Request) -> Response:
        session = self._session(request)
        try:
            form = await _form(request)
        except _Page as exc:
            return self._error(request, session, exc)
        if session is None or not self.signer.check_csrf(session, form.get("csrf")):
            return self._error(request, session, _Page(403, "missing or wrong CSRF token"))
        audit.info("ui logout: %s", session.who)
        response = RedirectResponse(PREFIX + "/login", 303)
        response.delete_cookie(COOKIE_NAME, path=PREFIX)
        return response

    # ------------------------------------------------------------------ views

    def _rates(self, name: str) -> dict[str, Any]:
        """Per-minute rates over the last minute or more, and the charts of the last hour."""
        now = self._now()
        samples = [s for s in self.samples if name in s.stats and s.at >= now - HISTORY]
        # The charts span the samples there are, up to the last hour.
        start = max(now - HISTORY, samples[0].at if samples else now)
        depth = [(s.at, float(s.stats[name].pending + s.stats[name].claimed)) for s in samples]
        done: list[tuple[float, float]] = []
        for before, after in itertools.pairwise(samples):
            if after.at - before.at < 1.0:
                continue  # two samples at once (a page and the sampler): no meaningful rate
            minutes = (after.at - before.at) / 60
            delta = max(0, after.stats[name].done - before.stats[name].done)
            done.append((after.at, delta / minutes))
        rates: dict[str, Any] = {"done": None, "dead": None, "enqueued": None}
        if samples:
            # Over the last minute or so: the newest sample against the newest one at least
            # RATE_WINDOW older (or the oldest there is).
            b = samples[-1]
            older = [s for s in samples if s.at <= b.at - RATE_WINDOW]
            a = older[-1] if older else samples[0]
            if b.at - a.at >= 1.0:
                minutes = (b.at - a.at) / 60
                sa, sb = a.stats[name], b.stats[name]

                def total(s: taquba.QueueStats) -> int:
                    return s.pending + s.scheduled + s.claimed + s.done + s.dead

                rates = {
                    "done": max(0, sb.done - sa.done) / minutes,
                    "dead": max(0, sb.dead - sa.dead) / minutes,
                    "enqueued": max(0, total(sb) - total(sa)) / minutes,
                }
        return {
            **rates,
            "depth_chart": spark(depth, start, now),
            "done_chart": spark(done, start, now),
        }

    async def _overview(self, request: Request, session: Session) -> Response:
        latest = self.samples[-1].at if self.samples else 0.0
        if self._now() - latest >= SAMPLE_INTERVAL:
            await self.sample()
        now = self._now()
        rows: list[dict[str, Any]] = []
        for name in await self.queue.list_queues():
            stats = await self.queue.stats(name)
            page = await self.queue.list_jobs(
                name, taquba.JobStatus.PENDING, limit=100, payloads=False
            )
            oldest = min((j.enqueued_at for j in page.jobs), default=None)
            rows.append(
                {"name": name, "stats": stats, "oldest": age(oldest, now), **self._rates(name)}
            )
        template = "overview_body.html" if request.headers.get("hx-request") else "overview.html"
        if request.headers.get("hx-boosted"):
            template = "overview.html"
        return self._render(
            request,
            template,
            session=session,
            rows=rows,
            samples=len(self.samples),
            interval=SAMPLE_INTERVAL,
        )

    async def _jobs(self, request: Request, session: Session) -> Response:
        name = request.query_params.get("name", "")
        taquba.validate_queue_name(name)
        status = request.query_params.get("status", "pending")
        if status not in _STATUSES:
            raise _Page(400, f"unknown status {status!r}")
        cursor = _cursor_in(request.query_params.get("cursor"))
        page = await self.queue.list_jobs(
            name, taquba.JobStatus(status), cursor=cursor, limit=PAGE_SIZE, payloads=False
        )
        now = self._now()
        return self._render(
            request,
            "jobs.html",
            session=session,
            name=name,
            current=status,
            statuses=_STATUSES,
            stats=await self.queue.stats(name),
            jobs=[{"job": j, "age": age(j.enqueued_at, now)} for j in page.jobs],
            next_cursor=_cursor_out(page.next_cursor),
            here=_here(request),
        )

    async def _dead(self, request: Request, session: Session) -> Response:
        name = request.query_params.get("name", "")
        taquba.validate_queue_name(name)
        cursor = _cursor_in(request.query_params.get("cursor"))
        page = await self.queue.list_jobs(
            name, taquba.JobStatus.DEAD, cursor=cursor, limit=PAGE_SIZE, payloads=False
        )
        return self._render(
            request,
            "dead.html",
            session=session,
            name=name,
            jobs=page.jobs,
            stats=await self.queue.stats(name),
            next_cursor=_cursor_out(page.next_cursor),
            here=_here(request),
        )

    async def _job(self, request: Request, session: Session) -> Response:
        job_id = request.path_params["id"]
        taquba.validate_job_id(job_id)
        job = await self.queue.get_job(job_id)
        if job is None:
            raise _Page(404, f"no job {job_id!r}")
        view = request.query_params.get("view", "auto")
        if view not in ("auto", "text", "json", "hex"):
            raise _Page(400, f"unknown view {view!r}")
        shown, text, truncated = preview(job.payload, view)
        history = await self.queue.get_job_history(job_id) or []
        return self._render(
            request,
            "job.html",
            session=session,
            job=job,
            history=history,
            view=shown,
            payload=text,
            truncated=truncated,
            size=len(job.payload),
            cap=PAYLOAD_PREVIEW,
            cancellable=job.status
            in (taquba.JobStatus.PENDING, taquba.JobStatus.SCHEDULED, taquba.JobStatus.CLAIMED),
            here=str(request.url.path),
        )

    async def _cron_page(self, request: Request, session: Session) -> Response:
        if self.cron is None:
            raise _Page(404, "no cron scheduler is configured on this server")
        rows: list[dict[str, Any]] = []
        for name, schedule in sorted(self.cron.schedules.items()):
            status = await self.cron.status(name)
            upcoming = self.cron.next_fire_times(name, 3)
            rows.append(
                {
                    "schedule": schedule,
                    "status": status,
                    "next": [zoned(t, schedule.zone) for t in upcoming],
                    "last": None
                    if status.last_fire is None
                    else zoned(status.last_fire, schedule.zone),
                }
            )
        return self._render(request, "cron.html", session=session, rows=rows, here=f"{PREFIX}/cron")

    async def _endpoint_stats(self) -> list[EndpointStats]:
        import taquba_webhooks

        return await taquba_webhooks.list_endpoint_stats(self.queue)

    async def _webhooks_page(self, request: Request, session: Session) -> Response:
        if not self.webhooks_installed:
            raise _Page(404, "taquba-webhooks is not installed")
        endpoints = await self._endpoint_stats()
        self.webhooks_seen = self.webhooks_seen or bool(endpoints)
        rows = [
            {
                "stats": stats,
                "rate": None if not stats.attempts else stats.delivered / stats.attempts,
            }
            for stats in endpoints
        ]
        return self._render(
            request, "webhooks.html", session=session, rows=rows, here=f"{PREFIX}/webhooks"
        )

    # ------------------------------------------------------------------ actions

    async def _requeue(self, session: Session, fields: dict[str, str]) -> str:
        """Requeue this dead job."""
        job_id = fields.get("job_id", "")
        taquba.validate_job_id(job_id)
        job = await self.queue.get_job(job_id)
        if job is None:
            raise _Page(404, f"no job {job_id!r}")
        await self.queue.requeue_dead_job(job)
        audit.info("ui requeue: %s requeued dead job %s of %s", session.who, job_id, job.queue_name)
        return f"requeued {job_id}"

    async def _requeue_all(self, session: Session, fields: dict[str, str]) -> str:
        """Requeue every dead job of this queue."""
        name = fields.get("queue_name", "")
        taquba.validate_queue_name(name)
        count = 0
        while True:
            page = await self.queue.list_jobs(name, taquba.JobStatus.DEAD, payloads=False)
            if not page.jobs:
                break
            for job in page.jobs:
                try:
                    await self.queue.requeue_dead_job(job)
                except (taquba.JobNotFound, taquba.InvalidState):
                    continue  # requeued or swept meanwhile
                count += 1
        audit.info("ui requeue-all: %s requeued %d dead job(s) of %s", session.who, count, name)
        return f"requeued {count} dead job(s) of {name}"

    async def _purge(self, session: Session, fields: dict[str, str]) -> str:
        """Delete every job of this queue in this status."""
        name = fields.get("queue_name", "")
        taquba.validate_queue_name(name)
        status = fields.get("status", "")
        if status not in ("dead", "done"):
            raise _Page(400, "purge takes status dead or done")
        removed = await self.queue.purge(name, taquba.JobStatus(status))
        audit.info("ui purge: %s purged %d %s job(s) of %s", session.who, removed, status, name)
        return f"purged {removed} {status} job(s) of {name}"

    async def _cancel(self, session: Session, fields: dict[str, str]) -> str:
        """Cancel this job."""
        job_id = fields.get("job_id", "")
        taquba.validate_job_id(job_id)
        outcome = await self.queue.cancel(job_id)
        audit.info("ui cancel: %s cancelled job %s: %s", session.who, job_id, outcome.value)
        return f"cancel {job_id}: {outcome.value}"

    def _schedule(self, fields: dict[str, str]) -> str:
        if self.cron is None:
            raise _Page(404, "no cron scheduler is configured on this server")
        name = fields.get("schedule", "")
        if name not in self.cron.schedules:
            raise _Page(404, f"no schedule {name!r}")
        return name

    async def _pause(self, session: Session, fields: dict[str, str]) -> str:
        """Pause this cron schedule."""
        name = self._schedule(fields)
        assert self.cron is not None
        await self.cron.pause(name)
        audit.info("ui pause: %s paused cron schedule %s", session.who, name)
        return f"paused {name}"

    def _endpoint(self, fields: dict[str, str]) -> str:
        if not self.webhooks_installed:
            raise _Page(404, "taquba-webhooks is not installed")
        import taquba_webhooks

        endpoint = fields.get("endpoint", "")
        try:
            canonical = taquba_webhooks.endpoint_of(endpoint)
        except taquba_webhooks.InvalidDelivery:
            canonical = None
        if canonical != endpoint:
            raise _Page(400, f"not a webhook endpoint (scheme://host[:port]): {endpoint!r}")
        return endpoint

    async def _disable(self, session: Session, fields: dict[str, str]) -> str:
        """Disable this webhook endpoint."""
        import taquba_webhooks

        endpoint = self._endpoint(fields)
        reason = f"disabled by {session.who} from the dashboard"
        await taquba_webhooks.disable_endpoint(self.queue, endpoint, reason)
        audit.info("ui disable-endpoint: %s disabled webhook endpoint %s", session.who, endpoint)
        return f"disabled {endpoint}"

    async def _enable(self, session: Session, fields: dict[str, str]) -> str:
        """Enable this webhook endpoint again."""
        import taquba_webhooks

        endpoint = self._endpoint(fields)
        await taquba_webhooks.enable_endpoint(self.queue, endpoint)
        audit.info("ui enable-endpoint: %s enabled webhook endpoint %s", session.who, endpoint)
        return f"enabled {endpoint}"

    async def _resume(self, session: Session, fields: dict[str, str]) -> str:
        """Resume this cron schedule."""
        name = self._schedule(fields)
        assert self.cron is not None
        await self.cron.resume(name)
        audit.info("ui resume: %s resumed cron schedule %s", session.who, name)
        return f"resumed {name}"


async def _form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (the dashboard's only form kind).

    A form a browser posts from another site (``Sec-Fetch-Site: cross-site``) is refused
    outright: besides the CSRF token of the actions, this covers the login form.
    """
    if request.headers.get("sec-fetch-site") == "cross-site":
        raise _Page(403, "cross-site form refused")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            raise _Page(413, "form too large")
    try:
        pairs = urllib.parse.parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=64)
    except (UnicodeDecodeError, ValueError):
        raise _Page(400, "malformed form") from None
    return dict(pairs)


def _here(request: Request) -> str:
    """This page's path and query (where an action returns to)."""
    query = request.url.query
    return request.url.path + ("?" + query if query else "")


def _client(request: Request) -> str:
    client = request.client
    return "?" if client is None else f"{client.host}:{client.port}"
