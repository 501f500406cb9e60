"""The Dataverse Web API emulator (SPEC 9): ``create_app()`` returns the ASGI app.

API under ``/api/data/v9.2/`` (bearer token required): entity sets ``opportunities``,
``accounts``, ``contacts``, ``leads``, ``transactioncurrencies`` (seeded), ``cosell_solutions``,
``cosell_solutiondetails`` — collection GET (``$select``, ``$filter``, ``$orderby``, ``$top``,
``$expand``, ``Prefer: odata.maxpagesize`` paging) and POST (with deep insert of single-valued
navigation properties); row GET/PATCH/DELETE
(``If-Match``, ``If-None-Match``, ``Prefer: return=representation``); ``DELETE .../<nav>/$ref``;
``WhoAmI``; ``WinOpportunity`` / ``LoseOpportunity``; ``EntityDefinitions`` (GET, POST,
``(LogicalName='x')``, ``/Attributes`` GET/POST) and ``RelationshipDefinitions`` (POST).

Control (no token): ``GET /_emulator/health``, ``POST /_emulator/reset`` (currencies stay),
``GET /_emulator/stats``, ``PUT|DELETE /_emulator/faults``, ``GET|PUT /_emulator/limits``.

Not emulated: change tracking (``odata.track-changes``), ``$batch``, alternate keys, ``$count``,
collection-valued ``$expand``, and the execution-time service-protection limit.
"""

from sandbox.dataverse.app import Emulator, create_app, emulator_of
from sandbox.dataverse.limits import Faults, Limits

__all__ = ["Emulator", "Faults", "Limits", "create_app", "emulator_of"]
