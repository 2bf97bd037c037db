"""SlateDB object stores: how a `taquba.Store` reaches its bytes.

Each `Store` gets one SlateDB `ObjectStore` when it is created (`attach_object_store`);
`Database.open` and `Reader.open` look it up. The rest of taquba treats it as opaque.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Final

import slatedb.uniffi as _sdb

from taquba._dberrors import map_errors
from taquba._errors import InvalidStoreUrl, StorageError

if TYPE_CHECKING:
    from taquba._store import Store

__all__ = [
    "ObjectStore",
    "attach_object_store",
    "local_object_store",
    "memory_object_store",
    "object_store_of",
    "s3_object_store",
]

ObjectStore = _sdb.ObjectStore
"""SlateDB's object-store handle (opaque to the rest of taquba)."""


_OBJECT_STORES: weakref.WeakKeyDictionary[Store, _sdb.ObjectStore] = weakref.WeakKeyDictionary()


def memory_object_store() -> _sdb.ObjectStore:
    """A fresh in-memory object store, private to its caller."""
    with map_errors():
        return _sdb.ObjectStoreBuilder(_sdb.ObjectStoreType.IN_MEMORY).build()


# SlateDB's local store takes its root from a URL path without percent-decoding it, so a root
# holding a character the URL parser escapes cannot be used that way. Object paths inside a
# store are escaped too (``%``, ``~``, non-ASCII, ...), so such characters cannot go into the
# database path either. Each way handles characters the other cannot.
_URL_ESCAPED: Final = frozenset(' "#<>?`{}\\')
_PATH_ESCAPED: Final = frozenset('%`[]"<>#|\\{^}*?~')


def _plain(text: str, escaped: frozenset[str]) -> bool:
    return all(" " <= char <= "~" and char not in escaped for char in text)


def local_object_store(root: str) -> tuple[_sdb.ObjectStore, str]:
    """A local-filesystem object store for the absolute directory `root` (must exist).

    Returns:
        The object store and the path of `root` inside it, to prefix database paths with
        (empty when the store is rooted at `root` itself).

    Raises:
        InvalidStoreUrl: SlateDB cannot address a directory with this name.
    """
    if _plain(root, _URL_ESCAPED):
        with map_errors():
            return _sdb.ObjectStoreBuilder.from_url(f"file://{root}").build(), ""
    if _plain(root, _PATH_ESCAPED):
        with map_errors():
            return _sdb.ObjectStoreBuilder.from_url("file:///").build(), root.strip("/")
    raise InvalidStoreUrl(
        f"SlateDB cannot use the directory {root!r}: its path mixes characters its local "
        'store escapes (non-ASCII, or one of space and "#<>?`{}|[]%~*^\\ in a combination '
        "it cannot handle); choose a plainer path"
    )


def s3_object_store(config: dict[str, str]) -> _sdb.ObjectStore:
    """An S3 object store built only from `config` (``object_store`` S3 keys), not the env."""
    with map_errors():
        builder = _sdb.ObjectStoreBuilder(_sdb.ObjectStoreType.S3)
        for key, value in config.items():
            builder.with_config(key, value)
        return builder.build()


def attach_object_store(store: Store, object_store: _sdb.ObjectStore) -> None:
    """Remember `object_store` as the SlateDB side of `store` (for `Database.open`)."""
    _OBJECT_STORES[store] = object_store


def object_store_of(store: Store) -> _sdb.ObjectStore:
    """The object store attached to `store`."""
    object_store = _OBJECT_STORES.get(store)
    if object_store is None:  # pragma: no cover - every Store attaches one
        raise StorageError(f"{store!r} has no SlateDB object store")
    return object_store
