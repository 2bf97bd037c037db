"""A job's input and output types come from its function's annotations."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

import taquba
from taquba_jobs import Job, JobContext


@dataclass(frozen=True)
class Shape:
    sides: int


def test_job_types_come_from_annotations() -> None:
    async def area(ctx: JobContext, shape: Shape) -> float:
        return 0.0

    job = Job(area, name="area")
    assert job.input_type is Shape
    assert job.output_type is float
    assert "Shape" in repr(job)


def test_unresolvable_annotations_are_a_usage_error() -> None:
    async def broken(ctx: JobContext, value: NoSuchType) -> int:  # type: ignore[name-defined]  # noqa: F821
        return 0

    with pytest.raises(taquba.UsageError, match="annotations"):
        Job(broken, name="broken")
    job = Job(broken, name="broken", input_type=int, output_type=int)
    assert job.input_type is int
