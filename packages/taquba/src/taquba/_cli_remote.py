"""``taquba --server URL``: the admin commands through a taquba-server's HTTP API.

`RemoteQueue` offers the few `Queue` methods the admin commands call, over the HTTP API of
``docs/design/http-api.md`` (JSON, bearer token), with the standard library only
(`urllib.request` in a worker thread): the core depends on neither httpx nor taquba-client.
Records come back as the same `JobRecord` and `QueueStats` the local mode prints, so both
modes share one output. Server errors (the JSON error body) become the core's errors where
the commands handle them (`JobNotFound`, `InvalidState`), else a `RemoteError` naming the
status, code and message.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, cast

import trio

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime

from ._errors import InvalidState, JobNotFound, TaqubaError
from ._records import JobAttempt, JobRecord, JobStatus, QueueStats, attempt_from_map
from ._types import CancelOutcome, EnqueueResult, JobPage, KvPage, WakeOutcome

__all__ = ["RemoteError", "RemoteQueue", "Request"]

TIMEOUT: Final = 60.0
"""Seconds one HTTP request may take."""

_STATS_FIELDS: Final = ("pending", "scheduled", "claimed", "done", "dead", "quarantined")


class RemoteError(TaqubaError):
    """The server answered with an error, or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        """The HTTP status, or None if the server was not reached."""
        self.code = code
        """The error code of the JSON error body, if any."""


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request to the server (pure data: built and tested without a network)."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None


def build_request(
    server: str,
    token: str | None,
    method: str,
    path: str,
    *,
    query: dict[str, str] | None = None,
    body: dict[str, Any] | None = None,
) -> Request:
    """The request for ``method path`` on ``server`` (``path`` starts with ``/v1/``)."""
    url = server.rstrip("/") + path
    if query:
        url += "?" + urllib.parse.urlencode(query)
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = json.dumps(body).encode("utf-8")
        headers["Content-Type"] = "application/json"
    return Request(method, url, headers, data)


def quote(segment: str) -> str:
    """A queue name or job id as one path segment."""
    return urllib.parse.quote(segment, safe="")


def _send(request: Request) -> dict[str, Any]:
    """Send ``request`` (blocking); return the decoded JSON map or raise `RemoteError`."""
    prepared = urllib.request.Request(
        request.url, data=request.body, headers=request.headers, method=request.method
    )
    try:
        with urllib.request.urlopen(prepared, timeout=TIMEOUT) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        raise _http_error(exc) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RemoteError(f"cannot reach the server at {request.url}: {reason}") from None
    try:
        decoded: object = json.loads(raw) if raw else {}
    except ValueError:
        raise RemoteError(f"the server's answer to {request.url} is not JSON") from None
    if not isinstance(decoded, dict):
        raise RemoteError(f"the server's answer to {request.url} is not a JSON object")
    return cast("dict[str, Any]", decoded)


def _http_error(exc: urllib.error.HTTPError) -> RemoteError:
    code: str | None = None
    message = str(exc.reason)
    field = None
    try:
        body: object = json.loads(exc.read() or b"{}")
        error = cast("dict[str, object]", body).get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            details = cast("dict[str, object]", error)
            found = details.get("code")
            code = found if isinstance(found, str) else None
            message = str(details.get("message") or message)
            field = details.get("field")
    except (ValueError, OSError):
        pass
    finally:
        exc.close()
    named = f" ({field})" if isinstance(field, str) and field else ""
    hint = ""
    if exc.code in (401, 403):
        hint = " (pass an admin token with --token or TAQUBA_TOKEN)"
    text = f"the server refused: {exc.code} {code or 'error'}{named}: {message}{hint}"
    return RemoteError(text, status=exc.code, code=code)


