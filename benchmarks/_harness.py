"""Shared plumbing of the benchmark scripts: flags, stores, statistics, tables, RESULTS.md.

Every benchmark module defines ``NAME``, ``DESCRIPTION``, ``add_arguments(parser)`` and
``async run(ctx) -> Report``. The runner (``python -m benchmarks NAME``) parses the common
flags added here, builds a `Context` (stores, moto, the raw ceiling) and records the report.

Every flag also reads a default from the environment: ``--flush-interval`` from
``BENCH_FLUSH_INTERVAL``, ``--jobs`` from ``BENCH_JOBS`` and so on (upper-cased, dashes to
underscores, ``BENCH_`` prefix).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from taquba import Store

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
RESULTS_MARKER = "<!-- Entries are inserted below this line, newest first. -->"
MOTO_BUCKET = "taquba-bench"
MOTO_REGION = "us-east-1"


# --------------------------------------------------------------------------------------------
# Flags
# --------------------------------------------------------------------------------------------


def env_default(flag: str, default: Any) -> Any:
    """The default of ``--flag``: ``BENCH_FLAG`` from the environment, else ``default``."""
    name = "BENCH_" + flag.lstrip("-").upper().replace("-", "_")
    raw = os.environ.get(name)
    if raw is None:
        return default
    if isinstance(default, bool):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return raw


def add(parser: Any, flag: str, default: Any, help_text: str, **kw: Any) -> None:
    """Add ``--flag`` whose default may come from ``BENCH_FLAG``; the help shows both."""
    value = env_default(flag, default)
    name = "BENCH_" + flag.lstrip("-").upper().replace("-", "_")
    if isinstance(default, bool):
        parser.add_argument(
            flag, action=argparse.BooleanOptionalAction, default=value, help=f"{help_text} [{name}]"
        )
        return
    kind = kw.pop("type", type(default) if default is not None else str)
    parser.add_argument(
        flag, type=kind, default=value, help=f"{help_text} (default {default}) [{name}]", **kw
    )


def int_list(text: str) -> list[int]:
    """Parse ``"1,8,64"`` (``k``/``m`` suffixes allowed: ``"64,1k,4m"``, binary units)."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip().lower()
        if not part:
            continue
        scale = 1
        if part[-1] in "km":
            scale = 1024 if part[-1] == "k" else 1024 * 1024
            part = part[:-1]
        out.append(int(float(part) * scale))
    return out


def add_common(parser: argparse.ArgumentParser) -> None:
    """The flags every benchmark takes."""
    group = parser.add_argument_group("store and recording")
    add(group, "--store", "file", "memory, file (a temp dir on local disk) or s3://bucket/prefix")
    add(group, "--store-dir", "", "parent directory of the temp dir of --store file")
    add(group, "--s3-endpoint", "", "S3 endpoint URL (e.g. http://127.0.0.1:5000)")
    add(group, "--s3-region", MOTO_REGION, "S3 region")
    add(group, "--s3-access-key", "", "S3 access key (else AWS_ACCESS_KEY_ID)")
    add(group, "--s3-secret-key", "", "S3 secret key (else AWS_SECRET_ACCESS_KEY)")
    add(
        group,
        "--moto",
        False,
        "start an in-process moto S3 server on 127.0.0.1 (implies --store s3://taquba-bench/b "
        "unless --store is s3://); it shares this process's GIL, so it measures function only",
    )
    add(group, "--flush-interval", 0.01, "SlateDB WAL flush interval in seconds")
    add(
        group,
        "--ceiling",
        0.0,
        "raw durable-commit ceiling in txn/s to report ratios against; 0 measures it first",
    )
    add(group, "--ceiling-seconds", 3.0, "length of the ceiling measurement")
    add(group, "--record", True, "append the result to benchmarks/RESULTS.md (--no-record: skip)")
    add(group, "--keep", False, "keep the temp directory of --store file")


# --------------------------------------------------------------------------------------------
# Stores
# --------------------------------------------------------------------------------------------


