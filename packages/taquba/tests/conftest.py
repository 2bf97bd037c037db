"""Shared fixtures: stores of every kind, from `taquba.testing.pytest_plugin`.

- ``memory_store``, ``file_store`` (under ``tmp_path``), ``s3_store`` (a fresh key prefix per
  test in one bucket of a session-wide moto server on loopback);
- ``store``: parametrized over the three, with ids ``memory``, ``file`` and ``s3``;
- ``s3_url`` and ``s3_options``: a fresh key prefix and the keyword options that reach the
  moto server, for tests that build more S3 stores (e.g. reopening the same URL as another
  process would).
"""

pytest_plugins = ["taquba.testing.pytest_plugin"]