def decode_job(data: dict[str, Any]) -> JobRecord:
    """A `JobRecord` from its JSON form (``payload`` in base64)."""
    try:
        return JobRecord(
            id=data["id"],
            queue_name=data["queue_name"],
            payload=base64.b64decode(data["payload"]),
            status=JobStatus(data["status"]),
            priority=data["priority"],
            attempts=data["attempts"],
            max_attempts=data["max_attempts"],
            enqueued_at=data["enqueued_at"],
            headers=data.get("headers") or {},
            claimed_at=data.get("claimed_at"),
            run_at=data.get("run_at"),
            last_error=data.get("last_error"),
            dedup_key=data.get("dedup_key"),
            completed_at=data.get("completed_at"),
            failed_at=data.get("failed_at"),
            cancel_requested=bool(data.get("cancel_requested", False)),
            woken_at=data.get("woken_at"),
            wake_payload=(
                base64.b64decode(data["wake_payload"])
                if data.get("wake_payload") is not None
                else None
            ),
            history_size=int(data.get("history_size") or 0),
            payload_ref=data.get("payload_ref"),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise RemoteError(f"the server sent a malformed job: {exc!r}") from None


def decode_attempt(data: dict[str, Any]) -> JobAttempt:
    """A `JobAttempt` from its JSON form."""
    try:
        return attempt_from_map(data)
    except (KeyError, ValueError, TypeError) as exc:
        raise RemoteError(f"the server sent a malformed attempt: {exc!r}") from None


class RemoteQueue:
    """The `Queue` methods the admin commands use, through a taquba-server."""

    def __init__(self, server: str, token: str | None) -> None:
        self.server = server
        self._token = token
        self.name = "?"
        """The database name the server serves (read by `connect`)."""

    async def call(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One request, in a worker thread (abandoned if the command is cancelled)."""
        request = build_request(self.server, self._token, method, path, query=query, body=body)
        return await trio.to_thread.run_sync(_send, request, abandon_on_cancel=True)

    async def connect(self) -> None:
        """Check the server answers, and read the database name it serves."""
        health = await self.call("GET", "/v1/health")
        self.name = str(health.get("name", "?"))

    async def list_queues(self) -> list[str]:
        """`Queue.list_queues`."""
        return [str(name) for name in (await self.call("GET", "/v1/queues")).get("queues", [])]

    async def stats(self, queue_name: str) -> QueueStats:
        """`Queue.stats`."""
        data = await self.call("GET", f"/v1/queues/{quote(queue_name)}/stats")
        return QueueStats(queue_name, **{f: int(data.get(f, 0)) for f in _STATS_FIELDS})

    async def dead_jobs(
        self, queue_name: str, *, after: str | None = None, limit: int = 100
    ) -> list[JobRecord]:
        """`Queue.dead_jobs`."""
        query = {"limit": str(limit)}
        if after is not None:
            query["after"] = after
        data = await self.call("GET", f"/v1/queues/{quote(queue_name)}/dead", query=query)
        return [decode_job(job) for job in data.get("jobs", [])]

    async def list_jobs(self, queue_name: str, status: JobStatus, *, limit: int = 100) -> JobPage:
        """`Queue.list_jobs` (first page)."""
        query = {"status": status.value, "limit": str(limit)}
        data = await self.call("GET", f"/v1/queues/{quote(queue_name)}/jobs", query=query)
        cursor = data.get("next_cursor")
        return JobPage(
            [decode_job(job) for job in data.get("jobs", [])],
            base64.b64decode(cursor) if isinstance(cursor, str) else None,
        )

    async def get_job(self, job_id: str) -> JobRecord | None:
        """`Queue.get_job`."""
        try:
            return decode_job(await self.call("GET", f"/v1/jobs/{quote(job_id)}"))
        except RemoteError as exc:
            if exc.status == 404:
                return None
            raise

    async def get_job_history(self, job_id: str) -> list[JobAttempt] | None:
        """`Queue.get_job_history`."""
        try:
            data = await self.call("GET", f"/v1/jobs/{quote(job_id)}/history")
        except RemoteError as exc:
            if exc.status == 404 and exc.code == "job_not_found":
                return None
            raise
        return [decode_attempt(item) for item in data.get("history", [])]

    async def requeue_dead_job(self, job: JobRecord) -> None:
        """`Queue.requeue_dead_job`."""
        try:
            await self.call("POST", f"/v1/jobs/{quote(job.id)}/requeue", body={})
        except RemoteError as exc:
            if exc.status == 404:
                raise JobNotFound(job.id) from None
            if exc.status == 409:
                raise InvalidState(str(exc)) from None
            raise

    async def purge(self, queue_name: str, status: JobStatus) -> int:
        """`Queue.purge`."""
        path = f"/v1/queues/{quote(queue_name)}/purge"
        data = await self.call("POST", path, body={"status": status.value})
        return int(data.get("removed", 0))

    async def cancel(self, job_id: str) -> CancelOutcome:
        """`Queue.cancel`."""
        data = await self.call("POST", f"/v1/jobs/{quote(job_id)}/cancel", body={})
        try:
            return CancelOutcome(data.get("outcome"))
        except ValueError:
            raise RemoteError(f"the server sent an unknown outcome: {data!r}") from None

    async def wake_scheduled(self, job_id: str, payload: bytes | None = None) -> WakeOutcome:
        """`Queue.wake_scheduled`."""
        encoded = base64.b64encode(payload).decode("ascii") if payload is not None else None
        path = f"/v1/jobs/{quote(job_id)}/wake"
        data = await self.call("POST", path, body={"payload": encoded})
        try:
            return WakeOutcome(data.get("outcome"))
        except ValueError:
            raise RemoteError(f"the server sent an unknown outcome: {data!r}") from None

    async def enqueue(
        self,
        queue_name: str,
        payload: bytes,
        *,
        priority: int | None = None,
        run_at: datetime | None = None,
        delay: float | None = None,
        dedup_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        max_attempts: int | None = None,
        job_id: str | None = None,
    ) -> EnqueueResult:
        """`Queue.enqueue` (``POST /v1/jobs``)."""
        body: dict[str, Any] = {
            "queue_name": queue_name,
            "payload": base64.b64encode(payload).decode("ascii"),
        }
        optional: dict[str, Any] = {
            "priority": priority,
            "run_at": None if run_at is None else round(run_at.timestamp() * 1000),
            "delay": delay,
            "dedup_key": dedup_key,
            "headers": dict(headers) if headers else None,
            "max_attempts": max_attempts,
            "job_id": job_id,
        }
        body.update({key: value for key, value in optional.items() if value is not None})
        data = await self.call("POST", "/v1/jobs", body=body)
        return EnqueueResult(str(data["id"]), bool(data["created"]))

    async def config(self, queue_name: str) -> dict[str, Any]:
        """The server's `QueueConfig` of ``queue_name`` in its wire form (``GET /v1/config``)."""
        data = await self.call("GET", "/v1/config")
        queues = cast("dict[str, Any]", data.get("queues") or {})
        found = queues.get(queue_name, data.get("default") or {})
        return cast("dict[str, Any]", found)

    async def kv_get(self, key: bytes) -> bytes | None:
        """`Queue.kv_get`."""
        data = await self.call("POST", "/v1/kv/get", body={"key": _b64(key)})
        value = data.get("value")
        return None if value is None else base64.b64decode(value)

    async def kv_scan(
        self, prefix: bytes = b"", *, cursor: bytes | None = None, limit: int = 100
    ) -> KvPage:
        """`Queue.kv_scan`."""
        body: dict[str, Any] = {"prefix": _b64(prefix), "limit": limit}
        if cursor is not None:
            body["cursor"] = _b64(cursor)
        data = await self.call("POST", "/v1/kv/scan", body=body)
        entries = [
            (base64.b64decode(entry["key"]), base64.b64decode(entry["value"]))
            for entry in data.get("entries", [])
        ]
        following = data.get("next_cursor")
        return KvPage(entries, None if following is None else base64.b64decode(following))

    async def kv_compare_and_set(
        self, key: bytes, expected: bytes | None, new: bytes | None
    ) -> bool:
        """`Queue.kv_compare_and_set`."""
        body = {
            "key": _b64(key),
            "expected": None if expected is None else _b64(expected),
            "new": None if new is None else _b64(new),
        }
        return bool((await self.call("POST", "/v1/kv/cas", body=body)).get("swapped"))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
