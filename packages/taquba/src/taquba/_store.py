"""Where taquba keeps its state: `Store`.

A `Store` is one place in object storage, named by a URL, that every taquba layer shares:

- ``memory://``: a fresh in-memory store private to the `Store` object (tests, demos). It lives
  as long as the object: a queue closed and reopened on the same `Store` finds its data.
- ``file:///abs/dir`` or a plain path (relative paths are made absolute; the directory is
  created): a local directory.
- ``s3://bucket/prefix``: an S3 (or S3-compatible) bucket, optionally under a key prefix.
  Endpoint, region, credentials and ``allow_http`` come from explicit options, falling back to
  the usual ``AWS_*`` environment variables. Needs the ``taquba[s3]`` extra (``s3fs``).

Inside the store root the layout is::

    <root>/db/<name>/...    the SlateDB database of queue <name> (name percent-encoded)
    <root>/blobs/<path>     blobs: large payloads, workflow memos, job results, markers

so the queue databases and the blob namespace never collide. Blobs are reached through fsspec
(`Store.fs`, rooted at ``<root>/blobs``) and the async helpers `Store.put_blob`,
`Store.get_blob`, `Store.delete_blob` and `Store.list_blobs`, which run the blocking fsspec
calls in worker threads. The SlateDB object store is built explicitly from the same settings
(never from ambient environment resolution) and is created once per `Store`.

URL parsing and S3 settings live in `_store_url.py`; the blocking local-directory helpers and
the mapping of S3 failures to taquba's errors in `_blob_io.py`. What stays here (about 600
lines) is the `Store` class and the memory-filesystem lock its blob calls share: one public
type whose constructors, blob methods and their thread-side halves read best together.
"""

from __future__ import annotations

import os
import re
import threading
import uuid
import weakref
from collections import deque
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, TypeVarTuple

import trio
from fsspec.asyn import sync as _fsspec_sync  # pyright: ignore[reportUnknownVariableType]
from fsspec.implementations.dirfs import DirFileSystem
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem

from taquba import _adapter
from taquba._blob_io import (
    TMP_PREFIX,
    check_local_root,
    is_precondition_failed,
    local_list,
    local_put,
    storage_error,
)
from taquba._errors import (
    InvalidQueueName,
    InvalidStoreUrl,
    StorageError,
    UsageError,
)
from taquba._store_url import S3Config, check_retries, file_url_path, path_uri, s3_config

if TYPE_CHECKING:
    from collections.abc import Callable, Generator

    import fsspec

__all__ = ["DEFAULT_DATABASE", "Store", "StoreKind"]

StoreKind = Literal["memory", "file", "s3"]
"""The kinds of storage a `Store` can address."""

DEFAULT_DATABASE: Final = "taquba"
"""The database name `open_queue`, `open_reader` and the ``taquba`` command use by default."""
_DB_DIR: Final = "db"
_BLOB_DIR: Final = "blobs"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_R = TypeVar("_R")
_Ts = TypeVarTuple("_Ts")