class Stores:
    """Hands out fresh, isolated stores of the kind the flags ask for.

    ``memory``: a new `Store.memory()` each time. ``file``: a new subdirectory of one temp
    directory. ``s3://bucket/prefix``: a new key prefix under ``prefix/<run id>``.
    Each store is also described by a JSON-able spec a child process can rebuild it from.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.kind: str
        self._moto: contextlib.ExitStack | None = None
        self._tmp: str | None = None
        self._keep = bool(args.keep)
        self._run = f"{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
        self._s3_options: dict[str, Any] = {}
        self._counter = 0
        store = str(args.store)
        if args.moto:
            if not store.startswith("s3://"):
                store = f"s3://{MOTO_BUCKET}/b"
            self._start_moto(store)
        if store == "memory":
            self.kind = "memory"
        elif store == "file":
            self.kind = "file"
            self._tmp = tempfile.mkdtemp(prefix="taquba-bench-", dir=args.store_dir or None)
        elif store.startswith("s3://"):
            self.kind = "s3"
            self._s3_base = store.rstrip("/")
            if not self._moto:
                options: dict[str, Any] = {"region": args.s3_region}
                if args.s3_endpoint:
                    options["endpoint"] = args.s3_endpoint
                if args.s3_access_key:
                    options["access_key_id"] = args.s3_access_key
                    options["secret_access_key"] = args.s3_secret_key
                self._s3_options = options
        else:
            raise SystemExit(f"--store must be memory, file or s3://..., not {store!r}")
        self.description = {
            "memory": "memory",
            "file": f"file (local disk, {self._tmp})",
            "s3": f"s3 {getattr(self, '_s3_base', '')}"
            + (" (in-process moto on loopback)" if self._moto else ""),
        }[self.kind]

    def _start_moto(self, url: str) -> None:
        from taquba.testing import moto_s3

        bucket = url.removeprefix("s3://").split("/", 1)[0]
        self._moto = contextlib.ExitStack()
        self._s3_options = dict(self._moto.enter_context(moto_s3(bucket)))

    def spec(self, label: str) -> dict[str, Any]:
        """A fresh store's description: ``{"url": ..., "options": {...}}``."""
        self._counter += 1
        name = f"{label}-{self._counter}"
        if self.kind == "memory":
            return {"url": "memory://", "options": {}}
        if self.kind == "file":
            assert self._tmp is not None
            return {"url": os.path.join(self._tmp, name), "options": {}}
        return {"url": f"{self._s3_base}/{self._run}/{name}", "options": dict(self._s3_options)}

    def make(self, label: str) -> Store:
        """A fresh, empty store."""
        return store_from_spec(self.spec(label))

    def close(self) -> None:
        if self._tmp is not None and not self._keep:
            shutil.rmtree(self._tmp, ignore_errors=True)
        if self._moto is not None:
            self._moto.close()


def store_from_spec(spec: dict[str, Any]) -> Store:
    from taquba import Store

    if spec["url"] == "memory://":
        return Store.memory()
    return Store.from_url(spec["url"], **spec["options"])


def dir_bytes(path: str | os.PathLike[str]) -> int:
    """Total size of the regular files under ``path``."""
    total = 0
    for base, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(base, name)).st_size
    return total


