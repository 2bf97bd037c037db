"""A webhook receiver that verifies Standard Webhooks signatures (standard library only).

Run it, then run ``examples/webhooks_sender.py`` against it::

    export WEBHOOK_SECRET=$(python -c "import taquba_webhooks as t; print(t.generate_secret())")
    python examples/webhooks_receiver.py --port 8000
    python examples/webhooks_sender.py --url http://127.0.0.1:8000/hooks

The receiver verifies every request on its raw body before parsing it, answers 401 to a bad
signature, drops duplicates by ``webhook-id`` (delivery is at-least-once) and, to show the
sender's retries, answers 503 to the first attempt of every third message.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import taquba_webhooks


class Inbox:
    """What the receiver has accepted, by webhook-id."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: dict[str, object] = {}
        self.attempts: dict[str, int] = {}


def make_server(
    port: int, secrets: list[str], *, host: str = "127.0.0.1", quiet: bool = False
) -> tuple[ThreadingHTTPServer, Inbox]:
    """A receiver bound to ``host:port`` (0 picks a free port) and its inbox."""
    inbox = Inbox()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            try:
                msg_id = taquba_webhooks.verify_webhook(body, dict(self.headers), secrets)
            except taquba_webhooks.VerificationError as exc:
                self._answer(401, f"rejected: {exc.reason}")
                return
            with inbox.lock:
                attempt = inbox.attempts[msg_id] = inbox.attempts.get(msg_id, 0) + 1
                event: object = json.loads(body)
                number = event.get("n", 0) if isinstance(event, dict) else 0  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
                if attempt == 1 and number % 3 == 2:
                    self._answer(503, "busy, try again", {"Retry-After": "1"})
                    return
                duplicate = msg_id in inbox.seen
                inbox.seen[msg_id] = event
            if not quiet:
                note = " (duplicate, ignored)" if duplicate else ""
                print(f"received {msg_id} on attempt {attempt}: {event}{note}", flush=True)
            self._answer(204, "")

        def _answer(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
            payload = text.encode()
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    return ThreadingHTTPServer((host, port), Handler), inbox


def main() -> None:
    """Serve until interrupted."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--secret",
        action="append",
        help="a whsec_ secret (repeat during a rotation; default: $WEBHOOK_SECRET)",
    )
    args = parser.parse_args()
    secrets = args.secret or [os.environ["WEBHOOK_SECRET"]]
    server, _inbox = make_server(args.port, secrets)
    print(f"listening on http://127.0.0.1:{server.server_address[1]}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
