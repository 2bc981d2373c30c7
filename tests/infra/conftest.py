"""Fixtures for the offline infrastructure checks: the parsed Bicep templates and the functions
`function_app.py` registers."""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from typing import Any

import pytest

from .templates import Templates, parse_bicep_files


@cache
def _parsed() -> Mapping[str, Mapping[str, Any]]:
    return parse_bicep_files()


@pytest.fixture(scope="session")
def parsed_bicep() -> Mapping[str, Mapping[str, Any]]:
    """Every .bicep file under infra/ -> {"template": ...} or {"error": ...}."""
    return _parsed()


@pytest.fixture(scope="session")
def templates(parsed_bicep: Mapping[str, Mapping[str, Any]]) -> Templates:
    """The templates that parsed; a file that did not parse fails the test that asks for them."""
    broken = {name: result["error"] for name, result in parsed_bicep.items() if "error" in result}
    if broken:
        pytest.fail(f"Bicep files that do not parse: {broken}")
    return Templates({name: result["template"] for name, result in parsed_bicep.items()})


@cache
def _registered_functions() -> Mapping[str, list[dict[str, Any]]]:
    from function_app import app

    # get_functions() refuses a second call in one process ("does not have a unique function
    # name"): call it once, cached, and leave the app's index as it was for any other caller.
    previous = app.functions_bindings
    app.functions_bindings = None
    try:
        return {
            str(function.get_function_name()): json.loads(function.get_function_json())["bindings"]
            for function in app.get_functions()
        }
    finally:
        app.functions_bindings = previous


@pytest.fixture(scope="session")
def functions() -> Mapping[str, list[dict[str, Any]]]:
    """Functions registered by function_app.py: name -> bindings (as in function.json)."""
    return _registered_functions()
