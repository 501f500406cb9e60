"""The host's HTTP side: routing HTTP triggers, the function key, and a little admin API.

HTTP triggers are served under ``/<routePrefix>/<route>`` (host.json, default ``api``) with
ASP.NET Core routing rules; auth levels FUNCTION and ADMIN need the function key (``?code=`` or
``x-functions-key``), compared in constant time. The admin API (behind the key): ``GET
/admin/host/status`` and ``POST /admin/functions/<name>`` (run a timer or queue function now).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import azure.functions as func
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from sandbox.host.config import HostConfig
from sandbox.host.indexing import FunctionSpec
from sandbox.host.invoker import Invoker

logger = logging.getLogger("sandbox.host")

_CONSTRAINTS = {
    "int": r"-?\d+",
    "long": r"-?\d+",
    "guid": r"[0-9a-fA-F]{8}-?(?:[0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}",
    "alpha": r"[A-Za-z]+",
    "bool": r"(?i:true|false)",
    "float": r"-?\d+(?:\.\d+)?",
    "double": r"-?\d+(?:\.\d+)?",
    "decimal": r"-?\d+(?:\.\d+)?",
}
_PARAMETER = re.compile(r"\{(\*?)([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z]+)(?:\([^)]*\))?)?(\?)?\}")


def compile_route(template: str) -> re.Pattern[str]:
    """An ASP.NET-style route template (``items/{id:int}/{rest?}``, ``{*path}``) as a regex.

    The Functions host routes with ASP.NET Core routing: literals match case-insensitively,
    ``{name?}`` is optional, ``{*name}`` takes the rest of the path.
    """
    pattern = ""
    for index, segment in enumerate(template.strip("/").split("/")):
        separator = "/" if index else ""
        whole = _PARAMETER.fullmatch(segment)
        if whole and whole.group(4):
            pattern += f"(?:{separator}(?P<{whole.group(2)}>{_value_regex(whole)}))?"
            continue
        if whole and whole.group(1):
            pattern += f"(?:{separator}(?P<{whole.group(2)}>.*))?"
            continue
        parts, last = [], 0
        for match in _PARAMETER.finditer(segment):
            parts.append(re.escape(segment[last : match.start()]))
            parts.append(f"(?P<{match.group(2)}>{_value_regex(match)})")
            last = match.end()
        parts.append(re.escape(segment[last:]))
        pattern += separator + "".join(parts)
    return re.compile(pattern, re.IGNORECASE)


def route_precedence(template: str) -> tuple[int, ...]:
    """Sort key: literal segments win over parameters, constrained over free, optional and
    catch-all last, as in ASP.NET Core routing (``items/new`` before ``items/{id}``)."""
    ranks = []
    for segment in template.strip("/").split("/"):
        whole = _PARAMETER.fullmatch(segment)
        if not _PARAMETER.search(segment):
            ranks.append(0)
        elif whole is None:
            ranks.append(1)  # a literal with a parameter inside it
        elif whole.group(1):
            ranks.append(5)
        elif whole.group(4):
            ranks.append(4)
        else:
            ranks.append(2 if whole.group(3) else 3)
    return tuple(ranks)


def _value_regex(match: re.Match[str]) -> str:
    return _CONSTRAINTS.get((match.group(3) or "").lower(), r"[^/]+")


@dataclass(frozen=True)
class HttpRoute:
    spec: FunctionSpec
    template: str
    pattern: re.Pattern[str]
    methods: frozenset[str] | None  # None: every method
    auth_level: str

    @classmethod
    def of(cls, spec: FunctionSpec) -> HttpRoute:
        trigger = spec.trigger
        methods = trigger.get("methods")
        route = str(trigger.get("route") or spec.name)
        return cls(
            spec=spec,
            template=route,
            pattern=compile_route(route),
            methods=frozenset(m.upper() for m in methods) if methods else None,
            auth_level=str(trigger.get("authLevel", "FUNCTION")).upper(),
        )


def http_routes(functions: Mapping[str, FunctionSpec]) -> list[HttpRoute]:
    """The HTTP functions' routes in the order the host tries them."""
    routes = [HttpRoute.of(spec) for spec in functions.values() if spec.is_http]
    return sorted(routes, key=lambda route: route_precedence(route.template))


def function_url(
    base_url: str, spec: FunctionSpec, config: HostConfig, key: str | None = None
) -> str:
    """The URL of an HTTP function (its route without parameters filled in), ``?code=key``."""
    route = str(spec.trigger.get("route") or spec.name).strip("/")
    prefix = f"/{config.route_prefix}" if config.route_prefix else ""
    code = f"?code={key}" if key is not None else ""
    return f"{base_url}{prefix}/{route}{code}"