class Store:
    """A place in object storage where taquba keeps queues and blobs.

    Build one with `Store.from_url` or `Store.memory` and hand it to every taquba layer; they
    all share its settings. A `Store` is immutable and safe to share between tasks. See the
    module documentation for the layout inside the store.
    """

    __slots__ = (
        "__weakref__",
        "_blob_fs",
        "_blob_root",
        "_db_root",
        "_in_memory_fs",
        "_kind",
        "_local_root",
        "_max_retries",
        "_s3_config",
        "_url",
    )

    _kind: StoreKind
    _url: str
    _max_retries: int
    _db_root: str
    _blob_fs: Any  # fsspec is untyped; `fs` exposes it as an AbstractFileSystem
    _blob_root: str
    _local_root: str | None
    _in_memory_fs: bool
    _s3_config: S3Config | None

    def __init__(self, _token: object, /) -> None:
        if _token is not _PRIVATE:
            raise TypeError("use Store.from_url() or Store.memory() to create a Store")

    @classmethod
    def memory(cls, *, max_retries: int = 3) -> Store:
        """Return a fresh in-memory store, private to the returned object.

        Its queue databases and blobs live as long as the object; blobs are kept in fsspec's
        process-wide memory filesystem under a unique root.

        Args:
            max_retries: Object-store retries (kept for symmetry; memory never fails).
        """
        store = cls._new("memory", "memory://", check_retries(max_retries), db_root="")
        root = f"/taquba-{uuid.uuid4().hex}"
        memory = MemoryFileSystem()
        store._blob_root = f"{root}/{_BLOB_DIR}"
        store._blob_fs = DirFileSystem(path=store._blob_root, fs=memory)
        store._in_memory_fs = True
        weakref.finalize(store, _forget_memory_root, memory, root)
        _adapter.attach_object_store(store, _adapter.memory_object_store())
        return store

    @classmethod
    def from_url(
        cls,
        url: str | os.PathLike[str],
        *,
        endpoint: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        allow_http: bool | None = None,
        max_retries: int = 3,
    ) -> Store:
        """Return the store a URL names.

        Args:
            url: ``memory://``, ``file:///abs/dir``, a plain directory path (created if
                missing), or ``s3://bucket[/prefix]``.
            endpoint: S3 endpoint URL (default: ``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT``, or
                AWS itself).
            region: S3 region (default: ``AWS_REGION``, ``AWS_DEFAULT_REGION``).
            access_key_id: S3 access key. When any credential option is given, only the
                given ones are used; otherwise ``AWS_ACCESS_KEY_ID``,
                ``AWS_SECRET_ACCESS_KEY`` and ``AWS_SESSION_TOKEN`` are read.
            secret_access_key: S3 secret key.
            session_token: S3 session token.
            allow_http: Allow a plain ``http://`` endpoint (default: ``AWS_ALLOW_HTTP``,
                else true exactly when the endpoint is ``http://``).
            max_retries: How often a failing object-store request is retried before taquba
                reports `StorageUnavailable` (finite, so a misconfigured store fails instead
                of hanging).

        Returns:
            The store.

        Raises:
            InvalidStoreUrl: The URL or an option cannot be used, or ``taquba[s3]`` is not
                installed for an ``s3://`` URL.
        """
        retries = check_retries(max_retries)
        text = os.fspath(url)
        if not isinstance(text, str):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise InvalidStoreUrl(f"store URL must be a str or path, not {type(url).__name__}")
        text = text.strip()
        if not text:
            raise InvalidStoreUrl("store URL is empty")
        if "\x00" in text:
            raise InvalidStoreUrl("store URL contains a NUL character")
        s3_options: dict[str, object] = {
            "endpoint": endpoint,
            "region": region,
            "access_key_id": access_key_id,
            "secret_access_key": secret_access_key,
            "session_token": session_token,
            "allow_http": allow_http,
        }
        match = _SCHEME.match(text)
        scheme = match.group(1).lower() if match and len(match.group(1)) > 1 else None
        if scheme != "s3":
            given = sorted(k for k, v in s3_options.items() if v is not None)
            if given:
                raise InvalidStoreUrl(
                    f"{', '.join(given)} only apply to s3:// stores, not {text!r}"
                )
        if scheme is None:
            if "://" in text:
                raise InvalidStoreUrl(f"not a store URL or directory path: {text!r}")
            return cls._file(os.path.abspath(os.path.expanduser(text)), retries)
        if scheme == "memory":
            if text[len("memory:") :] not in ("//", "///"):
                raise InvalidStoreUrl(f"a memory store URL is just 'memory://', not {text!r}")
            return cls.memory(max_retries=retries)
        if scheme == "file":
            return cls._file(file_url_path(text), retries)
        if scheme == "s3":
            config = s3_config(
                text,
                endpoint=endpoint,
                region=region,
                access_key_id=access_key_id,
                secret_access_key=secret_access_key,
                session_token=session_token,
                allow_http=allow_http,
            )
            return cls._s3(config, retries)
        raise InvalidStoreUrl(
            f"unsupported store URL scheme {scheme!r} in {text!r} "
            "(use memory://, file:///dir, a directory path, or s3://bucket/prefix)"
        )

    @classmethod
    def _new(cls, kind: StoreKind, url: str, max_retries: int, *, db_root: str) -> Store:
        store = cls(_PRIVATE)
        store._kind = kind
        store._url = url
        store._max_retries = max_retries
        store._db_root = db_root
        store._local_root = None
        store._in_memory_fs = False
        store._s3_config = None
        return store

    @classmethod
    def _file(cls, root: str, max_retries: int) -> Store:
        try:
            os.makedirs(root, exist_ok=True)
        except OSError as exc:
            raise InvalidStoreUrl(f"cannot use directory {root!r} as a store: {exc}") from exc
        object_store, db_root = _adapter.local_object_store(root)
        store = cls._new("file", path_uri(root), max_retries, db_root=db_root)
        store._local_root = root
        store._blob_root = os.path.join(root, _BLOB_DIR)
        store._blob_fs = DirFileSystem(path=store._blob_root, fs=LocalFileSystem(auto_mkdir=True))
        _adapter.attach_object_store(store, object_store)
        return store

    @classmethod
    def _s3(cls, config: S3Config, max_retries: int) -> Store:
        try:
            import s3fs
        except ImportError as exc:
            raise InvalidStoreUrl(
                "s3:// stores need the s3 extra: pip install 'taquba[s3]'"
            ) from exc
        url = f"s3://{config.bucket}" + (f"/{config.prefix}" if config.prefix else "")
        root = f"{config.bucket}/{config.prefix}" if config.prefix else config.bucket
        store = cls._new("s3", url, max_retries, db_root=config.prefix)
        store._s3_config = config
        client_kwargs: dict[str, Any] = {}
        if config.region is not None:
            client_kwargs["region_name"] = config.region
        s3: Any = s3fs.S3FileSystem(
            key=config.access_key_id,
            secret=config.secret_access_key,
            token=config.session_token,
            endpoint_url=config.endpoint,
            client_kwargs=client_kwargs,
            config_kwargs={
                "retries": {"max_attempts": max_retries + 1, "mode": "standard"},
                "connect_timeout": 10,
            },
            use_listings_cache=False,
            skip_instance_cache=True,
        )
        s3.retries = max_retries + 1  # s3fs's own retry loop (a class attribute, default 5)
        store._blob_root = f"{root}/{_BLOB_DIR}"
        store._blob_fs = DirFileSystem(path=store._blob_root, fs=s3)
        try:
            object_store = _adapter.s3_object_store(config.object_store_config())
        except StorageError as exc:
            raise InvalidStoreUrl(f"cannot configure S3 store {url}: {exc}") from exc
        _adapter.attach_object_store(store, object_store)
        return store

    # ----------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The store's URL, normalised (``memory://``, ``file:///abs/dir``, ``s3://b/p``)."""
        return self._url

    @property
    def kind(self) -> StoreKind:
        """What the store is backed by: ``"memory"``, ``"file"`` or ``"s3"``."""
        return self._kind

    @property
    def max_retries(self) -> int:
        """Object-store retries before a call fails with `StorageUnavailable`."""
        return self._max_retries

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        """An fsspec filesystem rooted at the store's blob namespace (``<root>/blobs``).

        For advanced use (streaming large blobs, custom layouts). ``store.fs.cat_file("a/b")``
        reads the same object as ``await store.get_blob("a/b")``. Its calls block: run them
        in a worker thread from async code.
        """
        blob_fs: fsspec.AbstractFileSystem = self._blob_fs
        return blob_fs

    def __repr__(self) -> str:
        return f"Store({self._url!r})"

    def db_path(self, name: str) -> str:
        """Return where the queue database `name` lives inside the store.

        The path is relative to the SlateDB object store the `Store` builds:
        ``[<prefix>/]db/<name>``, where ``%`` and ``/`` in the name are percent-encoded (and
        a name of only dots has its dots encoded) so that every queue name maps to its own
        single path segment. SlateDB escapes further characters in object names itself.

        Raises:
            InvalidQueueName: The name is empty.
        """
        if not name:
            raise InvalidQueueName(name, "the name is empty")
        segment = name.replace("%", "%25").replace("/", "%2F")
        if segment in (".", ".."):
            segment = segment.replace(".", "%2E")
        parts = [self._db_root, _DB_DIR, segment] if self._db_root else [_DB_DIR, segment]
        return "/".join(parts)

    async def check(self) -> None:
        """Check that the store can be used, and say what is wrong if it cannot.

        One cheap request: an S3 store lists at most one key of its prefix; a local store
        checks that its directories are directories it may write in; a memory store always
        passes. `open_queue` and `open_reader` run it before opening the database, so a
        misconfiguration fails fast with a message a person can act on.

        Raises:
            StorageMisconfigured: The bucket does not exist, no credentials were found or they
                were refused, or a path of the store is a file or not writable. Permanent.
            StorageUnavailable: The store did not answer (e.g. the S3 endpoint is
                unreachable). Transient: a server that is down may come back.
        """
        if self._kind == "memory":
            await trio.lowlevel.checkpoint()
            return
        await self._blob_call(self._check_sync, abandon_on_cancel=True)

    def _check_sync(self) -> None:
        if self._local_root is not None:
            check_local_root(self._local_root, _DB_DIR)
            return
        config = self._s3_config
        assert config is not None
        s3: Any = self._blob_fs.fs
        request = {"Bucket": config.bucket, "Prefix": self._db_root, "MaxKeys": 1}
        _fsspec_sync(s3.loop, s3._call_s3, "list_objects_v2", **request)

    # ----------------------------------------------------------------------------------------
    # Blobs

    async def put_blob(self, path: str, data: bytes, *, create_only: bool = False) -> bool:
        """Write the blob at `path` (relative to the blob namespace, ``/``-separated).

        Writes are atomic: readers see the old blob or the whole new one.

        Args:
            path: The blob's path, e.g. ``"payloads/01J.../body"``.
            data: Its content.
            create_only: Write only if no blob exists at `path` (an atomic, conditional
                create on S3 and local disk).

        Returns:
            True if written; False if `create_only` and the blob already existed.

        Raises:
            StorageUnavailable: The object store failed; the write may or may not have
                landed.
        """
        key = _blob_path(path)
        content = bytes(data)
        return await self._blob_call(self._put_sync, key, content, create_only)

    async def get_blob(self, path: str) -> bytes | None:
        """Return the content of the blob at `path`, or None if there is none."""
        key = _blob_path(path)
        return await self._blob_call(self._get_sync, key, abandon_on_cancel=True)

    async def delete_blob(self, path: str) -> bool:
        """Delete the blob at `path`; return whether there was one."""
        key = _blob_path(path)
        return await self._blob_call(self._delete_sync, key)

    async def list_blobs(
        self, directory: str, *, start_after: str | None = None, limit: int | None = None
    ) -> list[str]:
        """List the blobs under `directory`, recursively, sorted by name.

        Listing respects path segments: ``list_blobs("run-1")`` returns blobs under
        ``run-1/`` and never those under ``run-10/``. On S3 and local stores a page costs
        about what it returns: names before `start_after` are skipped by the store (S3
        ``StartAfter``) or by directory, and listing stops at `limit`.

        Args:
            directory: A blob directory (``/``-separated); ``""`` for the whole namespace.
            start_after: Return only names sorting after this one (for paging).
            limit: Return at most this many names.

        Returns:
            Blob names relative to `directory` (e.g. ``"a/b"`` for ``<directory>/a/b``).
        """
        if limit is not None and limit < 0:
            raise UsageError(f"limit must be >= 0, not {limit}")
        base = _blob_path(directory.strip("/")) if directory.strip("/") else ""
        if limit == 0:
            await trio.lowlevel.checkpoint()
            return []
        return await self._blob_call(
            self._list_sync, base, start_after, limit, abandon_on_cancel=True
        )

    async def _blob_call(
        self,
        fn: Callable[[*_Ts], _R],
        *args: *_Ts,
        abandon_on_cancel: bool = False,
    ) -> _R:
        try:
            return await trio.to_thread.run_sync(
                lambda: fn(*args), abandon_on_cancel=abandon_on_cancel
            )
        except StorageError:
            raise
        except Exception as exc:
            error = self._storage_error(exc)
            if error is exc:
                raise
            raise error from exc

    def _storage_error(self, exc: Exception) -> Exception:
        """Taquba's error for an exception of a blob call or a check (see `storage_error`)."""
        return storage_error(exc, self._s3_config, self._url)

    def _put_sync(self, key: str, data: bytes, create_only: bool) -> bool:
        if self._local_root is not None:
            return local_put(self._blob_root, key, data, create_only=create_only)
        mode = "create" if create_only else "overwrite"
        try:
            if self._in_memory_fs:
                with _memory_fs_locked():
                    self._blob_fs.pipe_file(key, data, mode=mode)
            else:
                self._blob_fs.pipe_file(key, data, mode=mode)
        except FileExistsError:
            if create_only:
                return False
            raise
        except OSError as exc:
            if create_only and is_precondition_failed(exc):
                return False
            raise
        return True

    def _get_sync(self, key: str) -> bytes | None:
        try:
            data: bytes = self._blob_fs.cat_file(key)
        except (FileNotFoundError, IsADirectoryError):
            return None
        return data

    def _delete_sync(self, key: str) -> bool:
        if self._local_root is not None:
            try:
                os.unlink(os.path.join(self._blob_root, *key.split("/")))
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                return False
            return True
        if self._in_memory_fs:
            with _memory_fs_locked():
                return self._delete_fs(key)
        return self._delete_fs(key)

    def _delete_fs(self, key: str) -> bool:
        try:
            info: dict[str, Any] = self._blob_fs.info(key)
        except FileNotFoundError:
            return False
        if info.get("type") != "file":
            return False
        try:
            self._blob_fs.rm_file(key)
        except FileNotFoundError:
            return False
        return True

    def _list_sync(self, base: str, start_after: str | None, limit: int | None) -> list[str]:
        """The sorted names under `base` after `start_after`, at most `limit` of them.

        Local and S3 stores skip what sorts before `start_after` (directories it is past, S3
        ``StartAfter``) and stop at `limit`, so a paged listing costs what it returns; the
        memory store filters a full listing.
        """
        if self._local_root is not None:
            return local_list(self._blob_root, base, start_after, limit)
        if self._kind == "s3" and hasattr(self._blob_fs.fs, "_call_s3"):
            return self._list_s3(base, start_after, limit)
        names = self._list_all(base)  # memory, or an s3fs without the private call
        if start_after is not None:
            names = [name for name in names if name > start_after]
        return names if limit is None else names[:limit]

    def _list_s3(self, base: str, start_after: str | None, limit: int | None) -> list[str]:
        s3: Any = self._blob_fs.fs
        bucket, _, root = self._blob_root.partition("/")
        prefix = f"{root}/{base}/" if base else f"{root}/"
        request: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
        if start_after is not None:
            request["StartAfter"] = prefix + start_after
        names: list[str] = []
        while limit is None or len(names) < limit:
            want = _S3_LIST_PAGE if limit is None else min(_S3_LIST_PAGE, limit - len(names))
            request["MaxKeys"] = want
            # One ListObjectsV2 page through s3fs's client (its retries and error mapping);
            # s3fs's own listing calls cannot start after a key.
            page: Any = _fsspec_sync(s3.loop, s3._call_s3, "list_objects_v2", **request)
            for item in page.get("Contents", []):
                name = str(item["Key"])[len(prefix) :]
                if name.endswith("/"):
                    continue  # a "directory" marker object, not a blob
                if name and not name.rsplit("/", 1)[-1].startswith(TMP_PREFIX):
                    names.append(name)
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                break
            request["ContinuationToken"] = token
        return names if limit is None else names[:limit]

    def _list_all(self, base: str) -> list[str]:
        try:
            if self._in_memory_fs:
                # fsspec's memory filesystem iterates a plain dict that blob writes in other
                # worker threads change ("dictionary changed size during iteration").
                with _memory_fs_locked():
                    found: list[str] = self._blob_fs.find(base)
            else:
                found = self._blob_fs.find(base)
        except FileNotFoundError:
            return []
        lead = f"{base}/" if base else ""
        names: list[str] = []
        for raw in found:
            name = raw.lstrip("/")
            if not name.startswith(lead):
                continue  # e.g. `base` itself, or a sibling sharing its prefix
            relative = name[len(lead) :]
            if relative and not relative.rsplit("/", 1)[-1].startswith(TMP_PREFIX):
                names.append(relative)
        names.sort()
        return names


