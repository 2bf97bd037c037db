"""A multi-step workflow on a local-disk store: ``uv run python examples/workflow_steps.py``.

Three order runs go through four steps each: validate, charge (memoized, so a retried step never
charges twice), wait for the warehouse (a durable sleep: ``Continue(order, delay=0.5)``), ship.
One order fails validation (``Fail``), one is cancelled while it sleeps, one succeeds. The
payloads are typed: an ``Order`` dataclass travels between steps and a ``Shipment`` is the
result (declared once, by the runner's annotations). A terminal hook prints each run's end; the
process exits when all three have ended.

Pass a directory to keep the store (default: a temporary directory).
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass, replace

import trio

import taquba
from taquba_workflow import (
    Continue,
    Fail,
    RunOutcome,
    RunSpec,
    Runtime,
    Step,
    StepOutcome,
    Succeed,
    TransientStepError,
)

VALIDATE, CHARGE, WAIT, SHIP = range(4)


@dataclass(frozen=True)
class Order:
    """The payload every step of an order run gets (and passes on)."""

    item: str
    quantity: int
    receipt: str | None = None


@dataclass(frozen=True)
class Shipment:
    """The result of an order run."""

    item: str
    receipt: str


sleeping = trio.Event()  # set when order-3 starts its sleep (the demo cancels it then)


async def run_step(step: Step[Order]) -> StepOutcome[Order, Shipment]:
    """One step of an order run; the payload carries the order between steps."""
    order = step.payload
    if step.number == VALIDATE:
        print(f"  {step.run_id}: validating {order.item!r} x{order.quantity}")
        if order.quantity <= 0:
            return Fail("quantity must be positive")
        return Continue(order)
    if step.number == CHARGE:
        # The charge is the irreversible side effect: memoize it per charge request, so a
        # redelivered step reuses the receipt instead of charging the card again.
        request = {"op": "charge", "item": order.item, "quantity": order.quantity}
        receipt = await step.memo.content_get(request)
        if receipt is None:
            if step.attempt == 1 and order.item == "lamp":
                print(f"  {step.run_id}: the payment gateway timed out; the step will retry")
                raise TransientStepError("payment gateway timed out")  # retried with backoff
            receipt = f"rcpt-{step.run_id}".encode()
            print(f"  {step.run_id}: charged the card (attempt {step.attempt})")
            await step.memo.content_put(request, receipt)
        return Continue(replace(order, receipt=receipt.decode()))
    if step.number == WAIT:
        print(f"  {step.run_id}: waiting for the warehouse (the run sleeps, no worker held)")
        if step.run_id == "order-3":
            sleeping.set()
        return Continue(order, delay=0.5)
    assert order.receipt is not None
    print(f"  {step.run_id}: shipped with {order.receipt}")
    return Succeed(Shipment(order.item, order.receipt))


async def main(directory: str) -> None:
    """Submit three orders, cancel one while it sleeps, and wait for all three to end."""
    store = taquba.Store.from_url(directory)

    async def on_end(outcome: RunOutcome[Shipment]) -> None:
        # Called after the run's end committed, at least once: keep it idempotent.
        shipped = outcome.result
        detail = f"shipped {shipped.item}" if shipped else outcome.error or "by request"
        print(f"=> {outcome.run_id} {outcome.status.value}: {detail}")

    config = taquba.QueueConfig(retry_backoff_base=0.2)
    async with taquba.open_queue(store, "shop", config=config, scheduler_interval=0.1) as queue:
        runtime = Runtime(queue, run_step, on_end, poll_interval=0.1)
        async with trio.open_nursery() as nursery:
            await nursery.start(runtime.serve)
            for run_id, item, quantity in [("order-1", "lamp", 1), ("order-2", "desk", 0)]:
                await runtime.submit(RunSpec(input=Order(item, quantity), run_id=run_id))
            await runtime.submit(RunSpec(input=Order("chair", 2), run_id="order-3"))
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
            runtime.shutdown()  # graceful: serve returns once the work in flight is done


if __name__ == "__main__":
    if len(sys.argv) > 1:
        trio.run(main, sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            trio.run(main, tmp)