def to_starlette(result: Any) -> Response:
    """The HTTP answer for what an HTTP function returned (HttpResponse, str, bytes or None)."""
    if result is None:
        return Response(status_code=204)
    if isinstance(result, str | bytes):
        return Response(result, status_code=200, media_type="text/plain")
    if not isinstance(result, func.HttpResponse):
        logger.error("HTTP function returned %s, not an HttpResponse", type(result).__name__)
        return Response(status_code=500)
    headers = dict(result.headers.items())
    if not any(key.lower() == "content-type" for key in headers) and result.mimetype:
        charset = f"; charset={result.charset}" if result.charset else ""
        headers["content-type"] = f"{result.mimetype}{charset}"
    return Response(result.get_body(), status_code=result.status_code, headers=headers)


def same_key(presented: str, expected: str) -> bool:
    return hmac.compare_digest(presented.encode(), expected.encode())


class HttpApp:
    """The ASGI app of one host: HTTP triggers and the admin API.

    ``run_now(spec, input)`` starts a non-HTTP function (the admin API's ``POST
    /admin/functions/<name>``); ``status()`` adds to the admin status answer.
    """

    def __init__(
        self,
        invoker: Invoker,
        function_key: str,
        *,
        run_now: Callable[[FunctionSpec, str], None],
        status: Callable[[], Mapping[str, Any]],
    ) -> None:
        self.invoker = invoker
        self.function_key = function_key
        self.config = HostConfig()
        self.functions: dict[str, FunctionSpec] = {}
        self.routes: list[HttpRoute] = []
        self._run_now = run_now
        self._status = status

    def load(self, config: HostConfig, functions: Mapping[str, FunctionSpec]) -> None:
        self.config = config
        self.functions = dict(functions)
        self.routes = http_routes(functions)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        response = await self.handle(request)
        await response(scope, receive, send)

    def authorized(self, request: Request) -> bool:
        presented = request.query_params.get("code") or request.headers.get("x-functions-key")
        return presented is not None and same_key(presented, self.function_key)

    async def handle(self, request: Request) -> Response:
        """Route one HTTP request to its function (or the admin API) and answer it."""
        path = request.url.path
        if path.startswith("/admin/"):
            return await self._admin(request)
        prefix = f"/{self.config.route_prefix}/" if self.config.route_prefix else "/"
        if not path.startswith(prefix):
            return Response(status_code=404)
        relative = path[len(prefix) :].rstrip("/")
        for route in self.routes:
            match = route.pattern.fullmatch(relative)
            # The host treats the methods as part of the route: another method is a 404.
            if match is None or (
                route.methods is not None and request.method.upper() not in route.methods
            ):
                continue
            if route.auth_level != "ANONYMOUS" and not self.authorized(request):
                return Response(status_code=401)
            params = {k: v for k, v in match.groupdict().items() if v is not None}
            return await self._call_http(route.spec, request, params)
        return Response(status_code=404)

    async def _call_http(
        self, spec: FunctionSpec, request: Request, route_params: dict[str, str]
    ) -> Response:
        body = await request.body()
        headers: dict[str, str] = {}
        for key, value in request.headers.items():
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        http_request = func.HttpRequest(
            method=request.method,
            url=str(request.url),
            headers=headers,
            params=dict(request.query_params),
            route_params=route_params,
            body=body,
        )
        outputs = self.invoker.outputs(spec)
        kwargs: dict[str, Any] = {str(spec.trigger["name"]): http_request, **outputs}
        task = self.invoker.start(spec, kwargs)
        try:
            result = await asyncio.shield(task)
        except Exception:  # noqa: BLE001 - any failure of the function is a 500
            # The host answers a failed invocation with a bare 500.
            return Response(status_code=500)
        http_out = next(
            (b for b in spec.bindings if b.get("type") == "http" and b.get("name") != "$return"),
            None,
        )
        if http_out is not None:
            result = outputs.pop(str(http_out["name"])).get()
        try:
            await self.invoker.flush_outputs(spec, outputs)
        except Exception as exc:  # noqa: BLE001 - an output the host cannot write fails the call
            logger.error("Function %s: writing outputs failed: %s", spec.name, type(exc).__name__)
            return Response(status_code=500)
        return to_starlette(result)

    async def _admin(self, request: Request) -> Response:
        # The admin API needs the master key in Azure; the sandbox has one key for everything.
        if not self.authorized(request):
            return Response(status_code=401)
        path = request.url.path.rstrip("/")
        if path == "/admin/host/status" and request.method == "GET":
            return JSONResponse(
                {"state": "Running", "functions": sorted(self.functions), **self._status()}
            )
        if path.startswith("/admin/functions/") and request.method == "POST":
            spec = self.functions.get(path.removeprefix("/admin/functions/"))
            if spec is None or spec.is_http:
                return Response(status_code=404)
            raw = await request.body()
            try:
                payload = json.loads(raw) if raw.strip() else {}
            except ValueError:
                return JSONResponse({"error": 'the body must be JSON like {"input": "..."}'}, 400)
            text = str(payload.get("input", "")) if isinstance(payload, dict) else ""
            self._run_now(spec, text)
            return Response(status_code=202)
        return Response(status_code=404)
