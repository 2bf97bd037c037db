"""The ASGI application: wire protocol v1 over an open `taquba.Queue`.

Every endpoint is one `_Endpoint` (method, path, scope, body and parameter schemas, response
schema, handler). The same list routes requests, validates them, and writes the OpenAPI
document, so the document cannot drift from what the server does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hmac
import logging
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import trio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Route

import taquba

from . import _wire as w
from ._auth import Scope, Token, find_token
from ._codec import JSON, MSGPACK, Encoding, decode_body, encode_body, media_type_of
from ._codec import response_encoding as pick_encoding
from ._dashboard import Dashboard
from ._metrics import Metrics
from ._schema import BadRequest, Bool, Bytes, Enum, Int, List, Nullable, Num, Obj, Schema, Str

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from starlette.requests import Request
    from starlette.types import ASGIApp, Receive, Send
    from starlette.types import Scope as AsgiScope

    from taquba_cron import Scheduler

__all__ = ["DEFAULT_MAX_BODY_SIZE", "ServerApp", "create_app"]

log = logging.getLogger("taquba_server")

DEFAULT_MAX_BODY_SIZE = 16 * 1024 * 1024
"""The default limit of a request body, in bytes (16 MiB)."""
_RETRY_AFTER = "1"
_SWEEP_INTERVAL = 1.0
_DRAIN_SLACK = 1024 * 1024


class _HttpError(Exception):
    """An error answer of the API."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field_path: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field_path = field_path
        self.headers = headers or {}


def _unavailable(message: str) -> _HttpError:
    return _HttpError(503, "unavailable", message, headers={"Retry-After": _RETRY_AFTER})


def _http_error(exc: Exception) -> _HttpError:
    """Map an error raised while serving a request to its answer (the status/code table)."""
    if isinstance(exc, _HttpError):
        return exc
    if isinstance(exc, BadRequest):
        return _HttpError(400, "invalid_request", exc.message, exc.field_path)
    if isinstance(exc, taquba.ClaimLost):
        return _HttpError(410, "claim_lost", str(exc))
    if isinstance(exc, taquba.DuplicateJobId):
        return _HttpError(409, "duplicate_job_id", str(exc))
    if isinstance(exc, taquba.KvConflict):
        return _HttpError(409, "kv_conflict", str(exc))
    if isinstance(exc, taquba.JobNotFound):
        return _HttpError(404, "job_not_found", str(exc))
    if isinstance(exc, taquba.InvalidState):
        return _HttpError(409, "invalid_state", str(exc))
    if isinstance(exc, taquba.InvalidQueueName):
        return _HttpError(400, "invalid_queue_name", str(exc))
    if isinstance(exc, taquba.InvalidId):
        return _HttpError(400, "invalid_id", str(exc))
    if isinstance(exc, taquba.InvalidArgument):
        return _HttpError(400, "invalid_argument", str(exc), exc.argument)
    if isinstance(exc, taquba.UsageError):
        return _HttpError(400, "invalid_argument", str(exc))
    if isinstance(exc, taquba.StorageError):
        return _unavailable(f"{type(exc).__name__}: {exc}")
    log.error("internal error serving a request", exc_info=exc)
    return _HttpError(500, "internal_error", f"internal error: {type(exc).__name__}")


@dataclass(frozen=True)
class _Param:
    name: str
    schema: Schema
    where: str = "query"  # "path" or "query"
    required: bool = False
    default: Any = None


@dataclass
class _Call:
    """What a handler gets."""

    request: Request
    params: dict[str, Any]
    body: dict[str, Any]


@dataclass
class _Endpoint:
    method: str
    path: str
    operation_id: str
    summary: str
    scope: Scope | None
    response: Schema
    handler: Callable[[_Call], Awaitable[dict[str, Any]]]
    body: Obj | None = None
    params: list[_Param] = field(default_factory=list[_Param])
    errors: tuple[int, ...] = ()


@dataclass
class _Held:
    """A claim the server handed out, with its wire token."""

    claim: taquba.Claim
    token: str


_Q = _Param("q", w.QUEUE_NAME, where="path", required=True)
_ID = _Param("id", w.JOB_ID, where="path", required=True)
_CLAIM_ID = _Param("job_id", w.JOB_ID, where="path", required=True)
_INT_RE = re.compile(r"^-?[0-9]{1,20}$")


def _query_value(param: _Param, raw: str) -> Any:
    schema = param.schema
    if isinstance(schema, Int):
        if not _INT_RE.match(raw):
            raise BadRequest(param.name, f"{param.name} must be an integer")
        return schema.check(int(raw), param.name, binary=False)
    if isinstance(schema, Num):
        try:
            number = float(raw)
        except ValueError:
            raise BadRequest(param.name, f"{param.name} must be a number") from None
        return schema.check(number, param.name, binary=False)
    return schema.check(raw, param.name, binary=False)


