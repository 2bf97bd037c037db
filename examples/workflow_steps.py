"""A multi-step workflow on a local-disk store: ``uv run python examples/workflow_steps.py``.

Three order runs go through four steps each: validate, charge (memoized, so a retried step never
charges twice), wait for the warehouse (a durable sleep: ``ContinueAfter``), ship. One order
fails validation (``Fail``), one is cancelled while it sleeps, one succeeds. A terminal hook
prints each run's end; the process exits when all three have ended.

Pass a directory to keep the store (default: a temporary directory).
"""

from __future__ import annotations

import json
import sys
import tempfile

import trio

import taquba
from taquba_workflow import (
    Continue,
    ContinueAfter,
    Fail,
    RunOutcome,
    RunSpec,
    Step,
    StepOutcome,
    Succeed,
    TransientStepError,
    WorkflowRuntime,
)

VALIDATE, CHARGE, WAIT, SHIP = range(4)


sleeping = trio.Event()  # set when order-3 starts its sleep (the demo cancels it then)


async def run_step(step: Step) -> StepOutcome:
    """One step of an order run; the payload carries the order between steps."""
    order = json.loads(step.payload)
    if step.number == VALIDATE:
        print(f"  {step.run_id}: validating {order['item']!r} x{order['quantity']}")
        if order["quantity"] <= 0:
            return Fail("quantity must be positive")
        return Continue(step.payload)
    if step.number == CHARGE:
        # The charge is the irreversible side effect: memoize it per charge request, so a
        # redelivered step reuses the receipt instead of charging the card again.
        request = {"op": "charge", "order": order}
        receipt = await step.memo.content_get(request)
        if receipt is None:
            if step.attempt == 1 and order["item"] == "lamp":
                print(f"  {step.run_id}: the payment gateway timed out; the step will retry")
                raise TransientStepError("payment gateway timed out")  # retried with backoff
            receipt = f"rcpt-{step.run_id}".encode()
            print(f"  {step.run_id}: charged the card (attempt {step.attempt})")
            await step.memo.content_put(request, receipt)
        order["receipt"] = receipt.decode()
        return Continue(json.dumps(order).encode())
    if step.number == WAIT:
        print(f"  {step.run_id}: waiting for the warehouse (the run sleeps, no worker held)")
        if step.run_id == "order-3":
            sleeping.set()
        return ContinueAfter(0.5, step.payload)
    print(f"  {step.run_id}: shipped with {order['receipt']}")
    return Succeed(json.dumps({"shipped": order["item"]}).encode())


async def main(directory: str) -> None:
    """Submit three orders, cancel one while it sleeps, and wait for all three to end."""
    store = taquba.Store.from_url(directory)

    async def on_end(outcome: RunOutcome) -> None:
        # Called before the run's end commits, at least once: keep it idempotent.
        detail = outcome.result.decode() if outcome.result else outcome.error or "by request"
        print(f"=> {outcome.run_id} {outcome.status.value}: {detail}")

    config = taquba.QueueConfig(retry_backoff_base=0.2)
    async with taquba.open_queue(store, "shop", config=config, scheduler_interval=0.1) as queue:
        runtime = WorkflowRuntime(queue, run_step, on_end, poll_interval=0.1)
        async with trio.open_nursery() as nursery:
            await nursery.start(runtime.run)
            for run_id, item, quantity in [("order-1", "lamp", 1), ("order-2", "desk", 0)]:
                order = json.dumps({"item": item, "quantity": quantity}).encode()
                await runtime.submit(RunSpec(input=order, run_id=run_id))
            order = json.dumps({"item": "chair", "quantity": 2}).encode()
            await runtime.submit(RunSpec(input=order, run_id="order-3"))
            await sleeping.wait()  # order-3 decided to sleep; wait for that to commit
            while (status := await runtime.status("order-3")) and status.step != SHIP:  # noqa: ASYNC110
                await trio.sleep(0.01)
            print("  order-3: cancelling it while it sleeps")
            await runtime.cancel("order-3")
            for run_id in ("order-1", "order-2", "order-3"):
                with trio.fail_after(30):
                    status = await runtime.wait_finished(run_id)
                assert status is not None
                print(f"status {run_id}: {status.state.value} at step {status.step}")
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    if len(sys.argv) > 1:
        trio.run(main, sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            trio.run(main, tmp)