_PRIVATE: Final = object()

_S3_LIST_PAGE = 1000
"""Keys asked for per ListObjectsV2 request (S3's own maximum)."""

_MEMORY_FS_LOCK: Final = threading.Lock()
"""Serialises blob calls on fsspec's memory filesystem, whose one dict every memory store shares."""

_DEAD_MEMORY_ROOTS: Final[deque[tuple[Any, str]]] = deque()
"""Blob roots of garbage-collected memory stores, removed by the next locked blob call.

A finalizer runs wherever the garbage collector happens to run: in the middle of another
thread's listing, or inside an allocation of a thread that holds `_MEMORY_FS_LOCK`. It must not
touch the shared dict (that was a "dictionary changed size during iteration" in CI), nor take
the lock (that could deadlock), so it only queues the root here.
"""


@contextmanager
def _memory_fs_locked() -> Generator[None]:
    """Hold `_MEMORY_FS_LOCK`, first removing the blobs of memory stores since collected."""
    with _MEMORY_FS_LOCK:
        while _DEAD_MEMORY_ROOTS:
            memory, root = _DEAD_MEMORY_ROOTS.popleft()
            with suppress(Exception):
                memory.rm(root, recursive=True)
        yield


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _blob_path(path: str) -> str:
    """Validate a blob path: relative, ``/``-separated, no empty, ``.`` or ``..`` segments."""
    if not isinstance(path, str) or not path:  # pyright: ignore[reportUnnecessaryIsInstance]
        raise UsageError(f"a blob path must be a non-empty str, not {path!r}")
    if "\x00" in path:
        raise UsageError(f"a blob path cannot contain NUL: {path!r}")
    for segment in path.split("/"):
        if segment in ("", ".", "..") or segment.startswith(TMP_PREFIX):
            raise UsageError(
                f"invalid blob path {path!r}: use relative '/'-separated names without "
                "empty, '.' or '..' segments"
            )
    return path


def _forget_memory_root(memory: Any, root: str) -> None:
    # A finalizer: queue only (see `_DEAD_MEMORY_ROOTS`); deque.append is atomic.
    _DEAD_MEMORY_ROOTS.append((memory, root))
