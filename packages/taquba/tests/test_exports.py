"""The public surface: every exported name is documented, typed and exported once."""

from __future__ import annotations

import inspect

import taquba
import taquba.testing
from taquba.testing import check_public_api, check_type_completeness

PUBLIC = [name for name in dir(taquba) if not name.startswith("_")]


def test_the_public_api_conforms() -> None:
    check_public_api(taquba)


def test_the_testing_api_conforms() -> None:
    check_public_api(taquba.testing, reexported={"MockClock", "FaultKind"})
    assert taquba.testing.MockClock is taquba.MockClock


def defined_objects(module: object, names: list[str]) -> dict[str, object]:
    """The public classes and functions among ``names`` (not constants or type aliases)."""
    objects = {name: getattr(module, name) for name in names}
    return {n: o for n, o in objects.items() if inspect.isclass(o) or inspect.isfunction(o)}


def test_public_objects_carry_their_public_module_path() -> None:
    """`fixup_module_metadata`: ``taquba.ClaimLost`` in tracebacks and stored type names."""
    objects = defined_objects(taquba, PUBLIC)
    assert {"ClaimLost", "Queue", "Worker", "open_queue"} <= objects.keys()
    assert {n: o.__module__ for n, o in objects.items() if o.__module__ != "taquba"} == {}  # pyright: ignore[reportAttributeAccessIssue]
    members = [taquba.Queue.claim, taquba.Worker.serve, taquba.LeaseHandle.renew]
    assert {m.__module__ for m in members} == {"taquba"}
    assert f"{taquba.ClaimLost.__module__}.{taquba.ClaimLost.__qualname__}" == "taquba.ClaimLost"
    testing = defined_objects(taquba.testing, taquba.testing.__all__)
    assert {n: o.__module__ for n, o in testing.items()} == {  # pyright: ignore[reportAttributeAccessIssue]
        n: "taquba" if n == "MockClock" else "taquba.testing" for n in testing
    }


def test_errors_form_one_tree() -> None:
    errors = [getattr(taquba, n) for n in PUBLIC if inspect.isclass(getattr(taquba, n))]
    errors = [e for e in errors if issubclass(e, BaseException)]
    for error in errors:
        if error in (taquba.PermanentFailure, taquba.RetryLater):
            continue  # raised by handlers, not by taquba
        assert issubclass(error, taquba.TaqubaError), error
    assert issubclass(taquba.Fenced, taquba.StorageError)
    assert issubclass(taquba.ClaimLost, taquba.ConflictError)
    assert issubclass(taquba.InvalidId, taquba.UsageError)
    assert taquba.StorageUnavailable("x").transient
    assert not taquba.ClaimLost("j").transient


def test_testing_helpers_are_exported() -> None:
    assert set(taquba.testing.__all__) == {
        "Child",
        "ChildExited",
        "Fault",
        "FaultInjector",
        "FaultKind",
        "ForwardingQueue",
        "InjectedFault",
        "MockClock",
        "S3Options",
        "api_snapshot",
        "assert_api_snapshot",
        "check_public_api",
        "check_type_completeness",
        "drain",
        "inject_faults",
        "memory_store",
        "moto_s3",
        "open_child",
        "open_test_queue",
        "snapshot_diff",
    }


def test_pyright_sees_the_public_names() -> None:
    """The names are re-exported explicitly (``X as X``), so pyright's verifytypes accepts them."""
    check_type_completeness("taquba")


def test_the_observability_modules_conform() -> None:
    import taquba.otel
    import taquba.prometheus

    # The constants are documented where they are defined (the private modules).
    check_public_api(
        taquba.prometheus, reexported={"DEPTH_STATUSES", "JOB_BUCKETS", "STORAGE_BUCKETS"}
    )
    check_public_api(taquba.otel, reexported={"MESSAGING_SYSTEM"})
    for module in (taquba.prometheus, taquba.otel):
        objects = defined_objects(module, module.__all__)
        assert {o.__module__ for o in objects.values()} == {module.__name__}  # pyright: ignore[reportAttributeAccessIssue]
