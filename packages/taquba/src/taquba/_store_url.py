"""Store URLs: parsing ``file:`` and ``s3:`` URLs, and resolving S3 settings (`S3Config`).

`Store.from_url` takes a URL and explicit options; this module checks them and fills in what
was not given from the usual ``AWS_*`` environment variables, once, at construction. The
result (`S3Config`) feeds both SlateDB's object store and s3fs, so the two never resolve
credentials or endpoints differently.
"""

from __future__ import annotations

import os
import pathlib
import re
from urllib.parse import unquote, urlsplit

from taquba._errors import InvalidStoreUrl

__all__ = ["S3Config", "check_retries", "file_url_path", "path_uri", "s3_config"]

BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,254}$")

TRUE = frozenset({"1", "true", "yes", "on"})

FALSE = frozenset({"0", "false", "no", "off", ""})


class S3Config:
    """Resolved S3 settings, shared by SlateDB's object store and s3fs."""

    __slots__ = (
        "access_key_id",
        "allow_http",
        "bucket",
        "endpoint",
        "prefix",
        "region",
        "secret_access_key",
        "session_token",
    )

    def __init__(
        self,
        *,
        bucket: str,
        prefix: str,
        endpoint: str | None,
        region: str | None,
        access_key_id: str | None,
        secret_access_key: str | None,
        session_token: str | None,
        allow_http: bool,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint = endpoint
        self.region = region
        self.access_key_id = access_key_id
        self.secret_access_key = secret_access_key
        self.session_token = session_token
        self.allow_http = allow_http

    def object_store_config(self) -> dict[str, str]:
        optional = {
            "aws_endpoint": self.endpoint,
            "aws_region": self.region,
            "aws_access_key_id": self.access_key_id,
            "aws_secret_access_key": self.secret_access_key,
            "aws_session_token": self.session_token,
        }
        return {
            "aws_bucket": self.bucket,
            "aws_allow_http": str(self.allow_http).lower(),
            **{key: value for key, value in optional.items() if value is not None},
        }


def check_retries(max_retries: int) -> int:
    if isinstance(max_retries, bool) or not isinstance(max_retries, int):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise InvalidStoreUrl(f"max_retries must be an int, not {max_retries!r}")
    if max_retries < 0:
        raise InvalidStoreUrl(f"max_retries must be >= 0, not {max_retries}")
    return max_retries


def path_uri(path: str) -> str:
    return pathlib.Path(path).as_uri()


def file_url_path(text: str) -> str:
    parts = urlsplit(text)
    if not text[len("file:") :].startswith("//"):
        raise InvalidStoreUrl(f"a file store URL looks like 'file:///abs/dir', not {text!r}")
    if parts.netloc not in ("", "localhost"):
        raise InvalidStoreUrl(f"file store URLs cannot name a host ({parts.netloc!r})")
    if parts.query or parts.fragment:
        raise InvalidStoreUrl(f"file store URLs take no query or fragment: {text!r}")
    path = unquote(parts.path)
    if not path.startswith("/"):
        raise InvalidStoreUrl(f"file store URLs need an absolute path: {text!r}")
    return os.path.normpath(path)


def env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


def s3_config(
    text: str,
    *,
    endpoint: str | None,
    region: str | None,
    access_key_id: str | None,
    secret_access_key: str | None,
    session_token: str | None,
    allow_http: bool | None,
) -> S3Config:
    parts = urlsplit(text)
    if not text[len("s3:") :].startswith("//"):
        raise InvalidStoreUrl(f"an S3 store URL looks like 's3://bucket/prefix', not {text!r}")
    if parts.query or parts.fragment:
        raise InvalidStoreUrl(f"S3 store URLs take no query or fragment: {text!r}")
    bucket = parts.netloc
    if not BUCKET.match(bucket):
        raise InvalidStoreUrl(f"invalid S3 bucket name {bucket!r} in {text!r}")
    prefix = parts.path.strip("/")
    if prefix:
        segments = prefix.split("/")
        if any(s in ("", ".", "..") for s in segments):
            raise InvalidStoreUrl(f"invalid S3 key prefix {prefix!r} in {text!r}")

    endpoint = endpoint or env("AWS_ENDPOINT_URL", "AWS_ENDPOINT")
    if endpoint is not None:
        scheme = urlsplit(endpoint).scheme.lower()
        if scheme not in ("http", "https") or not urlsplit(endpoint).netloc:
            raise InvalidStoreUrl(f"S3 endpoint must be an http(s) URL, not {endpoint!r}")
    region = region or env("AWS_REGION", "AWS_DEFAULT_REGION")
    if (access_key_id, secret_access_key, session_token) == (None, None, None):
        access_key_id = env("AWS_ACCESS_KEY_ID")
        secret_access_key = env("AWS_SECRET_ACCESS_KEY")
        session_token = env("AWS_SESSION_TOKEN")
    if (access_key_id is None) != (secret_access_key is None):
        raise InvalidStoreUrl("S3 access_key_id and secret_access_key must be given together")
    if session_token is not None and access_key_id is None:
        raise InvalidStoreUrl("an S3 session_token needs access_key_id and secret_access_key")
    if allow_http is None:
        env_value = os.environ.get("AWS_ALLOW_HTTP")
        if env_value is not None and env_value.strip().lower() in TRUE | FALSE:
            allow_http = env_value.strip().lower() in TRUE
        elif env_value is not None:
            raise InvalidStoreUrl(f"AWS_ALLOW_HTTP must be true or false, not {env_value!r}")
        else:
            allow_http = endpoint is not None and endpoint.lower().startswith("http://")
    if not allow_http and endpoint is not None and endpoint.lower().startswith("http://"):
        raise InvalidStoreUrl(f"S3 endpoint {endpoint!r} is plain http but allow_http is off")
    return S3Config(
        bucket=bucket,
        prefix=prefix,
        endpoint=endpoint,
        region=region,
        access_key_id=access_key_id,
        secret_access_key=secret_access_key,
        session_token=session_token,
        allow_http=allow_http,
    )
