"""Helpers for testing code built on taquba: stores, clocks, queues, crashes, conformance.

- Queues: `memory_store` gives a private in-memory store; `MockClock` virtualises the queue's
  time; `open_test_queue` opens a queue tuned for tests (fast flushes, quick background
  ticks); `drain` runs a handler over a queue until it is idle; `ForwardingQueue` wraps a
  queue in a `taquba.QueueLike` with nothing but the protocol's members, to prove that a
  component needs no more (and so runs over a remote queue too).
- Crash tests: `open_child` runs a Python program in a child process whose stdout the test
  reads line by line (`Child`), and SIGKILLs it; `ChildExited` reports a child that ended
  early.
- Conformance: `check_public_api` checks that a package exports each public name once, from
  a private module, documented; `check_type_completeness` that pyright knows every type.
- API snapshots: `api_snapshot` renders a package's public names with their signatures as
  text, the same on every supported Python; `assert_api_snapshot` compares it with a
  committed file (`snapshot_diff` shows the difference), so a rename or a changed signature
  is a deliberate change of that file.
- Faults: `inject_faults` installs a `FaultInjector` that makes the storage adapter's writes
  slow, conflicting, failing or of unknown outcome, and its reads slow or failing, on purpose
  (`Fault`), so a test can prove that nothing is lost or hidden when storage misbehaves.
- S3: `moto_s3` runs an S3-compatible moto server on loopback and yields the `S3Options`
  that reach it.
- Fixtures: the pytest plugin `taquba.testing.pytest_plugin` (opt in with
  ``pytest_plugins = ["taquba.testing.pytest_plugin"]``) provides memory, local-disk and S3
  (moto) stores, and a ``store`` fixture parametrized over the three.

Importing `taquba.testing` does not import pytest; only the plugin module does.
"""

from .. import fixup_module_metadata as _fixup_module_metadata
from .._clock import MockClock as MockClock
from .._failpoints import FaultKind as FaultKind
from ._api_snapshot import api_snapshot as api_snapshot
from ._api_snapshot import assert_api_snapshot as assert_api_snapshot
from ._api_snapshot import snapshot_diff as snapshot_diff
from ._child import Child as Child
from ._child import ChildExited as ChildExited
from ._child import open_child as open_child
from ._faults import Fault as Fault
from ._faults import FaultInjector as FaultInjector
from ._faults import InjectedFault as InjectedFault
from ._faults import inject_faults as inject_faults
from ._forwarding import ForwardingQueue as ForwardingQueue
from ._moto import S3Options as S3Options
from ._moto import moto_s3 as moto_s3
from ._public_api import check_public_api as check_public_api
from ._public_api import check_type_completeness as check_type_completeness
from ._queues import drain as drain
from ._queues import memory_store as memory_store
from ._queues import open_test_queue as open_test_queue

__all__ = [
    "Child",
    "ChildExited",
    "Fault",
    "FaultInjector",
    "FaultKind",
    "ForwardingQueue",
    "InjectedFault",
    "MockClock",
    "S3Options",
    "api_snapshot",
    "assert_api_snapshot",
    "check_public_api",
    "check_type_completeness",
    "drain",
    "inject_faults",
    "memory_store",
    "moto_s3",
    "open_child",
    "open_test_queue",
    "snapshot_diff",
]

_fixup_module_metadata(__name__, globals())
