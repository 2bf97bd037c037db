"""An S3-compatible server for `s3_requests`: ``python -m benchmarks._s3_server JSON``.

moto's S3 (the server the tests use), in its own process so it does not share the
benchmark's GIL, behind a WSGI middleware that

- counts every request by method and by the kind of object it names (``wal`` for SlateDB's
  write-ahead log, ``compacted`` for sorted-run SSTs, ``manifest``, ``other``), and
- holds each request for a fixed time before moto answers it (``put_ms`` for PUT and POST,
  ``get_ms`` for GET and HEAD, ``list_ms`` for bucket listings, ``delete_ms`` for DELETE),
  so that the number of requests the queue makes reflects an object store that answers in
  tens of milliseconds, as S3 does, rather than in one on loopback.

Requests are served by threads, so a held request does not hold the others. ``GET
/__counts`` (not counted) answers the counts as JSON. It prints ``READY <port>`` once it
listens, and serves until killed.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from typing import Any

HELD = ("put_ms", "get_ms", "list_ms", "delete_ms")


def kind_of(path: str) -> str:
    if "/wal/" in path:
        return "wal"
    if "/compacted/" in path:
        return "compacted"
    if "/manifest/" in path:
        return "manifest"
    return "other"


class Counting:
    """The WSGI middleware: count, hold, pass on."""

    def __init__(self, app: Any, spec: dict[str, Any]) -> None:
        self.app = app
        self.hold = {k: float(spec.get(k, 0.0)) / 1000.0 for k in HELD}
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path = str(environ.get("PATH_INFO", ""))
        method = str(environ.get("REQUEST_METHOD", ""))
        if path == "/__counts":
            with self.lock:
                body = json.dumps(dict(self.counts)).encode()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        query = str(environ.get("QUERY_STRING", ""))
        listing = method == "GET" and path.rstrip("/").count("/") <= 1 and "list-type" in query
        op = "LIST" if listing else method
        with self.lock:
            self.counts[op] += 1
            self.counts[f"{op} {kind_of(path)}"] += 1
        hold = {
            "PUT": self.hold["put_ms"],
            "POST": self.hold["put_ms"],
            "GET": self.hold["get_ms"],
            "HEAD": self.hold["get_ms"],
            "LIST": self.hold["list_ms"],
            "DELETE": self.hold["delete_ms"],
        }.get(op, 0.0)
        if hold > 0:
            time.sleep(hold)
        return self.app(environ, start_response)


def main(spec: dict[str, Any]) -> None:
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    app = Counting(DomainDispatcherApplication(create_backend_app), spec)
    server = make_server("127.0.0.1", 0, app, True, request_handler=MotoRequestHandler)
    print("READY", server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
