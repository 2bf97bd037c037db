"""Ctrl-C: one SIGINT (or SIGTERM for the CLI) ends any taquba program, promptly and cleanly.

Real processes get real signals: a small app (``interrupt_child.py``) enqueues and works on a
local-disk store and gets SIGINT at random moments; the ``taquba`` command gets SIGINT and
SIGTERM in the middle of the demo. Every run must end within `EXIT_BOUND` seconds with the
expected status and no "Exception ignored" (a `KeyboardInterrupt` swallowed by ctypes inside
SlateDB's continuation, which used to leave a call that never completed), and the store must
reopen with every job whose enqueue the app reported as returned.
"""

from __future__ import annotations

import random
import re
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

import taquba
from taquba import _adapter, _cli, _interrupts
from taquba.testing import Child, open_child

CHILD = Path(__file__).with_name("interrupt_child.py")
EXIT_BOUND = 10.0
"""Seconds a signalled process may take to exit (they take well under one)."""
START_BOUND = 30.0
DB = "intr"  # must match interrupt_child.py
QUEUE = "w"

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX signals")


# ------------------------------------------------------------------------------ in process


def test_the_continuation_runs_ki_protected_when_rust_calls_it_on_the_trio_thread() -> None:
    """`_continue`, called through ctypes on the trio thread, must not take a raw KI.

    It is called here exactly as Rust calls it (through its ctypes function pointer), from an
    unprotected trio task; whatever it calls checks the protection trio would apply there.
    """
    seen: list[bool] = []

    class Probe:
        thread = threading.get_ident()

        def set_result(self, _code: int) -> None:
            seen.append(trio.lowlevel.currently_ki_protected())

    async def task() -> None:
        assert not trio.lowlevel.currently_ki_protected()
        handle = 2**62  # never handed out by the real counter
        _adapter._waiting_polls[handle] = Probe()  # type: ignore[assignment]
        _adapter._CONTINUE(handle, 0)

    trio.run(task)
    assert seen == [True]


# ------------------------------------------------------------------------------ the app


def enqueued(child: Child) -> list[str]:
    return [words[0] for words in child.tagged("ENQ") if words]


async def interrupt_once(
    store_dir: Path, mode: str, rng: random.Random, *, twice: bool = False
) -> tuple[Child, float]:
    """Run the app, SIGINT it at a random moment; return it (exited) and its exit time."""
    async with open_child(CHILD, mode, str(store_dir)) as child:
        with trio.fail_after(START_BOUND):
            await child.expect("READY")
            # Half the runs wait for some work first, so the signal lands mid-stream.
            if rng.random() < 0.5:
                want = rng.randint(1, 30)
                await child.read_until(lambda: len(enqueued(child)) >= want)
        await trio.sleep(rng.uniform(0.0, 0.3))
        child.process.send_signal(signal.SIGINT)
        sent = trio.current_time()
        if twice:
            await trio.sleep(rng.uniform(0.0, 0.05))
            if child.returncode is None:
                child.process.send_signal(signal.SIGINT)
        with trio.move_on_after(EXIT_BOUND) as bound:
            await child._read_to_end()  # pyright: ignore[reportPrivateUsage]
            code = await child.process.wait()
        if bound.cancelled_caught:
            raise AssertionError(
                f"no exit {EXIT_BOUND:g} s after SIGINT (a hang)\n{child.describe()}"
            )
        took = trio.current_time() - sent
    # A second SIGINT may land after taquba is done, while the app itself exits (between
    # `trio.run` returning and the app ignoring SIGINT): Python's default handler then ends
    # it by the signal. The store was closed all the same (CLOSED, checked by the caller).
    allowed = (130, -signal.SIGINT) if twice else (130,)
    assert code in allowed, child.describe()
    return child, took


# CPython's C signal handler writes each signal to trio's wakeup socket; a second SIGINT that
# lands while `trio.run` is tearing down (socket closed, wakeup fd not yet restored) gets this
# report from CPython, not from taquba. Seen once in CI, on a run sent two SIGINTs.
_LATE_WAKEUP_WRITE = re.compile(
    r"Exception ignored when trying to write to the signal wakeup fd:\n"
    r"(?:.*\n)*?(?:BrokenPipeError|ConnectionResetError|OSError): [^\n]*(?:\n|$)"
)


def check_output(child: Child, mode: str, *, twice: bool = False) -> None:
    err = child.stderr()
    if twice:
        err = _LATE_WAKEUP_WRITE.sub("", err)
    assert "Exception ignored" not in err, child.describe()
    # The app's own nursery may turn the interrupt into a group; taquba's never do.
    endings = ("INTERRUPTED", "GROUP") if mode == "nursery" else ("INTERRUPTED",)
    if child.returncode == 130:
        assert "Traceback" not in err, child.describe()
        assert child.lines[-2] == "CLOSED", child.describe()
        assert child.lines[-1] in endings, child.describe()
    else:
        # The late second SIGINT `interrupt_once` allows: Python's default handler ends the
        # app after taquba was done, printing that interrupt's traceback, and nothing else.
        assert err.rstrip().endswith("\nKeyboardInterrupt"), child.describe()
        assert "CLOSED" in child.lines[-2:], child.describe()


async def check_nothing_lost(store_dir: Path, ids: list[str]) -> None:
    async with taquba.open_queue(store_dir, DB, flush_interval=0.01) as queue:
        for job_id in ids:
            job = await queue.get_job(job_id)
            assert job is not None, f"the enqueue of {job_id} returned, but it is gone"
            assert job.status in (
                taquba.JobStatus.PENDING,
                taquba.JobStatus.CLAIMED,
                taquba.JobStatus.DONE,
            ), job


