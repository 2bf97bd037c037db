"""The public surface: every exported name is documented, typed and exported once."""

from __future__ import annotations

import inspect
import pathlib
import tomllib

import taquba
import taquba_webhooks
from taquba.testing import check_public_api, check_type_completeness

PUBLIC = [name for name in dir(taquba_webhooks) if not name.startswith("_")]
PACKAGE = pathlib.Path(taquba_webhooks.__file__).parent


def test_the_public_api_conforms() -> None:
    """``__all__`` complete, exported once from private modules, everything documented."""
    check_public_api(taquba_webhooks)


def test_every_private_module_export_is_public() -> None:
    exported = set(PUBLIC)
    for path in PACKAGE.glob("_[a-z]*.py"):
        module = __import__(f"taquba_webhooks.{path.stem}", fromlist=["__all__"])
        for name in getattr(module, "__all__", []):
            assert name in exported, (path.stem, name)
            assert getattr(taquba_webhooks, name) is getattr(module, name)


def test_errors_form_one_tree() -> None:
    errors = [
        getattr(taquba_webhooks, n)
        for n in PUBLIC
        if inspect.isclass(getattr(taquba_webhooks, n))
        and issubclass(getattr(taquba_webhooks, n), BaseException)
    ]
    assert {e.__name__ for e in errors} == {
        "WebhookError",
        "InvalidDelivery",
        "InvalidSecret",
        "DestinationRefused",
        "VerificationError",
    }
    for error in errors:
        assert issubclass(error, taquba_webhooks.WebhookError)
        assert issubclass(error, taquba.TaqubaError)
    usage = {e.__name__ for e in errors if issubclass(e, taquba.UsageError)}
    assert usage == {"InvalidDelivery", "InvalidSecret"}
    assert issubclass(taquba_webhooks.InvalidDelivery, ValueError)
    assert issubclass(taquba_webhooks.InvalidSecret, ValueError)


def test_version() -> None:
    pyproject = pathlib.Path(__file__).parents[1] / "pyproject.toml"
    expected = tomllib.loads(pyproject.read_text())["project"]["version"]
    assert taquba_webhooks.__version__ == expected


def test_pyright_sees_the_public_names() -> None:
    check_type_completeness(taquba_webhooks)
