"""The installed distribution matches its metadata and ships its type marker."""

from __future__ import annotations

import importlib.resources
import pathlib
import tomllib

import taquba_bulk


def test_version_matches_pyproject() -> None:
    pyproject = pathlib.Path(__file__).parents[1] / "pyproject.toml"
    expected = tomllib.loads(pyproject.read_text())["project"]["version"]
    assert taquba_bulk.__version__ == expected


def test_ships_py_typed() -> None:
    assert importlib.resources.files("taquba_bulk").joinpath("py.typed").is_file()
