"""The public surface: every exported name is documented, typed and exported once."""

from __future__ import annotations

import inspect

import taquba
import taquba_server
from taquba.testing import check_public_api, check_type_completeness

PUBLIC = [name for name in dir(taquba_server) if not name.startswith("_")]


def test_the_expected_names_are_exported() -> None:
    assert set(PUBLIC) == {
        "DEFAULT_MAX_BODY_SIZE",
        "DEFAULT_PORT",
        "SCOPES",
        "InsecureBind",
        "InvalidTokens",
        "Scope",
        "Server",
        "ServerError",
        "Token",
        "create_app",
        "load_tokens",
        "parse_tokens",
    }


def test_the_public_api_conforms() -> None:
    """``__all__`` complete, exported once from private modules, everything documented."""
    check_public_api(taquba_server)


def test_errors_form_one_tree() -> None:
    errors = [
        getattr(taquba_server, n)
        for n in PUBLIC
        if inspect.isclass(getattr(taquba_server, n))
        and issubclass(getattr(taquba_server, n), BaseException)
    ]
    assert len(errors) == 3
    assert issubclass(taquba_server.ServerError, taquba.TaqubaError)
    for error in errors:
        assert issubclass(error, taquba_server.ServerError)
    for error in (taquba_server.InsecureBind, taquba_server.InvalidTokens):
        assert issubclass(error, taquba.UsageError)
    tree = taquba_server._errors.__doc__ or ""
    for error in errors:
        assert error.__name__ in tree


def test_pyright_sees_the_public_names() -> None:
    check_type_completeness(taquba_server)