async def interrupt_runs(tmp_path: Path, mode: str, runs: int, seed: int) -> list[float]:
    """`runs` interrupted runs in two lanes at once; return the exit times.

    Each lane has its own store, which every run reopens after the last one (recovering what
    it left), and checks at the end for every job whose enqueue a run reported as returned.
    """
    times: list[float] = []

    async def lane(number: int) -> None:
        rng = random.Random(seed * 2 + number)
        store_dir = tmp_path / f"store-{number}"
        ids: list[str] = []
        for run in range(number, runs, 2):
            twice = run % 4 == 3
            child, took = await interrupt_once(store_dir, mode, rng, twice=twice)
            check_output(child, mode, twice=twice)
            times.append(took)
            ids.extend(enqueued(child))
        await check_nothing_lost(store_dir, ids)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lane, 0)
        nursery.start_soon(lane, 1)
    assert len(times) == runs
    print(f"exit after SIGINT: max {max(times):.2f} s, mean {sum(times) / len(times):.2f} s")
    return times


@pytest.mark.parametrize("mode", ["chain", "nursery"])
async def test_sigint_at_random_moments_ends_the_app_cleanly(tmp_path: Path, mode: str) -> None:
    """10 runs per mode (every fourth gets a second SIGINT right after the first)."""
    times = await interrupt_runs(tmp_path, mode, runs=10, seed=13 if mode == "chain" else 31)
    assert max(times) < EXIT_BOUND


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["chain", "nursery"])
async def test_sigint_at_many_more_moments(tmp_path: Path, mode: str) -> None:
    times = await interrupt_runs(tmp_path, mode, runs=40, seed=1313 if mode == "chain" else 3131)
    assert max(times) < EXIT_BOUND


# ------------------------------------------------------------------------------ the command


@pytest.mark.parametrize(
    ("signum", "status", "line"),
    [
        (signal.SIGINT, 130, "taquba: interrupted"),
        (signal.SIGTERM, 143, "taquba: stopped by SIGTERM"),
    ],
    ids=["SIGINT", "SIGTERM"],
)
async def test_the_demo_ends_on_a_signal_with_one_line(
    tmp_path: Path, signum: int, status: int, line: str
) -> None:
    store_dir = tmp_path / "demo-store"
    args = ["-m", "taquba", "demo", "--store", str(store_dir), "--jobs", "200"]
    async with open_child(*args) as child:
        with trio.fail_after(START_BOUND):
            # Mid-way through serving: a progress line with something settled.
            await child.expect(lambda text: "settled" in text and " 0/" not in text)
        child.process.send_signal(signum)
        with trio.move_on_after(EXIT_BOUND) as bound:
            await child.expect_exit(status)
        assert not bound.cancelled_caught, child.describe()
        err = child.stderr()
    assert [text for text in err.splitlines() if text.strip()] == [line], child.describe()
    # The demo's store was closed cleanly: it reopens, with the demo's jobs in it.
    async with taquba.open_queue(store_dir) as queue:  # the demo uses the default database
        assert "documents" in await queue.list_queues()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_every_command_runs_cancellable_by_a_signal(signum: int) -> None:
    """Each subcommand runs under `_until_signal`: a signal cancels it, then it reports."""
    cleaned_up: list[bool] = []

    async def command() -> int:
        try:
            signal.raise_signal(signum)
            await trio.sleep_forever()
        finally:
            cleaned_up.append(True)

    with pytest.raises(_cli._Interrupted) as caught:  # pyright: ignore[reportPrivateUsage]
        trio.run(_cli._until_signal, command)  # pyright: ignore[reportPrivateUsage]
    assert caught.value.signum == signum
    assert cleaned_up == [True]
    assert _cli._interrupted(caught.value) == signum  # pyright: ignore[reportPrivateUsage]


# ------------------------------------------------------------------------------ the helpers


def test_plain_interrupt_turns_a_group_of_interrupts_into_one() -> None:
    cancelled = trio.Cancelled._create()  # pyright: ignore[reportPrivateUsage]
    with pytest.raises(KeyboardInterrupt) as caught, _interrupts.plain_interrupt():
        raise BaseExceptionGroup("g", [KeyboardInterrupt(), BaseExceptionGroup("h", [cancelled])])
    assert isinstance(caught.value.__cause__, BaseExceptionGroup)
    # Anything else in the group keeps it a group: nothing is hidden.
    with pytest.raises(BaseExceptionGroup), _interrupts.plain_interrupt():
        raise BaseExceptionGroup("g", [KeyboardInterrupt(), ValueError()])


@pytest.fixture
def default_sigint() -> Iterator[None]:
    """SIGINT raises `KeyboardInterrupt`, even if this process inherited it ignored.

    A shell starts its background jobs with SIGINT ignored; Python then installs no
    `KeyboardInterrupt` handler, and trio installs one only over Python's default.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("default_sigint")
def test_hold_interrupts_lets_the_wait_finish_then_raises() -> None:
    finished: list[bool] = []

    async def main() -> None:
        event = trio.Event()

        async def interrupt_then_set() -> None:
            # A system task is KI-protected: trio delivers the interrupt to the main task,
            # which is waiting in `wait_holding` (without the hold, its wait would end now).
            signal.raise_signal(signal.SIGINT)
            await trio.sleep(0.05)
            event.set()

        trio.lowlevel.spawn_system_task(interrupt_then_set)
        with _interrupts.hold_interrupts():
            await _interrupts.wait_holding(event.wait)
            finished.append(True)

    with pytest.raises(KeyboardInterrupt):
        trio.run(main)
    assert finished == [True]
