"""A local Functions host: runs ``function_app.py`` as it is, the way the Azure host does.

The app is indexed like the Python worker indexes it (reference §1.3): import the module, take its
``app``, call ``app.get_functions()`` once and read each function's bindings from
``get_function_json()``. The user functions are then called with the same ``azure.functions``
objects the worker builds, so what runs here is the code that runs in Azure:

* HTTP triggers are served under ``/<routePrefix>/<route>`` (host.json, default ``api``) with the
  function key (``?code=`` or ``x-functions-key``) for auth levels FUNCTION and ADMIN;
* timer triggers fire on their 6-field NCRONTAB schedules (``%SETTING%`` resolved from the
  environment), one run at a time per timer, and with several instances on one storage on one
  instance at a time (the host's singleton lock, §2.3);
* queue triggers follow host.json ``extensions.queues`` (§2.1): base64 bodies, batches with a
  refill threshold, retries through the visibility timeout, ``<queue>-poison`` after
  ``maxDequeueCount`` attempts, idle polling that backs off.

Async functions are awaited on the host's event loop; sync ones run in a thread pool (§1.4).
Invocations are logged with name, outcome and duration, never with bodies. A small part of the
host's admin API exists too: ``GET /admin/host/status`` and ``POST /admin/functions/<name>``
(run a timer or queue function now), both behind the key.

The modules, one job each:

* ``config``: host.json (``HostConfig``, ``QueueOptions``, ``parse_timespan``);
* ``indexing``: importing the app and reading its functions' bindings (``FunctionSpec``);
* ``context``: the ``func.Context`` an invocation gets;
* ``invoker``: calling a user function and writing its out-bindings;
* ``http``: routing HTTP triggers, the function key, the admin API;
* ``timers`` and ``singleton``: timer schedules and the lease that keeps a timer on one instance;
* ``queues``: the queue listener (batches, leases, retries, poison);
* ``clock``: the time timers and queues run on (``SystemClock``; ``VirtualClock`` for tests);
* ``server``: uvicorn in the background of a running loop;
* ``function_host``: ``FunctionHost``, one instance, putting the others together;
* ``process``: ``HostProcess``, one instance in a process of its own (``python -m sandbox.host``),
  for several instances side by side as Azure scales out;
* ``balancer``: ``RoundRobin``, the front door spreading HTTP requests over the instances.
"""

from sandbox.host.balancer import RoundRobin
from sandbox.host.clock import SYSTEM_CLOCK, Clock, SystemClock, VirtualClock
from sandbox.host.config import (
    DEFAULT_CONNECTION,
    DEFAULT_LEASE_S,
    MAX_QUEUE_NAME,
    MIN_POLLING_INTERVAL_S,
    HostConfig,
    QueueOptions,
    parse_timespan,
)
from sandbox.host.errors import HostError, InvocationError
from sandbox.host.function_host import FunctionHost
from sandbox.host.http import (
    HttpRoute,
    compile_route,
    function_url,
    route_precedence,
    to_starlette,
)
from sandbox.host.indexing import (
    FunctionSpec,
    index_app,
    index_module,
    load_functions,
    resolve_settings,
)
from sandbox.host.process import HostProcess
from sandbox.host.queues import poison_name
from sandbox.host.server import quiet_server, serve_in_background
from sandbox.host.singleton import LOCK_TABLE, TableLease

__all__ = [
    "DEFAULT_CONNECTION",
    "DEFAULT_LEASE_S",
    "LOCK_TABLE",
    "MAX_QUEUE_NAME",
    "MIN_POLLING_INTERVAL_S",
    "SYSTEM_CLOCK",
    "Clock",
    "FunctionHost",
    "FunctionSpec",
    "HostConfig",
    "HostError",
    "HostProcess",
    "HttpRoute",
    "InvocationError",
    "QueueOptions",
    "RoundRobin",
    "SystemClock",
    "TableLease",
    "VirtualClock",
    "compile_route",
    "function_url",
    "index_app",
    "index_module",
    "load_functions",
    "parse_timespan",
    "poison_name",
    "quiet_server",
    "resolve_settings",
    "route_precedence",
    "serve_in_background",
    "to_starlette",
]
