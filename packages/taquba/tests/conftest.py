"""Shared fixtures: stores of every kind, from `taquba.testing.pytest_plugin`.

- ``memory_store``, ``file_store`` (under ``tmp_path``), ``s3_store`` (a fresh key prefix per
  test in one bucket of a session-wide moto server on loopback);
- ``store``: parametrized over the three, with ids ``memory``, ``file`` and ``s3``;
- ``s3_url`` and ``s3_options``: a fresh key prefix and the keyword options that reach the
  moto server, for tests that build more S3 stores (e.g. reopening the same URL as another
  process would).

And, here: ``block_misses``, a counter of SlateDB's data-block cache misses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

pytest_plugins = ["taquba.testing.pytest_plugin"]


@pytest.fixture
def block_misses(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Callable[[], int]]:
    """``block_misses("DbBuilder")`` (or ``"DbReaderBuilder"``): from then on, every database
    built with that binding builder records SlateDB's metrics; returns a function that counts
    the data-block cache misses recorded so far."""
    import slatedb.uniffi as sdb

    def install(builder: str) -> Callable[[], int]:
        recorder = sdb.DefaultMetricsRecorder()
        base: Any = getattr(sdb, builder)

        class Recorded(base):
            def __init__(self, path: str, store: Any) -> None:
                super().__init__(path, store)
                self.with_metrics_recorder(recorder)

        monkeypatch.setattr(sdb, builder, Recorded)

        def misses() -> int:
            return sum(
                metric.value[0]  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType]
                for metric in recorder.metrics_by_name("slatedb.db_cache.access_count")
                if {(label.key, label.value) for label in metric.labels}
                >= {("entry_kind", "data_block"), ("result", "miss")}
            )

        return misses

    return install