def proc_write_chars() -> int | None:
    """Bytes this process has handed to write()-like syscalls (``/proc/self/io`` wchar)."""
    try:
        with open("/proc/self/io") as f:
            for line in f:
                if line.startswith("wchar:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


# --------------------------------------------------------------------------------------------
# Statistics and tables
# --------------------------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    data = sorted(values)
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def ms(seconds: float | None) -> str:
    """Seconds as milliseconds with 3 significant figures ("-" for NaN)."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "-"
    value = seconds * 1000.0
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def rate(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def ratio(value: float | None, ceiling: float | None) -> str:
    if not ceiling or math.isnan(ceiling) or value is None or math.isnan(value):
        return "-"
    return f"{value / ceiling:.2f}"


def size(nbytes: float) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            value = nbytes / scale
            return f"{value:g} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{nbytes:.0f} B"


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list[list[str]])

    def add(self, *cells: object) -> None:
        self.rows.append([str(c) for c in cells])

    def render(self) -> str:
        widths = [len(h) for h in self.headers]
        for row in self.rows:
            for i, cell in enumerate(row):
                widths[i] = max(widths[i], len(cell))

        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

        out = [line(self.headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        out += [line(r) for r in self.rows]
        return "\n".join(out)


@dataclass
class Report:
    """What a benchmark prints and records."""

    name: str
    params: dict[str, Any]
    tables: list[Table] = field(default_factory=list[Table])
    headline: list[str] = field(default_factory=list[str])
    notes: list[str] = field(default_factory=list[str])

    def table(self, title: str, *headers: str) -> Table:
        table = Table(title, list(headers))
        self.tables.append(table)
        return table


# --------------------------------------------------------------------------------------------
# Environment and recording
# --------------------------------------------------------------------------------------------


def git_stamp() -> str:
    """``HEAD``'s short hash plus ``-dirty`` if the work tree has changes (read-only git)."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # never rewrite the index
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short=10", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            env=env,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            env=env,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def loadavg() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "?"
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def versions() -> str:
    parts: list[str] = []
    for dist in ("slatedb", "trio", "taquba"):
        try:
            parts.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            parts.append(f"{dist} ?")
    return ", ".join(parts)


def bridge() -> str:
    from taquba import _adapter

    return f"bridge {_adapter.BRIDGE}, byte-copy patch {'on' if _adapter.BYTES_PATCHED else 'off'}"


@dataclass
class Context:
    """What a benchmark gets: its flags, a store factory, and the ceiling."""

    args: argparse.Namespace
    stores: Stores
    flush: float
    ceiling: float | None = None
    ceiling_note: str = ""
    started: str = ""
    load_start: str = ""


def allocator() -> str:
    """The allocator settings of this process's environment (`LD_PRELOAD`, `MALLOC_*`), if any."""
    names = sorted(k for k in os.environ if k == "LD_PRELOAD" or k.startswith("MALLOC_"))
    return "".join(f"; {k}={os.environ[k]}" for k in names)


def render(ctx: Context, report: Report, elapsed: float, load_end: str) -> str:
    """The Markdown entry for RESULTS.md (also printed)."""
    stamp = git_stamp()
    where = f"{ctx.stores.kind}, flush {ctx.flush * 1000:g} ms"
    lines = [f"## {ctx.started} · `{report.name}` · {where} · `{stamp}`", ""]
    lines.append(
        f"- env: {os.cpu_count()} CPUs ({platform.machine()}), Python {platform.python_version()}, "
        f"{versions()} ({bridge()}); store {ctx.stores.description}; "
        f"flush interval {ctx.flush * 1000:g} ms{allocator()}"
    )
    lines.append(
        f"- load average at start {ctx.load_start}, at end {load_end}; run {elapsed:.0f} s"
    )
    if report.params:
        lines.append("- params: " + ", ".join(f"{k}={v}" for k, v in report.params.items()))
    if ctx.ceiling:
        lines.append(f"- ceiling: {rate(ctx.ceiling)} durable txn/s {ctx.ceiling_note}")
    lines.extend(f"- **{h}**" for h in report.headline)
    lines.append("")
    for table in report.tables:
        if table.title:
            lines += [f"{table.title}:", ""]
        lines += [table.render(), ""]
    lines.extend(f"- {note}" for note in report.notes)
    if report.notes:
        lines.append("")
    return "\n".join(lines)


def record(entry: str) -> None:
    """Insert ``entry`` at the top of RESULTS.md's log (after the marker)."""
    text = RESULTS.read_text() if RESULTS.exists() else ""
    if RESULTS_MARKER not in text:
        text = (
            "# Benchmark results\n\n"
            "Append-only log written by `python -m benchmarks NAME`; newest first. "
            "See README.md for what each benchmark measures.\n\n" + RESULTS_MARKER + "\n"
        )
    head, tail = text.split(RESULTS_MARKER, 1)
    RESULTS.write_text(head + RESULTS_MARKER + "\n\n" + entry.rstrip() + "\n" + tail)


# --------------------------------------------------------------------------------------------
# Timing helpers used by several benchmarks
# --------------------------------------------------------------------------------------------


def now() -> float:
    return time.perf_counter()


class Windows:
    """Per-window counters and latency samples over a run (``window`` seconds each).

    Samples are kept as C doubles (8 bytes each, not a float object each): a soak's millions
    of samples must not show up as the measured process's RSS growth.
    """

    def __init__(self, start: float, window: float = 1.0) -> None:
        self.start = start
        self.window = window
        self.counts: dict[tuple[int, str], int] = {}
        self.samples: dict[tuple[int, str], array[float]] = {}
        self.gauges: dict[tuple[int, str], float] = {}

    def index(self, t: float | None = None) -> int:
        return int(((time.perf_counter() if t is None else t) - self.start) // self.window)

    def count(self, what: str, n: int = 1, t: float | None = None) -> None:
        key = (self.index(t), what)
        self.counts[key] = self.counts.get(key, 0) + n

    def sample(self, what: str, value: float, t: float | None = None) -> None:
        key = (self.index(t), what)
        window = self.samples.get(key)
        if window is None:
            window = self.samples[key] = array("d")
        window.append(value)

    def gauge(self, what: str, value: float, t: float | None = None) -> None:
        self.gauges[(self.index(t), what)] = value

    def get_samples(self, what: str, first: int, last: int) -> list[float]:
        out: list[float] = []
        for i in range(first, last + 1):
            out.extend(self.samples.get((i, what), []))
        return out

    def get_count(self, what: str, first: int, last: int) -> int:
        return sum(self.counts.get((i, what), 0) for i in range(first, last + 1))


async def raw_durable_txns(
    db: Any, concurrency: int, seconds: float, *, value_size: int = 200
) -> tuple[int, float, list[float]]:
    """Run ``concurrency`` tasks of begin/get/put/commit+durable for ``seconds``.

    Returns (transactions, elapsed seconds, per-transaction latencies). ``db`` is a
    `taquba._adapter.Database`; each task works on its own keys (no conflicts).
    """
    value = os.urandom(value_size)
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        i = 0
        while time.perf_counter() < deadline:
            key = b"limit/%03d/%08d" % (w, i % 1000)
            start = time.perf_counter()
            txn = await db.begin()
            await txn.get(key)
            await txn.put(key, value)
            await txn.commit(durable=True)
            latencies.append(time.perf_counter() - start)
            i += 1

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for w in range(concurrency):
            nursery.start_soon(worker, w)
    return len(latencies), time.perf_counter() - start, latencies


async def measure_ceiling(ctx: Context, seconds: float) -> float:
    """Raw durable txn/s at concurrency 64 on a fresh database of the benchmark's store kind."""
    from taquba._adapter import Database

    store = ctx.stores.make("ceiling")
    db = await Database.open(store, "ceiling", flush_interval=ctx.flush)
    try:
        await raw_durable_txns(db, 64, min(0.5, seconds))  # warm up
        n, elapsed, _ = await raw_durable_txns(db, 64, seconds)
    finally:
        await db.close()
    return n / elapsed


async def start_worker(
    nursery: trio.Nursery,
    queue: Any,
    name: str,
    handler: Any,
    *,
    concurrency: int,
    shutdown: trio.Event,
) -> None:
    """Start a `taquba.Worker` in ``nursery`` and wait until it is serving.

    Setting ``shutdown`` (one event may stop several workers) calls its `shutdown`.
    """
    import taquba

    worker = taquba.Worker(queue, name, handler, concurrency=concurrency, poll_interval=0.05)
    await nursery.start(worker.serve)

    async def stop_on_shutdown() -> None:
        await shutdown.wait()
        worker.shutdown()

    nursery.start_soon(stop_on_shutdown)


# --------------------------------------------------------------------------------------------
# Child processes (crash scenarios)
# --------------------------------------------------------------------------------------------


class Child:
    """A benchmark child process (``python -m benchmarks._child``), spoken to by lines."""

    def __init__(self, mode: str, spec: dict[str, Any], **params: Any) -> None:
        payload = json.dumps({"mode": mode, "store": spec, **params})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks._child", payload],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.info: dict[str, Any] = {}

    def wait_for(self, word: str, timeout: float = 600.0) -> dict[str, Any]:
        """Block until the child prints ``word {json}``; return the JSON."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"child exited ({self.proc.wait()}) before {word}")
            head, _, rest = line.strip().partition(" ")
            if head == word:
                self.info = json.loads(rest) if rest else {}
                return self.info
        raise TimeoutError(f"child did not say {word} within {timeout} s")

    def kill(self) -> None:
        self.proc.kill()  # SIGKILL
        self.proc.wait()

    def wait(self, timeout: float = 120.0) -> int:
        return self.proc.wait(timeout)


async def in_thread(fn: Callable[[], Any]) -> Any:
    return await trio.to_thread.run_sync(fn)


def run_main(main: Callable[[], Awaitable[Any]]) -> Any:
    return trio.run(main)
