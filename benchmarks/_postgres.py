"""A throwaway PostgreSQL cluster for the peer rounds of the benchmarks.

`TempPostgres` runs ``initdb`` into a temp directory and starts ``postgres`` on a Unix
socket only (no TCP), with the server's defaults for durability (``fsync`` and
``synchronous_commit`` on: a commit waits for its WAL to reach the disk, as a taquba enqueue
waits for its WAL flush). PostgreSQL refuses to run as root, so as root the cluster belongs to
the ``postgres`` user and its commands run through ``runuser``. The binaries are found on
``PATH`` (``initdb``, ``pg_ctl``); ``--pg-bin`` names their directory instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Self

PORT = 5432


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries here (or no user to run them as)."""


class TempPostgres:
    """One cluster for a run; `create_database` gives each round a fresh database."""

    def __init__(self, bin_dir: str = "", parent: str | None = None) -> None:
        self._bin = bin_dir
        self._parent = parent
        self._root: Path | None = None
        self._as: list[str] = []
        self.version = ""

    def _tool(self, name: str) -> str:
        if self._bin:
            path = Path(self._bin) / name
            if not path.exists():
                raise PostgresUnavailable(f"{path} does not exist")
            return str(path)
        found = shutil.which(name)
        if found is None:
            raise PostgresUnavailable(
                f"{name} is not on PATH: install the PostgreSQL server (Debian: postgresql) "
                "or pass --pg-bin"
            )
        return found

    def _run(self, *argv: str) -> str:
        done = subprocess.run(
            [*self._as, *argv], capture_output=True, text=True, check=False, cwd="/"
        )
        if done.returncode != 0:
            raise PostgresUnavailable(
                f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}"
            )
        return done.stdout

    def __enter__(self) -> Self:
        initdb, pg_ctl = self._tool("initdb"), self._tool("pg_ctl")
        postgres = self._tool("postgres")
        self._root = Path(tempfile.mkdtemp(prefix="taquba-bench-pg-", dir=self._parent))
        self._root.chmod(0o755)
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                raise PostgresUnavailable("running as root and runuser is missing")
            self._as = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self._root, "postgres")
        self.version = self._run(postgres, "--version").strip()
        data, socket = self._root / "data", self._root
        self._run(initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        options = f"-k {socket} -c listen_addresses='' -p {PORT} -c max_connections=200"
        log = self._root / "server.log"
        self._run(pg_ctl, "-D", str(data), "-o", options, "-l", str(log), "-w", "start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._root is None:
            return
        data = self._root / "data"
        try:
            self._run(self._tool("pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    def dsn(self, database: str) -> str:
        """A libpq URL for ``database`` over the cluster's Unix socket."""
        assert self._root is not None
        return f"postgresql://postgres@/{database}?host={self._root}&port={PORT}"

    def create_database(self, name: str) -> str:
        """Create an empty database and return its URL."""
        assert self._root is not None
        psql = self._tool("psql")
        self._run(
            psql,
            "-h",
            str(self._root),
            "-p",
            str(PORT),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            f'CREATE DATABASE "{name}"',
        )
        return self.dsn(name)