class ServerApp:
    """The ASGI application of `create_app` (an ASGI callable).

    Besides serving requests it keeps the claims it handed out, keyed by job id, so a later
    renew, ack, nack or dead-letter settles the same in-process `taquba.Claim`.
    """

    def __init__(
        self,
        queue: taquba.Queue,
        *,
        tokens: Sequence[Token] | None = None,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        dashboard: bool = True,
        cron: Scheduler | None = None,
        jobs_result_prefix: str | None = None,
    ) -> None:
        """Library-internal: use `create_app`."""
        if not isinstance(queue, taquba.Queue):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise taquba.UsageError(f"queue must be a taquba.Queue, not {type(queue).__name__}")
        if isinstance(max_body_size, bool) or not isinstance(max_body_size, int):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise taquba.UsageError("max_body_size must be an int")
        if max_body_size < 1024:
            raise taquba.UsageError(f"max_body_size must be at least 1024, not {max_body_size}")
        if jobs_result_prefix is not None and (
            not isinstance(jobs_result_prefix, str)  # pyright: ignore[reportUnnecessaryIsInstance]
            or not jobs_result_prefix.strip("/")
        ):
            raise taquba.UsageError(
                f"jobs_result_prefix must be a non-empty blob path, not {jobs_result_prefix!r}"
            )
        token_list = list(tokens or ())
        for token in token_list:
            if not isinstance(token, Token):  # pyright: ignore[reportUnnecessaryIsInstance]
                raise taquba.UsageError(f"tokens must be taquba_server.Token, not {token!r}")
        self.queue = queue
        self.tokens: list[Token] = token_list
        self.max_body_size = max_body_size
        self.instance_id = secrets.token_hex(8)
        self.closing = False
        self._held: dict[str, _Held] = {}
        self._polls: set[trio.CancelScope] = set()
        self._last_sweep = 0.0
        self.endpoints = self._endpoints()
        self._openapi: dict[str, Any] | None = None
        self._metrics = Metrics(queue)
        routes = [
            Route(ep.path, self._route(ep), methods=[ep.method], name=ep.operation_id)
            for ep in self.endpoints
        ]
        routes.append(Route("/metrics", self._serve_metrics, methods=["GET"], name="metrics"))
        self.dashboard: Dashboard | None = None
        if dashboard:
            self.dashboard = Dashboard(
                queue, token_list, cron=cron, jobs_result_prefix=jobs_result_prefix
            )
            routes.extend(self.dashboard.routes())
        elif cron is not None:
            raise taquba.UsageError("cron is shown by the dashboard: give dashboard=True")
        self._starlette = Starlette(
            routes=routes,
            exception_handlers={HTTPException: self._starlette_error},  # pyright: ignore[reportArgumentType]
        )

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection scope."""
        await self._starlette(scope, receive, send)

    # ------------------------------------------------------------------ lifecycle

    def begin_shutdown(self) -> None:
        """Refuse new requests (503) and end the long polls in flight with their empty answer."""
        self.closing = True
        for scope in list(self._polls):
            scope.cancel()

    @property
    def held_claims(self) -> int:
        """How many claims the server holds now."""
        return len(self._held)

    # ------------------------------------------------------------------ plumbing

    def _route(self, ep: _Endpoint) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await self._dispatch(ep, request)

        return endpoint

    async def _starlette_error(self, request: Request, exc: HTTPException) -> Response:
        code = "not_found" if exc.status_code == 404 else "method_not_allowed"
        if exc.status_code not in (404, 405):
            code = "invalid_request"
        error = _HttpError(exc.status_code, code, str(exc.detail))
        encoding = pick_encoding(request.headers.get("accept"), "json")
        return self._error_response(error, encoding)

    def _error_response(self, error: _HttpError, encoding: Encoding) -> Response:
        body = {"error": {"code": error.code, "message": error.message, "field": error.field_path}}
        return self._response(body, encoding, error.status, error.headers)

    @staticmethod
    def _response(
        body: object, encoding: Encoding, status: int = 200, headers: dict[str, str] | None = None
    ) -> Response:
        media = JSON if encoding == "json" else MSGPACK
        return Response(encode_body(body, encoding), status, headers=headers, media_type=media)

    async def _serve_metrics(self, request: Request) -> Response:
        """``GET /metrics``: Prometheus text; a ``metrics`` or ``admin`` token (if any)."""
        try:
            self._check_token("metrics", request)
        except _HttpError as error:
            return self._error_response(error, "json")
        return await self._metrics.response()

    def _authorize(self, ep: _Endpoint, request: Request) -> None:
        if ep.scope is not None:
            self._check_token(ep.scope, request)

    def _check_token(self, scope: Scope, request: Request) -> None:
        if not self.tokens:
            return
        header = request.headers.get("authorization", "")
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise _HttpError(
                401,
                "unauthorized",
                "a bearer token is required",
                None,
                {"WWW-Authenticate": "Bearer"},
            )
        token = find_token(self.tokens, secret.strip())
        if token is None:
            raise _HttpError(
                401,
                "unauthorized",
                "unknown bearer token",
                None,
                {"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        if not token.allows(scope):
            raise _HttpError(403, "forbidden", f"this endpoint needs the {scope!r} scope")

    async def _read_body(self, request: Request) -> bytes:
        limit = self.max_body_size
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise _HttpError(413, "payload_too_large", f"the body is over {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        # Past the limit the rest is read and dropped (up to a bound), so the client, still
        # sending, gets the 413 rather than a reset connection.
        drain_limit = 2 * limit + _DRAIN_SLACK
        async with contextlib.aclosing(request.stream()) as stream:
            async for chunk in stream:
                size += len(chunk)
                if size > drain_limit:
                    break
                if size <= limit:
                    chunks.append(chunk)
        if size > limit:
            raise _HttpError(413, "payload_too_large", f"the body is over {limit} bytes")
        return b"".join(chunks)

    def _params(self, ep: _Endpoint, request: Request) -> dict[str, Any]:
        values: dict[str, Any] = {}
        known = {p.name for p in ep.params if p.where == "query"}
        for name in request.query_params:
            if name not in known:
                raise BadRequest(name, f"unknown query parameter {name}")
            if len(request.query_params.getlist(name)) > 1:
                raise BadRequest(name, f"query parameter {name} given more than once")
        for param in ep.params:
            if param.where == "path":
                raw = cast("str", request.path_params[param.name])
                values[param.name] = param.schema.check(raw, param.name, binary=False)
            elif param.name in request.query_params:
                values[param.name] = _query_value(param, request.query_params[param.name])
            elif param.required:
                raise BadRequest(param.name, f"missing query parameter {param.name}")
            else:
                values[param.name] = param.default
        return values

    async def _dispatch(self, ep: _Endpoint, request: Request) -> Response:
        encoding: Encoding = "json"
        try:
            encoding = pick_encoding(request.headers.get("accept"), "json")
            if self.closing and ep.scope is not None:
                raise _unavailable("the server is shutting down")
            self._authorize(ep, request)
            params = self._params(ep, request)
            body: dict[str, Any] = {}
            if ep.method == "POST":
                raw = await self._read_body(request)
                request_encoding = media_type_of(request.headers.get("content-type"))
                if raw and request_encoding is None:
                    raise _HttpError(
                        415,
                        "unsupported_media_type",
                        "send application/json or application/msgpack",
                    )
                if request_encoding is not None:
                    encoding = pick_encoding(request.headers.get("accept"), request_encoding)
                schema = ep.body or w.EMPTY_BODY
                decoded: object = decode_body(raw, request_encoding or "json") if raw else {}
                body = schema.check(decoded, "", binary=request_encoding == "msgpack")
            result = await ep.handler(_Call(request, params, body))
            return self._response(result, encoding)
        except Exception as exc:
            return self._error_response(_http_error(exc), encoding)

    async def _until_done(
        self, request: Request, seconds: float, work: Callable[[], Awaitable[Any]]
    ) -> tuple[bool, Any]:
        """Run ``work`` for at most ``seconds``, ending early on disconnect or shutdown.

        Returns ``(True, result)`` if it finished, ``(False, None)`` if it was cut short.
        Errors of ``work`` leave as themselves.
        """
        if self.closing or seconds <= 0:
            return False, None
        outcome: list[Any] = []
        failure: list[Exception] = []
        with trio.move_on_after(seconds) as scope:
            self._polls.add(scope)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._watch_disconnect, request, scope)
                    try:
                        outcome.append(await work())
                    except Exception as exc:
                        failure.append(exc)
                    nursery.cancel_scope.cancel()
            finally:
                self._polls.discard(scope)
        if failure:
            raise failure[0]
        if outcome:
            return True, outcome[0]
        return False, None

    @staticmethod
    async def _watch_disconnect(request: Request, scope: trio.CancelScope) -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                scope.cancel()
                return

    # ------------------------------------------------------------------ claims held

    def _wire_token(self) -> str:
        return f"{self.instance_id}.{secrets.token_urlsafe(12)}"

    def _sweep(self) -> None:
        """Forget claims whose lease the queue no longer holds (reaped or settled elsewhere)."""
        now = time.monotonic()
        if now - self._last_sweep < _SWEEP_INTERVAL:
            return
        self._last_sweep = now
        for job_id, held in list(self._held.items()):
            if self.queue.lease_expiry(held.claim) is None:
                del self._held[job_id]

    def _lookup(self, job_id: str, token: str) -> _Held:
        held = self._held.get(job_id)
        if held is None or not hmac.compare_digest(held.token.encode(), token.encode()):
            raise taquba.ClaimLost(job_id, "the server holds no claim with this token")
        return held

    def _drop(self, job_id: str, held: _Held) -> None:
        if self._held.get(job_id) is held:
            del self._held[job_id]

    async def _settle(self, job_id: str, action: str, body: dict[str, Any]) -> dict[str, Any]:
        held = self._lookup(job_id, body["token"])
        queue = self.queue
        try:
            if action == "ack":
                results = await queue.ack_with(held.claim, w.effects_in(body.get("effects")))
                answer: dict[str, Any] = {"enqueued": [w.result_out(r) for r in results]}
            elif action == "nack":
                outcome = await queue.nack(
                    held.claim,
                    body["error"],
                    retry_after=body.get("retry_after"),
                    kv_writes=w.kv_writes_in(body.get("kv_writes")),
                    effects_if_dead=w.effects_in(body.get("effects_if_dead")),
                )
                answer = {
                    "dead": outcome.dead,
                    "enqueued": [w.result_out(r) for r in outcome.enqueued],
                }
            else:
                results = await queue.dead_letter(
                    held.claim, body["reason"], effects=w.effects_in(body.get("effects"))
                )
                answer = {"enqueued": [w.result_out(r) for r in results]}
        except taquba.ClaimLost:
            self._drop(job_id, held)
            raise
        self._drop(job_id, held)
        return answer

    # ------------------------------------------------------------------ handlers: producer

    async def _enqueue(self, call: _Call) -> dict[str, Any]:
        body = call.body
        request = w.enqueue_in(body)
        try:
            result = await self.queue.enqueue_batch(
                [request],
                kv_writes=w.kv_writes_in(body["kv_writes"]),
                kv_expect=w.kv_expect_in(body["kv_expect"]),
            )
        except taquba.DuplicateJobId:
            if await self._same_jobs([request]):
                assert request.job_id is not None
                return {"id": request.job_id, "created": False}
            raise
        return w.result_out(result[0])

    async def _same_jobs(self, requests: Sequence[taquba.EnqueueRequest]) -> bool:
        """Whether every request names an existing job with the same queue and payload."""
        for request in requests:
            if request.job_id is None:
                return False
            job = await self.queue.get_job(request.job_id)
            if job is None or job.queue_name != request.queue_name:
                return False
            if job.payload != request.payload:
                return False
        return True

    async def _enqueue_batch(self, call: _Call) -> dict[str, Any]:
        body = call.body
        requests = [w.enqueue_in(item) for item in body["jobs"]]
        try:
            results = await self.queue.enqueue_batch(
                requests,
                kv_writes=w.kv_writes_in(body["kv_writes"]),
                kv_expect=w.kv_expect_in(body["kv_expect"]),
            )
        except taquba.DuplicateJobId:
            if requests and await self._same_jobs(requests):
                return {"results": [{"id": r.job_id, "created": False} for r in requests]}
            raise
        return {"results": [w.result_out(r) for r in results]}

    async def _get_job(self, call: _Call) -> dict[str, Any]:
        job = await self.queue.get_job(call.params["id"])
        if job is None:
            raise _HttpError(404, "job_not_found", f"no job {call.params['id']!r}")
        return w.job_out(job)

    async def _job_history(self, call: _Call) -> dict[str, Any]:
        history = await self.queue.get_job_history(call.params["id"])
        if history is None:
            raise _HttpError(404, "job_not_found", f"no job {call.params['id']!r}")
        return {"history": [w.attempt_out(a) for a in history]}

    async def _cancel(self, call: _Call) -> dict[str, Any]:
        outcome = await self.queue.cancel(call.params["id"])
        return {"outcome": outcome.value}

    async def _wake(self, call: _Call) -> dict[str, Any]:
        outcome = await self.queue.wake_scheduled(call.params["id"], call.body["payload"])
        return {"outcome": outcome.value}

    async def _wait_job(self, call: _Call) -> dict[str, Any]:
        job_id: str = call.params["id"]
        queue = self.queue
        taquba.validate_job_id(job_id)

        async def wait() -> taquba.JobRecord | None:
            return await queue.wait_for_completion(job_id)

        try:
            finished, job = await self._until_done(call.request, call.params["timeout"], wait)
        except taquba.JobNotFound:
            return {"job": None, "finished": True}
        if not finished:
            job = await queue.get_job(job_id)
            if job is None:
                return {"job": None, "finished": True}
            finished = job.status in (taquba.JobStatus.DONE, taquba.JobStatus.DEAD)
        return {"job": None if job is None else w.job_out(job), "finished": finished}

    async def _queues(self, call: _Call) -> dict[str, Any]:
        return {"queues": await self.queue.list_queues()}

    async def _stats(self, call: _Call) -> dict[str, Any]:
        stats = await self.queue.stats(call.params["q"])
        return dataclasses.asdict(stats)

    async def _config(self, call: _Call) -> dict[str, Any]:
        queue = self.queue
        names = await queue.list_queues()
        return {
            # "" is never a queue name, so its configuration is the default one.
            "default": w.config_out(queue.config("")),
            "queues": {name: w.config_out(queue.config(name)) for name in names},
            "name": queue.name,
        }

    # ------------------------------------------------------------------ handlers: worker

    async def _claim(self, call: _Call) -> dict[str, Any]:
        queue_name: str = call.params["q"]
        taquba.validate_queue_name(queue_name)
        body = call.body
        queue = self.queue
        max_jobs: int = body["max_jobs"]
        lease: float | None = body["lease"]
        self._sweep()

        async def claim_once() -> list[taquba.Claim]:
            # Shielded: a claim is never cut in half by a disconnect or a shutdown.
            found: list[taquba.Claim] = []
            with trio.CancelScope(shield=True):
                found = await queue.claim_batch(queue_name, max_jobs, lease=lease)
            return found

        claims = await claim_once()
        if not claims and body["wait"] > 0:
            deadline = trio.current_time() + body["wait"]

            async def poll() -> list[taquba.Claim]:
                while True:
                    await queue.wait_for_jobs_on(queue_name)
                    found = await claim_once()
                    if found:
                        return found

            _, found = await self._until_done(call.request, deadline - trio.current_time(), poll)
            claims = cast("list[taquba.Claim]", found or [])
        answer: list[dict[str, Any]] = []
        for claim in claims:
            held = _Held(claim, self._wire_token())
            self._held[claim.id] = held
            expires = queue.lease_expiry(claim)
            answer.append(
                {
                    "job": w.job_out(claim.job),
                    "token": held.token,
                    "lease_expires_at": expires if expires is not None else 0,
                }
            )
        return {"claims": answer}

    async def _wait_queue(self, call: _Call) -> dict[str, Any]:
        queue_name: str = call.params["q"]
        taquba.validate_queue_name(queue_name)
        queue = self.queue

        async def wait() -> None:
            await queue.wait_for_jobs_on(queue_name)

        ready, _ = await self._until_done(call.request, call.body["timeout"], wait)
        return {"ready": ready}

    async def _renew(self, call: _Call) -> dict[str, Any]:
        results: list[dict[str, Any]] = []
        for item in call.body["claims"]:
            job_id: str = item["job_id"]
            entry: dict[str, Any] = {
                "job_id": job_id,
                "expires_at": None,
                "cancel_requested": False,
                "lost": True,
            }
            try:
                held = self._lookup(job_id, item["token"])
            except taquba.ClaimLost:
                results.append(entry)
                continue
            entry["cancel_requested"] = held.claim.cancel_requested
            try:
                entry["expires_at"] = self.queue.renew_lease(held.claim, item["extension"])
                entry["lost"] = False
            except taquba.ClaimLost:
                self._drop(job_id, held)
            results.append(entry)
        return {"results": results}

    async def _ack(self, call: _Call) -> dict[str, Any]:
        return await self._settle(call.params["job_id"], "ack", call.body)

    async def _nack(self, call: _Call) -> dict[str, Any]:
        return await self._settle(call.params["job_id"], "nack", call.body)

    async def _dead(self, call: _Call) -> dict[str, Any]:
        return await self._settle(call.params["job_id"], "dead", call.body)

    _ACTION_FIELDS: dict[str, frozenset[str]] = {  # noqa: RUF012 - a constant
        "ack": frozenset({"job_id", "action", "token", "effects"}),
        "nack": frozenset(
            {"job_id", "action", "token", "error", "retry_after", "kv_writes", "effects_if_dead"}
        ),
        "dead": frozenset({"job_id", "action", "token", "reason", "effects"}),
    }
    _ACTION_REQUIRED: dict[str, str | None] = {"ack": None, "nack": "error", "dead": "reason"}  # noqa: RUF012

    async def _settle_batch(self, call: _Call) -> dict[str, Any]:
        items: list[dict[str, Any]] = call.body["settlements"]
        for index, item in enumerate(items):
            action: str = item["action"]
            allowed = self._ACTION_FIELDS[action]
            for name, value in item.items():
                if value is not None and name not in allowed:
                    path = f"settlements[{index}].{name}"
                    raise BadRequest(path, f"{path} does not apply to a {action}")
            required = self._ACTION_REQUIRED[action]
            if required is not None and item[required] is None:
                path = f"settlements[{index}].{required}"
                raise BadRequest(path, f"missing field {path}")
        results: list[dict[str, Any]] = [{} for _ in items]

        async def settle_one(index: int, item: dict[str, Any]) -> None:
            entry: dict[str, Any] = {
                "job_id": item["job_id"],
                "ok": True,
                "error": None,
                "dead": None,
                "enqueued": None,
            }
            try:
                answer = await self._settle(item["job_id"], item["action"], item)
            except Exception as exc:
                error = _http_error(exc)
                entry["ok"] = False
                entry["error"] = {
                    "code": error.code,
                    "message": error.message,
                    "field": error.field_path,
                }
            else:
                entry["enqueued"] = answer["enqueued"]
                entry["dead"] = answer.get("dead")
            results[index] = entry

        async def settle_in_order(indices: list[int]) -> None:
            for index in indices:
                await settle_one(index, items[index])

        # Different jobs concurrently: each settlement is its own transaction, and those in
        # flight together share one WAL flush (group commit); one after another, a batch of N
        # would wait N flushes. Settlements of one job stay in request order, so the first
        # wins and a repeat is `claim_lost`, as in a sequence of calls.
        by_job: dict[str, list[int]] = {}
        for index, item in enumerate(items):
            by_job.setdefault(item["job_id"], []).append(index)
        async with trio.open_nursery() as nursery:
            for indices in by_job.values():
                nursery.start_soon(settle_in_order, indices)
        return {"results": results}

    # ------------------------------------------------------------------ handlers: KV, blobs

    async def _kv_get(self, call: _Call) -> dict[str, Any]:
        return {"value": await self.queue.kv_get(call.body["key"])}

    async def _kv_put(self, call: _Call) -> dict[str, Any]:
        await self.queue.kv_put(call.body["key"], call.body["value"])
        return {}

    async def _kv_delete(self, call: _Call) -> dict[str, Any]:
        await self.queue.kv_delete(call.body["key"])
        return {}

    async def _kv_cas(self, call: _Call) -> dict[str, Any]:
        body = call.body
        swapped = await self.queue.kv_compare_and_set(body["key"], body["expected"], body["new"])
        return {"swapped": swapped}

    async def _kv_scan(self, call: _Call) -> dict[str, Any]:
        body = call.body
        page = await self.queue.kv_scan(
            body["prefix"] or b"", cursor=body["cursor"], limit=body["limit"]
        )
        return {
            "entries": [{"key": k, "value": v} for k, v in page.entries],
            "next_cursor": page.next_cursor,
        }

    async def _blob_get(self, call: _Call) -> dict[str, Any]:
        return {"data": await self.queue.store.get_blob(call.body["path"])}

    async def _blob_put(self, call: _Call) -> dict[str, Any]:
        body = call.body
        written = await self.queue.store.put_blob(
            body["path"], body["data"], create_only=body["create_only"]
        )
        return {"written": written}

    async def _blob_delete(self, call: _Call) -> dict[str, Any]:
        return {"deleted": await self.queue.store.delete_blob(call.body["path"])}

    async def _blob_list(self, call: _Call) -> dict[str, Any]:
        body = call.body
        paths = await self.queue.store.list_blobs(
            body["directory"], start_after=body["start_after"], limit=body["limit"]
        )
        return {"paths": paths}

    # ------------------------------------------------------------------ handlers: admin

    async def _list_jobs(self, call: _Call) -> dict[str, Any]:
        p = call.params
        page = await self.queue.list_jobs(
            p["q"], taquba.JobStatus(p["status"]), cursor=p["cursor"], limit=p["limit"]
        )
        return {"jobs": [w.job_out(j) for j in page.jobs], "next_cursor": page.next_cursor}

    async def _dead_jobs(self, call: _Call) -> dict[str, Any]:
        p = call.params
        jobs = await self.queue.dead_jobs(p["q"], after=p["after"], limit=p["limit"])
        return {"jobs": [w.job_out(j) for j in jobs]}

    async def _requeue(self, call: _Call) -> dict[str, Any]:
        job = await self.queue.get_job(call.params["id"])
        if job is None:
            raise _HttpError(404, "job_not_found", f"no job {call.params['id']!r}")
        await self.queue.requeue_dead_job(job)
        return {}

    async def _purge(self, call: _Call) -> dict[str, Any]:
        queue_name: str = call.params["q"]
        taquba.validate_queue_name(queue_name)
        removed = await self.queue.purge(queue_name, taquba.JobStatus(call.body["status"]))
        return {"removed": removed}

    async def _quarantine(self, call: _Call) -> dict[str, Any]:
        records = await self.queue.quarantined(call.params["q"], limit=call.params["limit"])
        return {"records": [w.quarantined_out(r) for r in records]}

    # ------------------------------------------------------------------ handlers: open

    async def _health(self, call: _Call) -> dict[str, Any]:
        from . import __version__

        queue = self.queue
        healthy = queue.failure is None and queue.health().healthy
        info = queue.owner_info()
        return {
            "status": "ok" if healthy and not self.closing else "degraded",
            "name": queue.name,
            "version": __version__,
            "owner": {
                "instance_id": self.instance_id,
                "owner_id": info.owner_id,
                "url": info.address,
                "pid": info.pid,
                "hostname": info.hostname,
                "started_at": info.started_at,
                "heartbeat_at": info.heartbeat_at,
                "taquba_version": info.version,
            },
        }

    async def _openapi_doc(self, call: _Call) -> dict[str, Any]:
        if self._openapi is None:
            from ._openapi import openapi_document

            self._openapi = openapi_document(self.endpoints)
        return self._openapi

    # ------------------------------------------------------------------ the endpoint table

    def _endpoints(self) -> list[_Endpoint]:
        r = w.out
        enqueued = w.ENQUEUED
        limit = _Param("limit", Int(0, w.MAX_PAGE), default=100)
        return [
            # producer
            _Endpoint("POST", "/v1/jobs", "enqueue", "Enqueue a job", "produce",
                      w.ENQUEUE_RESULT, self._enqueue, w.ENQUEUE_BODY, errors=(409,)),
            _Endpoint("POST", "/v1/jobs/batch", "enqueue_batch", "Enqueue jobs atomically",
                      "produce", r(None, {"results": enqueued}), self._enqueue_batch,
                      w.ENQUEUE_BATCH_BODY, errors=(409,)),
            _Endpoint("GET", "/v1/jobs/{id}", "get_job", "A job's record", "produce",
                      w.JOB, self._get_job, params=[_ID], errors=(404,)),
            _Endpoint("GET", "/v1/jobs/{id}/history", "get_job_history",
                      "How each attempt of a job ended", "produce",
                      r(None, {"history": List(w.JOB_ATTEMPT)}), self._job_history,
                      params=[_ID], errors=(404,)),
            _Endpoint("POST", "/v1/jobs/{id}/cancel", "cancel_job", "Cancel a job", "produce",
                      r(None, {"outcome": Enum(("removed", "requested", "not_found"))}),
                      self._cancel, w.EMPTY_BODY, params=[_ID]),
            _Endpoint("POST", "/v1/jobs/{id}/wake", "wake_job",
                      "Make a scheduled job due now, with a payload", "produce",
                      r(None, {"outcome": w.WAKE_OUTCOME}), self._wake, w.WAKE_BODY,
                      params=[_ID]),
            _Endpoint("GET", "/v1/jobs/{id}/wait", "wait_job", "Wait for a job to finish",
                      "produce",
                      r(None, {"job": Nullable(w.JOB), "finished": Bool()}),
                      self._wait_job,
                      params=[_ID, _Param("timeout", Num(0, w.MAX_WAIT), default=30.0)]),
            _Endpoint("GET", "/v1/queues", "list_queues", "Every queue name", "produce",
                      r(None, {"queues": List(Str())}), self._queues),
            _Endpoint("GET", "/v1/queues/{q}/stats", "queue_stats", "A queue's counters",
                      "produce",
                      r("QueueStats", {"queue_name": Str(), **{
                          name: Int(0, 2**63 - 1) for name in (
                              "pending", "scheduled", "claimed", "done", "dead", "quarantined")
                      }}),
                      self._stats, params=[_Q]),
            _Endpoint("GET", "/v1/config", "config", "The queues' configuration", "produce",
                      r(None, {"default": w.QUEUE_CONFIG,
                               "queues": _ConfigMap(w.QUEUE_CONFIG), "name": Str()}),
                      self._config),
            # worker
            _Endpoint("POST", "/v1/queues/{q}/claim", "claim", "Claim jobs (long poll)", "work",
                      r(None, {"claims": List(w.CLAIM)}), self._claim, w.CLAIM_BODY,
                      params=[_Q]),
            _Endpoint("POST", "/v1/queues/{q}/wait", "wait_queue", "Wait for claimable jobs",
                      "work", r(None, {"ready": Bool()}), self._wait_queue, w.WAIT_BODY,
                      params=[_Q]),
            _Endpoint("POST", "/v1/claims/renew", "renew", "Renew leases", "work",
                      r(None, {"results": List(r("RenewResult", {
                          "job_id": Str(), "expires_at": Nullable(w.MS),
                          "cancel_requested": Bool(), "lost": Bool()}))}),
                      self._renew, w.RENEW_BODY),
            _Endpoint("POST", "/v1/claims/{job_id}/ack", "ack", "Acknowledge a claim", "work",
                      r(None, {"enqueued": enqueued}), self._ack, w.ACK_BODY,
                      params=[_CLAIM_ID], errors=(409, 410)),
            _Endpoint("POST", "/v1/claims/{job_id}/nack", "nack", "Fail an attempt", "work",
                      r(None, {"dead": Bool(), "enqueued": enqueued}), self._nack,
                      w.NACK_BODY, params=[_CLAIM_ID], errors=(409, 410)),
            _Endpoint("POST", "/v1/claims/{job_id}/dead", "dead_letter", "Dead-letter a claim",
                      "work", r(None, {"enqueued": enqueued}), self._dead, w.DEAD_BODY,
                      params=[_CLAIM_ID], errors=(409, 410)),
            _Endpoint("POST", "/v1/claims/settle", "settle", "Settle claims in a batch", "work",
                      r(None, {"results": List(w.SETTLE_RESULT)}), self._settle_batch,
                      w.SETTLE_BODY),
            # KV and blobs
            _Endpoint("POST", "/v1/kv/get", "kv_get", "Read a KV entry", "produce",
                      r(None, {"value": Nullable(Bytes())}), self._kv_get, w.KEY_BODY),
            _Endpoint("POST", "/v1/kv/put", "kv_put", "Write a KV entry", "produce",
                      r(None, {}), self._kv_put, w.PUT_BODY),
            _Endpoint("POST", "/v1/kv/delete", "kv_delete", "Delete a KV entry", "produce",
                      r(None, {}), self._kv_delete, w.KEY_BODY),
            _Endpoint("POST", "/v1/kv/cas", "kv_cas", "Compare and set a KV entry", "produce",
                      r(None, {"swapped": Bool()}), self._kv_cas, w.CAS_BODY),
            _Endpoint("POST", "/v1/kv/scan", "kv_scan", "Scan KV entries by prefix", "produce",
                      r(None, {"entries": List(w.KV_WRITE), "next_cursor": Nullable(Bytes())}),
                      self._kv_scan, w.SCAN_BODY),
            _Endpoint("POST", "/v1/blobs/get", "blob_get", "Read a blob", "produce",
                      r(None, {"data": Nullable(Bytes())}), self._blob_get, w.PATH_BODY),
            _Endpoint("POST", "/v1/blobs/put", "blob_put", "Write a blob", "produce",
                      r(None, {"written": Bool()}), self._blob_put, w.BLOB_PUT_BODY),
            _Endpoint("POST", "/v1/blobs/delete", "blob_delete", "Delete a blob", "produce",
                      r(None, {"deleted": Bool()}), self._blob_delete, w.PATH_BODY),
            _Endpoint("POST", "/v1/blobs/list", "blob_list", "List blobs", "produce",
                      r(None, {"paths": List(Str())}), self._blob_list, w.BLOB_LIST_BODY),
            # operators
            _Endpoint("GET", "/v1/queues/{q}/jobs", "list_jobs", "List jobs by status", "admin",
                      r(None, {"jobs": List(w.JOB), "next_cursor": Nullable(Bytes())}),
                      self._list_jobs,
                      params=[_Q,
                              _Param("status", Enum(tuple(s.value for s in taquba.JobStatus)),
                                     required=True),
                              _Param("cursor", Bytes()), limit]),
            _Endpoint("GET", "/v1/queues/{q}/dead", "dead_jobs", "List dead-lettered jobs",
                      "admin", r(None, {"jobs": List(w.JOB)}), self._dead_jobs,
                      params=[_Q, _Param("after", w.JOB_ID), limit]),
            _Endpoint("POST", "/v1/jobs/{id}/requeue", "requeue", "Requeue a dead job", "admin",
                      r(None, {}), self._requeue, w.EMPTY_BODY, params=[_ID],
                      errors=(404, 409)),
            _Endpoint("POST", "/v1/queues/{q}/purge", "purge", "Delete dead or done jobs",
                      "admin", r(None, {"removed": Int(0, 2**63 - 1)}), self._purge,
                      w.PURGE_BODY, params=[_Q], errors=(409,)),
            _Endpoint("GET", "/v1/queues/{q}/quarantine", "quarantine",
                      "Records set aside as undecodable", "admin",
                      r(None, {"records": List(w.QUARANTINED)}), self._quarantine,
                      params=[_Q, limit]),
            # open
            _Endpoint("GET", "/v1/health", "health", "Liveness and owner", None,
                      r("Health", {"status": Enum(("ok", "degraded")), "name": Str(),
                                   "version": Str(), "owner": w.OWNER}),
                      self._health),
            _Endpoint("GET", "/v1/openapi.json", "openapi", "This document", None,
                      _AnyObject(), self._openapi_doc),
        ]  # fmt: skip


@dataclass
class _ConfigMap(Schema):
    """Response only: an object of queue configurations by queue name."""

    values: Obj

    def json_schema(self) -> dict[str, Any]:
        return {"type": "object", "additionalProperties": self.values.json_schema()}


@dataclass
class _AnyObject(Schema):
    """Response only: any object (the OpenAPI document itself)."""

    def json_schema(self) -> dict[str, Any]:
        return {"type": "object"}


def create_app(
    queue: taquba.Queue,
    *,
    tokens: Sequence[Token] | None = None,
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    dashboard: bool = True,
    cron: Scheduler | None = None,
    jobs_result_prefix: str | None = None,
) -> ASGIApp:
    """The HTTP API (wire protocol v1) over an open queue, as an ASGI application.

    Mount it in any trio-based ASGI server (hypercorn with its trio worker), or run it with
    `Server`, which adds graceful shutdown and TLS. The application must run on the trio
    thread that opened ``queue``.

    Args:
        queue: the open queue; the application does not close it.
        tokens: the bearer tokens and their scopes; none: every request is allowed (then
            listen on a loopback address only, as `Server` enforces).
        max_body_size: the largest request body in bytes (at least 1024); larger bodies get
            ``413 payload_too_large``.
        dashboard: serve the web dashboard under ``/ui`` (same tokens; see the guide). Its
            charts sample the queue when the overview page is shown; `Server` also samples in
            the background.
        cron: a `taquba_cron.Scheduler` whose schedules the dashboard shows, pauses and
            resumes (its own page appears only then).
        jobs_result_prefix: the ``result_prefix`` of the taquba-jobs runner whose results
            the dashboard's "Job results" page lists (default: taquba-jobs' default,
            ``"jobs-results"``); the page needs taquba-jobs installed.

    Returns:
        An ASGI 3 application.

    Raises:
        UsageError: a bad argument.
    """
    return ServerApp(
        queue,
        tokens=tokens,
        max_body_size=max_body_size,
        dashboard=dashboard,
        cron=cron,
        jobs_result_prefix=jobs_result_prefix,
    )
