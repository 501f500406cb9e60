"""Indexing: import the app, take its FunctionApp and read each function's bindings (§1.3).

As the Python worker does: ``app.get_functions()`` once, then each function's bindings from
``get_function_json()`` (the function.json shape) and its user function.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import azure.functions as func

from sandbox.host.errors import HostError

_SETTING = re.compile(r"%([^%]+)%")

# get_functions() may be called only once per FunctionApp (§0.2): keep each app's result.
_indexed: weakref.WeakKeyDictionary[Any, list[func.Function]] = weakref.WeakKeyDictionary()


def index_app(app: func.FunctionApp) -> list[func.Function]:
    """``app.get_functions()``, called at most once per app object in this process."""
    found = _indexed.get(app)
    if found is None:
        # get_functions() records the names in app.functions_bindings and refuses a second call
        # (§0.2). Other code in this process (the app's own tests) may index the same app, so
        # index against an empty record and put the previous one back: neither call breaks.
        previous = app.functions_bindings
        app.functions_bindings = None
        try:
            found = _indexed[app] = list(app.get_functions())
        finally:
            app.functions_bindings = previous
    return found


@dataclass(frozen=True)
class FunctionSpec:
    """One indexed function: its name, bindings (function.json shape) and the user function."""

    name: str
    bindings: tuple[dict[str, Any], ...]
    user_function: Callable[..., Any]

    @property
    def trigger(self) -> dict[str, Any]:
        return next(b for b in self.bindings if str(b.get("type", "")).endswith("Trigger"))

    @property
    def trigger_type(self) -> str:
        return str(self.trigger["type"])

    @property
    def is_http(self) -> bool:
        return self.trigger_type == "httpTrigger"

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.user_function)

    @property
    def wants_context(self) -> bool:
        return "context" in inspect.signature(self.user_function).parameters

    def check_signature(self) -> None:
        """The worker's indexing rule (reference §0.3, §3.2): the parameters are exactly the
        binding names (``$return`` aside), plus an optional ``context``."""
        parameters = set(inspect.signature(self.user_function).parameters) - {"context"}
        bindings = {str(b["name"]) for b in self.bindings} - {"$return"}
        if parameters != bindings:
            raise HostError(
                f"function {self.name}: parameters {sorted(parameters)} do not match its "
                f"binding names {sorted(bindings)}"
            )

    @property
    def outputs(self) -> list[dict[str, Any]]:
        return [
            b
            for b in self.bindings
            if str(b.get("direction", "")).lower() == "out" and b.get("name") != "$return"
        ]

    @classmethod
    def of(cls, function: func.Function) -> FunctionSpec:
        bindings = json.loads(function.get_function_json())["bindings"]
        return cls(
            name=str(function.get_function_name()),
            bindings=tuple(bindings),
            user_function=function.get_user_function(),
        )


def load_functions(module_name: str, *, attribute: str = "app") -> tuple[ModuleType, list[Any]]:
    """Import the app module and index its FunctionApp (reference §1.3)."""
    module = importlib.import_module(module_name)
    app = getattr(module, attribute, None)
    if not isinstance(app, func.FunctionApp):
        raise HostError(f"{module_name}.{attribute} is not an azure.functions.FunctionApp")
    return module, index_app(app)


def index_module(module_name: str) -> tuple[ModuleType, dict[str, FunctionSpec]]:
    """The app module and its functions by name, each signature checked."""
    module, functions = load_functions(module_name)
    specs = {spec.name: spec for spec in map(FunctionSpec.of, functions)}
    for spec in specs.values():
        spec.check_signature()
    return module, specs


def resolve_settings(text: str, environ: Mapping[str, str]) -> str:
    """Replace ``%NAME%`` binding expressions with app settings, as the host does (§2.3)."""

    def setting(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            raise HostError(f"app setting {name!r} (used as %{name}%) is not set")
        return environ[name]

    return _SETTING.sub(setting, text)
