"""The demo's jobs: the "document" and "export" workloads of `taquba demo` and their handlers.

`plan_documents` draws a seeded mix of scenarios (most succeed, some fail transiently, some
are poison, some are scheduled, a few urgent ones jump the line); the handlers act each
scenario out and record what they saw in a `Tracker`, which the narration and the summary
read.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, cast

import trio

from taquba import PRIORITY_HIGH, EnqueueRequest, PermanentFailure

if TYPE_CHECKING:
    from random import Random

    from taquba import Handler, JobRecord, LeaseHandle

__all__ = [
    "DOCUMENTS",
    "EXPORTS",
    "Plan",
    "Tracker",
    "document_handler",
    "export_handler",
    "export_requests",
    "parse_payload",
    "plan_documents",
]

DOCUMENTS: Final = "documents"

EXPORTS: Final = "exports"

PAGE_WORK: Final = 0.015  # simulated seconds of work per document page

KINDS: Final = ("invoice", "contract", "receipt", "report", "statement", "purchase-order")

CUSTOMERS: Final = ("acme", "globex", "initech", "umbrella", "hooli", "stark")


@dataclass(slots=True)
class Tracker:
    """What the demo's handlers saw, for the narration and the summary."""

    first_starts: list[str] = field(default_factory=list[str])
    """The scenario of each job, in the order of first attempts."""
    attempts_started: int = 0
    transient_failures: int = 0
    succeeded_on: Counter[int] = field(default_factory=Counter[int])


@dataclass(frozen=True, slots=True)
class Plan:
    """The document jobs of phase 1, by scenario."""

    regular: list[EnqueueRequest]
    urgent: list[EnqueueRequest]
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return len(self.regular) + len(self.urgent)


def encode_payload(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def parse_payload(raw: bytes) -> dict[str, Any]:
    try:
        data: object = json.loads(raw)
    except ValueError:
        return {}
    if isinstance(data, dict):
        items = cast("dict[object, Any]", data)
        return {str(k): v for k, v in items.items()}
    return {}


def plan_documents(count: int, rng: Random) -> Plan:
    counts = {
        "urgent": max(1, count // 60),
        "scheduled": max(2, count // 15),
        "corrupt": max(1, count // 50),
        "unreachable": max(1, count // 100),
        "flaky": max(2, count // 10),
    }
    counts = {"ok": count - sum(counts.values()), **counts}
    scenarios = [name for name, n in counts.items() if name != "urgent" for _ in range(n)]
    rng.shuffle(scenarios)
    regular: list[EnqueueRequest] = []
    urgent: list[EnqueueRequest] = []
    for number, scenario in enumerate([*scenarios, *["urgent"] * counts["urgent"]], start=1):
        data: dict[str, Any] = {
            "document": f"{rng.choice(KINDS)}-{number:04d}.pdf",
            "customer": rng.choice(CUSTOMERS),
            "pages": rng.randint(1, 12),
            "scenario": scenario,
        }
        if scenario == "flaky":
            data["fail_first"] = rng.choice((1, 1, 2))
        if scenario == "scheduled":
            delay = round(rng.uniform(3.0, 8.0), 2)
            data["not_before_s"] = delay
            regular.append(
                EnqueueRequest(queue_name=DOCUMENTS, payload=encode_payload(data), delay=delay)
            )
        elif scenario == "urgent":
            urgent.append(
                EnqueueRequest(
                    queue_name=DOCUMENTS, payload=encode_payload(data), priority=PRIORITY_HIGH
                )
            )
        else:
            regular.append(EnqueueRequest(queue_name=DOCUMENTS, payload=encode_payload(data)))
    return Plan(regular, urgent, counts)


def document_handler(tracker: Tracker) -> Handler:
    async def handle(job: JobRecord, lease: LeaseHandle) -> None:
        data = parse_payload(job.payload)
        tracker.attempts_started += 1
        scenario = data.get("scenario")
        if job.attempts == 1:
            tracker.first_starts.append(str(scenario))
        pages = data.get("pages", 1)
        await trio.sleep(PAGE_WORK * (pages if isinstance(pages, int) else 1))
        if scenario == "corrupt":
            raise PermanentFailure("not a PDF (no %PDF header); retrying cannot help")
        if scenario == "unreachable":
            tracker.transient_failures += 1
            raise ConnectionError("archive.internal:443 refused the upload")
        fail_first = data.get("fail_first", 0)
        if scenario == "flaky" and isinstance(fail_first, int) and job.attempts <= fail_first:
            tracker.transient_failures += 1
            raise TimeoutError("the OCR service did not answer within 5 s")
        tracker.succeeded_on[job.attempts] += 1

    return handle


def export_handler(tracker: Tracker) -> Handler:
    async def handle(job: JobRecord, lease: LeaseHandle) -> None:
        tracker.attempts_started += 1
        await trio.sleep(0.05 + 0.01 * (len(job.id) % 7))
        tracker.succeeded_on[job.attempts] += 1

    return handle


def export_requests(count: int, rng: Random) -> list[EnqueueRequest]:
    return [
        EnqueueRequest(
            queue_name=EXPORTS,
            payload=encode_payload(
                {
                    "export": f"monthly-report-{rng.choice(CUSTOMERS)}-{n:02d}.csv",
                    "rows": rng.randint(1_000, 50_000),
                }
            ),
        )
        for n in range(1, count + 1)
    ]
