"""taquba-jobs by example: typed jobs, awaited results, idempotency, a restart, retention.

Run it with ``uv run python examples/jobs_example.py [STORE_DIR]`` (about two seconds; the
store defaults to a temporary directory). It defines a typed job and a job that fans out to
it, awaits their results (plain values; a failure or a cancellation is an exception), shows
that an idempotent resubmission does not run anything again (also after the process
"restarts", i.e. the queue is closed and reopened), cancels a pending job, and lets a short
result retention sweep a result away. The runner starts with ``nursery.start(runner.serve)``
and stops with ``runner.shutdown()``, like every long-running taquba component.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass

import trio

import taquba
from taquba_jobs import InputMismatch, JobCancelled, JobContext, JobRunner, ResultNotFound, job


@dataclass(frozen=True)
class Resize:
    """The input of `thumbnail`."""

    image: str
    width: int


@dataclass(frozen=True)
class Thumbnail:
    """The output of `thumbnail`."""

    path: str
    bytes_written: int


RUNS: list[str] = []


@job(name="example.thumbnail")
async def thumbnail(ctx: JobContext, request: Resize) -> Thumbnail:
    """Pretend to resize an image (the runner keeps the lease alive however long it takes)."""
    RUNS.append(f"{request.image}@{request.width}")
    await trio.sleep(0.01)
    return Thumbnail(f"thumbs/{request.width}/{request.image}", request.width * 10)


@job(name="example.album")
async def album(ctx: JobContext, images: list[str]) -> dict[str, str]:
    """Fan out one thumbnail job per image and gather their results.

    The children's idempotency keys derive from this job's id, so a retried attempt finds the
    children of the first attempt instead of submitting them again.
    """
    handles = {
        image: await ctx.submit(
            thumbnail, Resize(image, 128), idempotency_key=f"{ctx.job_id}/{image}"
        )
        for image in images
    }
    return {image: (await handle.result()).path for image, handle in handles.items()}


async def main(store_dir: str) -> None:
    """Run the tour on a local-disk store at ``store_dir``."""
    print(f"store: {store_dir}")
    async with taquba.open_queue(store_dir, "example") as queue:
        runner = JobRunner(queue, [thumbnail, album], concurrency=8, poll_interval=0.1)
        async with trio.open_nursery() as nursery:
            await nursery.start(runner.serve)

            handle = await runner.submit(thumbnail, Resize("cat.png", 256), idempotency_key="cat")
            print("thumbnail:", await handle.result())

            again = await runner.submit(thumbnail, Resize("cat.png", 256), idempotency_key="cat")
            same = again.job_id == handle.job_id
            print(f"resubmitted: same job {same}, newly submitted {again.newly_submitted}")
            try:
                await runner.submit(thumbnail, Resize("cat.png", 512), idempotency_key="cat")
            except InputMismatch as exc:
                print("another input under the same key:", exc)

            paths = await (await runner.submit(album, ["a.png", "b.png", "c.png"])).result()
            print("album:", paths)

            later = await runner.submit(thumbnail, Resize("dog.png", 64), delay=3600)
            await runner.cancel(later.job_id)
            try:
                await later.result()
            except JobCancelled as exc:
                print("cancelled:", exc)
            runner.shutdown()
        first_id = handle.job_id

    print("-- restart --")
    runs_before = len(RUNS)
    async with taquba.open_queue(store_dir, "example") as queue:
        runner = JobRunner(queue, [thumbnail, album], result_retention=0.5, sweep_interval=0.2)
        # Stored results need no serving runner: the handle reads the outcome at once.
        print("result after restart:", await runner.handle(thumbnail, first_id).result())
        again = await runner.submit(thumbnail, Resize("cat.png", 256), idempotency_key="cat")
        print(f"resubmitted after restart: newly submitted {again.newly_submitted}")
        assert len(RUNS) == runs_before, "nothing ran again"

        async with trio.open_nursery() as nursery:
            await nursery.start(runner.serve)
            short = await runner.submit(thumbnail, Resize("owl.png", 32), idempotency_key="owl")
            await short.result()
            await trio.sleep(1.0)  # past the 0.5 s retention: the sweeper removes the result
            try:
                await short.result()
            except ResultNotFound:
                print("owl result after retention: swept")
            rerun = await runner.submit(thumbnail, Resize("owl.png", 32), idempotency_key="owl")
            print(f"owl resubmitted after the sweep runs again: {rerun.newly_submitted}")
            await rerun.result()
            runner.shutdown()
    print("executions:", RUNS)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        trio.run(main, sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as directory:
            trio.run(main, directory)
