"""A remote workflow process for the remote crash tests: ``wf_remote_crash_child.py URL STATE``.

``wf_crash_child.py``'s workflow and `Runtime`, unchanged (its `serve`), over
``taquba_client.remote.open_remote_queue(URL)`` instead of the store: the owner is a
``taquba-server`` process. Same lines on stdout, same counts in ``STATE``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import trio

import taquba_client
from taquba_client.remote import open_remote_queue
from wf_crash_child import serve


async def main(url: str, state_dir: str) -> None:
    async with open_remote_queue(url) as queue:

        async def claimed_hooks() -> list[str]:
            page = await queue.client.list_jobs("workflow-hooks", taquba_client.JobStatus.CLAIMED)
            return [job.id for job in page.jobs]

        await serve(queue, Path(state_dir), claimed_hooks)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2])
