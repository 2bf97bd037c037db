"""`Bulk` over any `taquba.QueueLike` (`taquba.testing.ForwardingQueue`: the protocol's
members and nothing else, each forwarding to a real `taquba.Queue`)."""

from __future__ import annotations

from bulk_support import Recorder, bulk, opened, sink_of
from taquba.testing import ForwardingQueue


async def test_a_bulk_over_the_protocol_runs_and_resumes() -> None:
    pipeline = Recorder()
    pipeline.permanent.add("bad")
    async with opened() as queue:
        forwarding = ForwardingQueue(queue)
        runner = bulk(forwarding, pipeline)
        assert runner.queue is forwarding
        report = await runner.run(["a", "bb", "bad"])
        assert (report.total, report.succeeded, report.failed) == (3, 2, 1)
        assert len(sink_of(runner).records) == 3
        again = bulk(ForwardingQueue(queue), pipeline)
        rerun = await again.run(["a", "bb"])  # succeeded earlier: read back, not run again
        assert (rerun.total, rerun.succeeded) == (2, 2)
    assert pipeline.runs["a"] == 1
    assert pipeline.runs["bb"] == 1
    for member in ("enqueue", "claim_batch", "ack_with", "store.get_blob", "kv_put"):
        assert forwarding.calls[member] >= 1, member
