"""An S3-compatible server on loopback (moto) for tests and benchmarks."""

from __future__ import annotations

import socket
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypedDict, cast

if TYPE_CHECKING:
    from collections.abc import Generator

__all__ = ["S3Options", "moto_s3"]

MOTO_REGION = "us-east-1"
MOTO_KEY = "testing"


class S3Options(TypedDict):
    """The keyword arguments of `taquba.Store.from_url` that reach the moto server."""

    endpoint: str
    region: str
    access_key_id: str
    secret_access_key: str
    allow_http: bool


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def moto_s3(bucket: str) -> Generator[S3Options]:
    """Run a moto S3 server on 127.0.0.1 holding ``bucket`` for the length of the block.

        with moto_s3("test-bucket") as options:
            store = taquba.Store.from_url("s3://test-bucket/prefix", **options)

    Yields the `taquba.Store.from_url` options that reach it. Needs the ``moto[server]`` and
    ``boto3`` packages, imported only when this is called.
    """
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        client = cast(
            "Any",
            boto3.client(  # pyright: ignore[reportUnknownMemberType]
                "s3",
                endpoint_url=endpoint,
                region_name=MOTO_REGION,
                aws_access_key_id=MOTO_KEY,
                aws_secret_access_key=MOTO_KEY,
            ),
        )
        client.create_bucket(Bucket=bucket)
        yield S3Options(
            endpoint=endpoint,
            region=MOTO_REGION,
            access_key_id=MOTO_KEY,
            secret_access_key=MOTO_KEY,
            allow_http=True,
        )
    finally:
        server.stop()
