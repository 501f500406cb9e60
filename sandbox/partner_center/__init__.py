"""The Partner Center emulator (SPEC 9): ``create_app()`` returns the ASGI app.

API (bearer token required): ``/v1.0/engagements/referrals`` (POST, GET list with ``$filter``,
``$orderby``, ``$top``, ``$select``, ``$skip``, ``$count``, paging), ``/referrals/{id}`` (GET,
PATCH, PUT) and ``/webhooks/v1/registration`` (GET/POST/PUT, ``/events``, ``/validationEvents``).

Control (no token): ``GET /_emulator/health``, ``POST /_emulator/reset``, ``GET /_emulator/stats``,
``PUT|DELETE /_emulator/faults``, ``POST /_emulator/microsoft/referrals``,
``POST /_emulator/microsoft/referrals/{id}/patch``, ``POST /_emulator/webhooks/idle`` (waits for
queued deliveries), ``GET /_emulator/certificates/{signing.cer|signing.pem|root.pem}`` (the
webhook signing certificate; its AIA ``caIssuers`` URL is ``GET /_emulator/pki/intermediate.cer``).
"""

from .app import DEFAULT_TOKEN, create_app
from .signing import SigningAuthority

__all__ = ["DEFAULT_TOKEN", "SigningAuthority", "create_app"]
