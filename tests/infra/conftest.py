"""The bindings function_app.py declares, for the infra checks (parsed Bicep is in infra_model)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

Bindings = list[dict[str, Any]]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def declared_functions() -> dict[str, Bindings]:
    """function name -> its bindings (function.json shape), as the host would index them.

    `FunctionApp.get_functions()` may run only once per app object (a second call raises for
    HTTP functions). This loads a private copy of function_app.py, so the call here never
    collides with another test calling it on the importable `function_app.app`.
    """
    path = REPO / "function_app.py"
    if not path.exists():
        pytest.fail("function_app.py is missing: nothing to check the bindings of")
    name = "_function_app_for_infra_checks"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pydantic resolve annotations through it
    try:
        spec.loader.exec_module(module)
        functions = module.app.get_functions()
    finally:
        del sys.modules[name]
    return {f.get_function_name(): json.loads(f.get_function_json())["bindings"] for f in functions}
