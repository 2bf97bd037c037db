"""A run that waits for a human's decision: ``uv run python examples/workflow_approval.py serve``.

An expense request is a run of two steps. Step 0 prepares the request and waits, with a
deadline (``--deadline``, default a day), for a signal under ``approval:<request id>``; the run
holds no worker while it waits. Step 1 continues with the decision (approved or rejected, by
whom, with a comment), or auto-rejects the request when the deadline passed first. A terminal
hook prints how each request ended.

One process owns the store (one writer per store): ``serve`` runs the workflow and a small web
form on 127.0.0.1 (``GET /`` lists the waiting requests with Approve and Reject buttons,
``POST /decide`` sends the signal and shows the `SignalOutcome`). The other subcommands are
clients of that process::

    python examples/workflow_approval.py serve --store ./approval-data     # keep it running
    python examples/workflow_approval.py submit "New laptop" --amount 1800 --id exp-1
    python examples/workflow_approval.py list
    python examples/workflow_approval.py decide exp-1 approve --comment "fine"

Stop ``serve`` with Ctrl-C (or SIGTERM) while a request waits and start it again on the same
store: the request is still waiting, with the same deadline, and a decision then finishes it.
A deadline that passed while the process was down fires when it is back.

Exit status of ``serve``: 0 after Ctrl-C or SIGTERM (a graceful stop: the web server closes,
the workflow finishes the steps in flight for up to 5 s), 130 after a second Ctrl-C (at once).
The client subcommands exit 0 on success, 1 when the server refuses (the message on stderr:
an unknown request, one that is no longer waiting, a bad decision word) or cannot be reached,
2 for a usage error. The web form has no authentication: it is a demo, bound to loopback.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import html
import json
import logging
import re
import secrets
import signal
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from functools import partial
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

import taquba
from taquba_workflow import (
    Continue,
    Fail,
    InputMismatch,
    RunOutcome,
    RunSpec,
    Runtime,
    SignalOutcome,
    Step,
    StepOutcome,
    Succeed,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

PREPARE, DECIDE = range(2)
DEFAULT_URL = "http://127.0.0.1:8321"
DEFAULT_DEADLINE = 24 * 3600.0
DECISIONS = {"approve": "approved", "reject": "rejected"}
REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_TEXT = 500  # characters of a title, name or comment
WAITING = b"approval/waiting/"  # application KV: the requests waiting for a decision
DECIDED = b"approval/decided/"  # and how each ended
log = logging.getLogger("approval")


@dataclass(frozen=True)
class Request:
    """An expense request: the payload of both steps of its run (the run id is its id)."""

    id: str
    title: str
    amount: str
    requester: str
    deadline: float  # seconds to wait for a decision


@dataclass(frozen=True)
class Decision:
    """How a request ended: the run's result when approved, its error's text otherwise."""

    outcome: str  # "approved", "rejected" or "expired"
    approver: str | None
    comment: str

    def summary(self) -> str:
        """One line for people."""
        if self.approver is None:
            return f"{self.outcome}: {self.comment}"
        return f"{self.outcome} by {self.approver}: {self.comment or '(no comment)'}"


def say(line: str) -> None:
    """Print a line at once (the tests read the server's output line by line)."""
    print(line, flush=True)


def whoami() -> str:
    """The login name (the default requester and approver), if the system knows it."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no USER/LOGNAME and no passwd entry (a bare container)
        return "anonymous"


def signal_key(request_id: str) -> str:
    """The correlation key a request waits on."""
    return f"approval:{request_id}"


# ---------------------------------------------------------------------------- the workflow


async def run_step(step: Step[Request]) -> StepOutcome[Request, Decision]:
    """Step 0 waits for the decision (or the deadline); step 1 acts on it."""
    request = step.payload
    if step.number == PREPARE:
        # A real app would notify the approvers here (memoize that, as workflow_steps.py does).
        # The listing entry commits with the wait itself and goes with step 1's outcome, so
        # the page lists every request whose wait committed and whose end has not.
        entry = {**asdict(request), "deadline_at": time.time() + request.deadline}
        step.kv_put(WAITING + request.id.encode(), json.dumps(entry).encode())
        say(f"request {request.id} waits for a decision (at most {request.deadline:g} s)")
        return Continue(request, on_signal=signal_key(request.id), timeout=request.deadline)
    if step.signal is None:  # the deadline passed first: auto-reject (or escalate, or remind)
        decision = Decision("expired", None, f"no decision within {request.deadline:g} s")
    else:
        sent = json.loads(step.signal)  # written by `decide` below, which checked it
        decision = Decision(DECISIONS[sent["decision"]], sent["approver"], sent["comment"])
    step.kv_delete(WAITING + request.id.encode())
    record = {"id": request.id, "title": request.title, **asdict(decision)}
    step.kv_put(DECIDED + request.id.encode(), json.dumps(record).encode())
    if decision.outcome == "approved":
        return Succeed(decision)  # a real app would continue: pay, deploy, ...
    return Fail(decision.summary())


class Approvals:
    """The workflow and its web form, in the process owning the queue."""

    def __init__(self, queue: taquba.Queue, workers: int) -> None:
        self.queue = queue
        # A waiting request holds no worker: a few workers serve any number of them.
        self.runtime: Runtime[Request, Decision] = Runtime(
            queue, run_step, self.on_end, queue_name="approvals", concurrency=workers,
            shutdown_grace=5.0, poll_interval=0.2,
        )  # fmt: skip

    async def on_end(self, outcome: RunOutcome[Decision]) -> None:
        """The terminal hook (at least once per request): print the outcome."""
        detail = outcome.result.summary() if outcome.result else outcome.error or "cancelled"
        say(f"=> {outcome.run_id} {outcome.status.value}: {detail}")
        # A decision sent while the request was ending stays buffered under its key: drop it.
        await self.runtime.clear_signal(signal_key(outcome.run_id))

    async def entries(self, prefix: bytes) -> list[dict[str, Any]]:
        """The KV entries under ``prefix`` (the first 100: this is a demo)."""
        page = await self.queue.kv_scan(prefix, limit=100)
        return [json.loads(value) for _, value in page.entries]

    async def submit(self, form: dict[str, str]) -> tuple[HTTPStatus, dict[str, Any]]:
        """``POST /submit``: start a request run."""
        request_id = form.get("id") or f"req-{secrets.token_hex(4)}"
        if not REQUEST_ID.fullmatch(request_id):
            return HTTPStatus.BAD_REQUEST, {"error": "a request id is 1-64 of [A-Za-z0-9_-]"}
        try:
            deadline = float(form.get("deadline") or DEFAULT_DEADLINE)
        except ValueError:
            deadline = -1.0
        if not 0 <= deadline <= 365 * 86400:
            return HTTPStatus.BAD_REQUEST, {"error": "the deadline is 0 to 31536000 seconds"}
        title, amount = form.get("title", "").strip(), form.get("amount", "").strip()
        requester = form.get("requester", "").strip() or "anonymous"
        if not title or max(len(title), len(amount), len(requester)) > MAX_TEXT:
            return HTTPStatus.BAD_REQUEST, {"error": f"a title of 1-{MAX_TEXT} characters"}
        request = Request(request_id, title, amount, requester, deadline)
        try:
            handle = await self.runtime.submit(RunSpec(input=request, run_id=request_id))
        except InputMismatch:
            return HTTPStatus.CONFLICT, {"error": f"request id {request_id} is taken"}
        return HTTPStatus.OK, {"request": request_id, "new": handle.newly_submitted}

    async def decide(self, form: dict[str, str]) -> tuple[HTTPStatus, dict[str, Any]]:
        """``POST /decide``: send the decision as the signal the request waits for."""
        request_id, word = form.get("request", ""), form.get("decision", "")
        if word not in DECISIONS:
            return HTTPStatus.BAD_REQUEST, {"error": f"the decision is approve or reject: {word!r}"}
        approver = form.get("approver", "").strip() or "anonymous"
        comment = form.get("comment", "").strip()
        if max(len(approver), len(comment)) > MAX_TEXT:
            return HTTPStatus.BAD_REQUEST, {"error": f"at most {MAX_TEXT} characters, please"}
        status = await self.runtime.status(request_id) if REQUEST_ID.fullmatch(request_id) else None
        if status is None:
            return HTTPStatus.NOT_FOUND, {"error": f"no request {request_id!r}"}
        if status.state.terminal:
            return HTTPStatus.CONFLICT, {"error": f"request {request_id} has ended already"}
        waiting = await self.queue.kv_get(WAITING + request_id.encode())
        if status.step != PREPARE and waiting is None:
            return HTTPStatus.CONFLICT, {"error": f"request {request_id} is no longer waiting"}
        sent = {"decision": word, "approver": approver, "comment": comment}
        outcome = await self.runtime.signal(signal_key(request_id), json.dumps(sent).encode())
        if outcome is SignalOutcome.DELIVERED:
            note = "delivered: the request continues now"
        else:  # not waiting yet (step 0 still runs), or its deadline is passing right now
            note = "buffered: the request takes it when it waits, or at its deadline"
        return HTTPStatus.OK, {"request": request_id, "outcome": outcome.value, "note": note}

    async def respond(self, method: str, path: str, form: dict[str, str]) -> Response:
        """Route one request; the answer is JSON for the CLI, HTML for a browser."""
        if (method, path) == ("GET", "/"):
            waiting, decided = await self.entries(WAITING), await self.entries(DECIDED)
            return Response(HTTPStatus.OK, {"waiting": waiting}, page(waiting, decided))
        if method == "POST" and path in ("/submit", "/decide"):
            act = self.submit if path == "/submit" else self.decide
            code, answer = await act(form)
            return Response(code, answer, result_page(code, answer))
        if path in ("/", "/submit", "/decide"):
            return Response.error(HTTPStatus.METHOD_NOT_ALLOWED, f"not {method}")
        return Response.error(HTTPStatus.NOT_FOUND, f"no page {path}")


# ---------------------------------------------------------------------------- HTML

STYLE = "body{font-family:sans-serif;max-width:50em;margin:2em auto}td,th{padding:.3em}"


def page(waiting: list[dict[str, Any]], decided: list[dict[str, Any]]) -> str:
    """``GET /``: the waiting requests with their buttons, the decided ones, a new one."""
    e = html.escape
    rows = [
        f"<tr><td>{e(w['id'])}</td><td>{e(w['title'])}</td><td>{e(w['amount'])}</td>"
        f"<td>{e(w['requester'])}</td><td>{e(time.ctime(w['deadline_at']))}</td><td>"
        '<form method="post" action="/decide">'
        f'<input type="hidden" name="request" value="{e(w["id"])}">'
        '<input name="approver" placeholder="your name" required> '
        '<input name="comment" placeholder="comment"> '
        '<button name="decision" value="approve">Approve</button> '
        '<button name="decision" value="reject">Reject</button></form></td></tr>'
        for w in waiting
    ]
    ended = [
        f"<li>{e(d.get('id', '?'))} ({e(d.get('title', '?'))}): "
        f"{e(Decision(d['outcome'], d['approver'], d['comment']).summary())}</li>"
        for d in decided
    ]
    return (
        f"<!doctype html><title>Approvals</title><style>{STYLE}</style><h1>Waiting</h1>"
        + (
            "<table><tr><th>id<th>title<th>amount<th>requester<th>deadline<th>decision</tr>"
            + "".join(rows)
            + "</table>"
            if rows
            else "<p>Nothing waits for a decision.</p>"
        )
        + "<h1>Decided</h1><ul>"
        + "".join(ended)
        + "</ul><h1>New request</h1>"
        '<form method="post" action="/submit"><input name="title" placeholder="title" required> '
        '<input name="amount" placeholder="amount"> '
        '<input name="requester" placeholder="your name"> '
        f'<input name="deadline" placeholder="deadline, s ({DEFAULT_DEADLINE:g})"> '
        "<button>Submit</button></form>"
    )


def result_page(code: HTTPStatus, answer: dict[str, Any]) -> str:
    """The page after a form was sent: what happened, and a way back."""
    text = answer.get("error") or " ".join(f"{k}: {v}" for k, v in answer.items())
    return (
        f"<!doctype html><title>{code.value} {code.phrase}</title><style>{STYLE}</style>"
        f"<p>{html.escape(text)}</p><p><a href='/'>back</a></p>"
    )


@dataclass(frozen=True)
class Response:
    """An HTTP answer in two forms: JSON (for clients asking for it) and HTML."""

    code: HTTPStatus
    data: dict[str, Any]
    html: str

    @classmethod
    def error(cls, code: HTTPStatus, message: str) -> Response:
        """An error answer."""
        return cls(code, {"error": message}, result_page(code, {"error": message}))

    def encode(self, *, json_wanted: bool) -> bytes:
        """The bytes on the wire (``Connection: close``: one request per connection)."""
        if json_wanted:
            body, kind = json.dumps(self.data).encode(), "application/json"
        else:
            body, kind = self.html.encode(), "text/html; charset=utf-8"
        head = (
            f"HTTP/1.1 {self.code.value} {self.code.phrase}\r\nContent-Type: {kind}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n"
            "X-Content-Type-Options: nosniff\r\n\r\n"
        )
        return head.encode() + body


# ---------------------------------------------------------------------------- HTTP/1.1
# Just enough HTTP for a form on loopback: one request per connection, a bounded head and
# body, a time limit per connection. Use a real server (hypercorn, ...) for anything more.

MAX_HEAD, MAX_BODY, READ_TIME_LIMIT = 16 * 1024, 16 * 1024, 10.0


class BadRequest(Exception):
    """The client sent something this tiny server does not take."""

    def __init__(self, code: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.code = code


async def read_request(stream: trio.SocketStream) -> tuple[str, str, dict[str, str], bytes]:
    """Read one request: method, path, headers (lower-cased names) and body."""
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > MAX_HEAD:
            raise BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "head too large")
        chunk = await stream.receive_some(4096)
        if not chunk:
            raise BadRequest(HTTPStatus.BAD_REQUEST, "the request ended early")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    request_line, *lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, _version = request_line.split(" ")
    except ValueError:
        raise BadRequest(HTTPStatus.BAD_REQUEST, "a malformed request line") from None
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "transfer-encoding" in headers:
        raise BadRequest(HTTPStatus.LENGTH_REQUIRED, "send a Content-Length")
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        raise BadRequest(HTTPStatus.BAD_REQUEST, "a malformed Content-Length") from None
    if not 0 <= length <= MAX_BODY:
        raise BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body too large")
    while len(body) < length:
        chunk = await stream.receive_some(length - len(body))
        if not chunk:
            raise BadRequest(HTTPStatus.BAD_REQUEST, "the body ended early")
        body += chunk
    return method, urllib.parse.urlsplit(target).path, headers, body[:length]


def make_handler(app: Approvals) -> Callable[[trio.SocketStream], Awaitable[None]]:
    """The connection handler of `trio.serve_tcp` (one request, one answer, close)."""

    async def handle(stream: trio.SocketStream) -> None:
        json_wanted = False
        try:
            try:
                with trio.fail_after(READ_TIME_LIMIT):
                    method, path, headers, body = await read_request(stream)
                json_wanted = "application/json" in headers.get("accept", "")
                origin = headers.get("origin")
                if method == "POST" and origin not in (None, f"http://{headers.get('host')}"):
                    # Another site's page posting to this form from a browser: refuse.
                    raise BadRequest(HTTPStatus.FORBIDDEN, "cross-origin form posts are refused")
                form = dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace")))
                response = await app.respond(method, path, form)
            except BadRequest as exc:
                response = Response.error(exc.code, str(exc))
            except trio.TooSlowError:
                response = Response.error(HTTPStatus.REQUEST_TIMEOUT, "too slow")
            except Exception:  # a bug or a storage error: answer, log, keep serving the rest
                log.exception("the request failed")
                response = Response.error(HTTPStatus.INTERNAL_SERVER_ERROR, "see the server log")
            await stream.send_all(response.encode(json_wanted=json_wanted))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away
        finally:
            await stream.aclose()

    return handle


# ---------------------------------------------------------------------------- serve


async def own(store: Path, host: str, port: int, workers: int, stop: trio.Event) -> None:
    """Open the store, serve the workflow and the form until ``stop``, then stop gracefully."""
    async with taquba.open_queue(store, "approvals", scheduler_interval=0.2) as queue:
        app = Approvals(queue, workers)
        async with trio.open_nursery() as nursery:
            await nursery.start(app.runtime.serve)
            async with trio.open_nursery() as web:
                handler = make_handler(app)
                listeners = await web.start(partial(trio.serve_tcp, handler, port, host=host))
                bound = listeners[0].socket.getsockname()[1]
                say(f"serving http://{host}:{bound} (store {store}); Ctrl-C stops")
                await stop.wait()
                web.cancel_scope.cancel()
            say("stopping: waiting requests keep waiting; serve again to continue")
            app.runtime.shutdown()  # serve returns once the steps in flight are done
    say("stopped")


async def serve(store: Path, host: str, port: int, workers: int) -> int:
    """``serve``: the first SIGINT/SIGTERM stops gracefully (0), a second at once (130)."""
    interrupted = False
    # Caught from the start: a Ctrl-C while the store opens stops as soon as it is open.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            stop = trio.Event()

            async def watch() -> None:
                nonlocal interrupted
                async for _ in signals:
                    if stop.is_set():
                        interrupted = True
                        nursery.cancel_scope.cancel()
                    stop.set()

            nursery.start_soon(watch)
            await own(store, host, port, workers, stop)
            nursery.cancel_scope.cancel()  # the watcher
    return 130 if interrupted else 0


# ---------------------------------------------------------------------------- the clients


class ClientError(Exception):
    """The server refused, or could not be reached."""


def post(url: str, path: str, fields: dict[str, str]) -> dict[str, Any]:
    """POST a form to the serving process; return its JSON answer."""
    request = urllib.request.Request(
        url.rstrip("/") + path,
        data=urllib.parse.urlencode(fields).encode(),
        headers={"Accept": "application/json"},
    )
    return call(request, url)


def call(request: urllib.request.Request, url: str) -> dict[str, Any]:
    """Send ``request``; map the server's refusals and network errors to `ClientError`."""
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.load(answer)
    except urllib.error.HTTPError as exc:
        with exc, contextlib.suppress(ValueError):
            raise ClientError(json.load(exc)["error"]) from None
        raise ClientError(f"HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ClientError(f"cannot reach {url} ({reason}): is `serve` running?") from None


def parser() -> argparse.ArgumentParser:
    """The command line."""
    cli = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    commands = cli.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="own the store: run the workflow and the web form")
    run.add_argument("--store", type=Path, default=Path("approval-data"), help="a directory")
    run.add_argument("--host", default="127.0.0.1", help="address of the form (127.0.0.1)")
    run.add_argument("--port", type=int, default=8321, help="its port (0: any free one)")
    run.add_argument("--workers", type=int, default=4, help="steps run at once (4)")
    url = argparse.ArgumentParser(add_help=False)
    url.add_argument("--url", default=DEFAULT_URL, help=f"the serving process ({DEFAULT_URL})")
    new = commands.add_parser("submit", parents=[url], help="submit an expense request")
    new.add_argument("title")
    new.add_argument("--amount", default="")
    new.add_argument("--requester", default=whoami())
    new.add_argument("--id", default="", help="the request id (default: a new one)")
    new.add_argument(
        "--deadline", type=float, default=DEFAULT_DEADLINE, help="seconds to wait (a day)"
    )
    commands.add_parser("list", parents=[url], help="list the requests waiting for a decision")
    decide = commands.add_parser("decide", parents=[url], help="approve or reject a request")
    decide.add_argument("request_id")
    decide.add_argument("decision", choices=sorted(DECISIONS))
    decide.add_argument("--comment", default="")
    decide.add_argument("--approver", default=whoami())
    return cli


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand; return the exit status (see the module docstring)."""
    args = parser().parse_args(argv)
    if args.command == "serve":
        logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
        try:
            return trio.run(serve, args.store.resolve(), args.host, args.port, args.workers)
        except KeyboardInterrupt:  # before the signal receiver was in place
            return 130
    try:
        if args.command == "submit":
            fields = {"title": args.title, "amount": args.amount, "requester": args.requester}
            fields |= {"id": args.id, "deadline": str(args.deadline)}
            answer = post(args.url, "/submit", fields)
            print(f"submitted {answer['request']}" + ("" if answer["new"] else " (already)"))
        elif args.command == "list":
            request = urllib.request.Request(args.url, headers={"Accept": "application/json"})
            for w in call(request, args.url)["waiting"]:
                due = time.ctime(w["deadline_at"])
                print(f"{w['id']}: {w['title']} {w['amount']} by {w['requester']}, due {due}")
        else:
            fields = {"request": args.request_id, "decision": args.decision}
            fields |= {"comment": args.comment, "approver": args.approver}
            answer = post(args.url, "/decide", fields)
            print(f"{answer['request']}: {answer['note']}")
    except ClientError as exc:
        print(f"{Path(sys.argv[0]).name}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
