"""A remote workflow process for the crash tests: ``wf_remote_crash_child.py URL STATE [patient]``.

``wf_crash_child.py``'s workflow and `Runtime`, unchanged (its `serve`), over
``taquba_client.remote.open_remote_queue(URL)`` instead of the store: the owner is a
``taquba-server`` process. Same lines on stdout, same counts in ``STATE``. With ``patient``,
its client retries for long enough to outlast a restart of the server.
"""

from __future__ import annotations

import sys
from pathlib import Path

import trio

import taquba_client
from taquba_client.remote import open_remote_queue
from wf_crash_child import serve

PATIENT = taquba_client.RetryPolicy(attempts=200, initial_delay=0.05, max_delay=0.2)


async def main(url: str, state_dir: str, patient: bool) -> None:
    async with open_remote_queue(url, retry=PATIENT if patient else None) as queue:

        async def claimed_hooks() -> list[str]:
            page = await queue.client.list_jobs("workflow-hooks", taquba_client.JobStatus.CLAIMED)
            return [job.id for job in page.jobs]

        await serve(queue, Path(state_dir), claimed_hooks)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2], sys.argv[3:] == ["patient"])
