"""Blocking blob helpers under `Store`: local directories, and what an S3 failure means.

`Store`'s blob methods run these in worker threads. A local store writes a blob atomically
(a temporary file, then a rename or a hard link) and lists its directory tree in name order
without opening what a listing is past; an S3 store goes through s3fs, whose failures
`storage_error` maps to taquba's errors by class and S3 error code (never by message).
Temporary files start with `TMP_PREFIX` and are never listed.
"""

from __future__ import annotations

import errno
import os
import tempfile
from contextlib import suppress
from typing import TYPE_CHECKING, Any, Final

from taquba._errors import StorageError, StorageMisconfigured, StorageUnavailable

if TYPE_CHECKING:
    from taquba._store_url import S3Config

__all__ = [
    "TMP_PREFIX",
    "check_local_root",
    "is_precondition_failed",
    "local_list",
    "local_put",
    "storage_error",
]

TMP_PREFIX: Final = ".taquba-tmp-"
"""The name prefix of a blob being written (never listed, refused as a blob path segment)."""


def local_list(root: str, base: str, start_after: str | None, limit: int | None) -> list[str]:
    """`Store.list_blobs` on a local directory tree, in name order, skipping what it is past.

    At each level the entries are sorted as their names would sort in a listing (a directory
    as ``name/``), a directory whose names all sort at or before `start_after` is not opened,
    and the walk stops once it has `limit` names.
    """
    names: list[str] = []
    top = os.path.join(root, *base.split("/")) if base else root

    def walk(directory: str, lead: str) -> bool:
        try:
            with os.scandir(directory) as it:
                entries = [
                    (lead + entry.name + "/" if entry.is_dir() else lead + entry.name, entry)
                    for entry in it
                    if not entry.name.startswith(TMP_PREFIX)
                ]
        except (FileNotFoundError, NotADirectoryError):
            return True
        entries.sort(key=lambda pair: pair[0])
        for name, entry in entries:
            if name.endswith("/"):
                if (
                    start_after is not None
                    and name < start_after
                    and not start_after.startswith(name)
                ):
                    continue  # every name inside sorts before start_after
                if not walk(entry.path, name):
                    return False
            elif start_after is None or name > start_after:
                names.append(name)
                if limit is not None and len(names) >= limit:
                    return False
        return True

    walk(top, "")
    return names


def local_put(root: str, key: str, data: bytes, *, create_only: bool) -> bool:
    """Write a local blob atomically: a temporary file, then a rename (or a hard link)."""
    target = os.path.join(root, *key.split("/"))
    directory = os.path.dirname(target)
    os.makedirs(directory, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=TMP_PREFIX, dir=directory)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        if not create_only:
            os.replace(temporary, target)
            return True
        try:
            os.link(temporary, target)  # fails if `target` exists: an atomic create
        except FileExistsError:
            return False
        except OSError as exc:  # pragma: no cover - filesystems without hard links
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV):
                raise
            try:
                with open(target, "xb") as file:
                    file.write(data)
            except FileExistsError:
                return False
        return True
    finally:
        with suppress(FileNotFoundError):
            os.unlink(temporary)


def is_precondition_failed(exc: BaseException) -> bool:
    """Whether an s3fs error is a failed conditional write (HTTP 412)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        response: Any = getattr(current, "response", None)
        try:
            code: object = response["Error"].get("Code")
        except (TypeError, KeyError, AttributeError):
            code = None
        try:
            status: object = response["ResponseMetadata"].get("HTTPStatusCode")
        except (TypeError, KeyError, AttributeError):
            status = None
        if code in ("PreconditionFailed", "412") or status == 412:
            return True
        current = current.__cause__ or current.__context__
    return False


BAD_CREDENTIALS: Final = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
)
"""S3 error codes that mean the credentials themselves are wrong (not a missing grant)."""


def s3_error_code(exc: BaseException) -> str | None:
    """The S3 error code of an s3fs error, from the botocore error it was translated from."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        response: Any = getattr(current, "response", None)
        try:
            code: object = response["Error"].get("Code")
        except (TypeError, KeyError, AttributeError):
            code = None
        if isinstance(code, str) and code:
            return code
        current = current.__cause__ or current.__context__
    return None


def is_botocore(exc: BaseException, *names: str) -> bool:
    """Whether `exc` is one of botocore's exception classes ``names`` (or a subclass)."""
    return any(
        cls.__name__ in names and cls.__module__.startswith("botocore.")
        for cls in type(exc).__mro__
    )


def is_client_error(exc: BaseException) -> bool:
    """Whether `exc` is a botocore failure (s3fs lets connection errors through untranslated)."""
    return any(
        cls.__module__.startswith(("botocore.", "aiobotocore.")) for cls in type(exc).__mro__
    )


def check_local_root(root: str, db_dir: str) -> None:
    """Raise `StorageMisconfigured` if the local store's root cannot hold a database."""
    path = root
    for part in ("", db_dir):
        path = os.path.join(path, part) if part else path
        if os.path.lexists(path) and not os.path.isdir(path):
            raise StorageMisconfigured(
                f"the store path {path} is a file, not a directory: move it away or choose "
                "another store directory"
            )
    if not os.path.isdir(root):
        raise StorageMisconfigured(f"the store directory {root} does not exist any more")
    if not os.access(root, os.W_OK | os.X_OK):
        raise StorageMisconfigured(f"no permission to write in the store directory {root}")


def storage_error(exc: Exception, config: S3Config | None, url: str) -> Exception:
    """Taquba's error for an exception of a blob call or a check (by class, not message).

    On S3, s3fs turns ``NoSuchBucket`` into `FileNotFoundError` (a missing key is never an
    error here: reads return None, listings are empty) and ``AccessDenied``,
    ``InvalidAccessKeyId``, ``SignatureDoesNotMatch``, ``ExpiredToken``... into
    `PermissionError`; botocore raises ``NoCredentialsError`` when it found none (not even
    from an instance role). Those are permanent. Connection failures and other errors stay
    transient.
    """
    if config is not None:
        where = f"{config.endpoint or 'AWS S3'}"
        if is_botocore(exc, "NoCredentialsError", "PartialCredentialsError"):
            return StorageMisconfigured(
                f"no S3 credentials found for {url}: pass access_key_id and "
                "secret_access_key, set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run "
                "where an instance role provides them"
            )
        if isinstance(exc, FileNotFoundError):
            return StorageMisconfigured(
                f"S3 bucket {config.bucket!r} does not exist at {where}: create it, or fix "
                "the bucket name or endpoint"
            )
        if isinstance(exc, PermissionError):
            code = s3_error_code(exc)
            if code in BAD_CREDENTIALS:
                return StorageMisconfigured(
                    f"{where} rejected the S3 credentials for {url} ({code}): check "
                    "access_key_id, secret_access_key and session_token"
                )
            return StorageMisconfigured(
                f"access to {url} denied by {where} ({code or exc}): the credentials "
                "lack permission for this bucket and prefix"
            )
        if is_botocore(exc, "EndpointConnectionError", "ConnectTimeoutError"):
            return StorageUnavailable(f"cannot reach the S3 endpoint {where}: {exc}")
    if isinstance(exc, (IsADirectoryError, NotADirectoryError, FileExistsError)):
        return StorageError(f"blob storage refused the request: {exc}")
    if isinstance(exc, PermissionError):
        return StorageMisconfigured(f"no permission to use {url}: {exc}")
    if isinstance(exc, OSError) or is_client_error(exc):
        return StorageUnavailable(f"blob storage failed: {exc}")
    return exc
