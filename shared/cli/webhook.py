"""``cosell webhook register|show|test``: the tenant's Partner Center webhook (reference §4.1).

Partner Center keeps one registration per tenant and sends events only to its latest URL, so
registering a different URL takes events away from another deployment: that needs
``--overwrite``. Function keys in webhook URLs (``?code=``) are never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any
from urllib.parse import urlsplit

import httpx

from shared.cli._context import Context
from shared.cli._output import mask_url
from shared.cli._parser import add_command, add_group
from shared.partner_center import (
    SignatureError,
    TestEventResult,
    WebhookEventName,
    WebhookRegistration,
    describe_chain,
    load_certificate,
)
from shared.runtime import certificate_http_client, fetch_certificate, webhook_verifier_for
from shared.settings import is_loopback_url

WEBHOOK_ROUTE = "/api/webhooks/partner-center"
# The four referral events (reference §4.2) and test-created, which `webhook test` needs.
EVENTS = tuple(e.value for e in WebhookEventName)
_FINAL = frozenset({"succeeded", "failed", "completed", "delivered"})
# Where deliveries say the signing certificate is: the sample of Partner Center's webhook docs
# (reference: dataverse-push-and-webhook-trust §2), and the Partner Center emulator's.
DOCUMENTED_CERTIFICATE_URL = (
    "https://3psostorageacct.blob.core.windows.net/cert/pcnotifications-dispatch.microsoft.com.cer"
)
EMULATOR_CERTIFICATE_PATH = "/_emulator/certificates/signing.cer"


def add_parser(commands: Any) -> None:
    group = add_group(commands, "webhook", help="register, show or test the Partner Center webhook")
    register = add_command(
        group,
        "register",
        help="register the four referral events (and test-created) to the app's webhook URL",
        examples=(
            "cosell webhook register --url "
            "'https://cosell-prod.azurewebsites.net/api/webhooks/partner-center?code=<key>'",
            "cosell webhook register --url https://.../api/webhooks/partner-center?code=<key> "
            "--overwrite",
            "cosell webhook register            # sandbox: the local host's URL",
        ),
        notes="Without --url the URL is derived only in the sandbox (the local Functions host, "
        "SANDBOX_HOST_PORT and SANDBOX_FUNCTION_KEY). In Azure, get the function key with\n"
        "  az functionapp function keys list -g <group> -n <app> "
        "--function-name partner_center_webhook",
        handler=register_webhook,
    )
    register.add_argument("--url", help="the webhook URL, with its function key (?code=...)")
    register.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a registration that points to another URL (it stops getting events)",
    )
    add_command(
        group,
        "show",
        help="show the current registration (URL with the key hidden, events)",
        examples=("cosell webhook show", "cosell webhook show --json"),
        notes="Exit status 1 when no webhook is registered.",
        handler=show_webhook,
    )
    test = add_command(
        group,
        "test",
        help="ask Partner Center to send a test event and report its delivery",
        examples=("cosell webhook test", "cosell webhook test --timeout 120"),
        notes="Partner Center allows 2 test events per minute. Also shows the chain of the "
        "signing certificate (subject, issuer, not after, SHA-256 per certificate) as the app "
        "verifies it: leaf, intermediates from their AIA URLs, trusted root. Exit status 0 "
        "when the event reached the webhook with a 2xx answer and, with "
        "WEBHOOK_SIGNATURE_MODE=verify, the chain is trusted.",
        handler=test_webhook,
    )
    test.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds to wait for the delivery result (default 60)",
    )
    test.add_argument(
        "--certificate-url",
        help="the signing certificate to show the chain of (default: the x-ms-certificate-url "
        "of Microsoft's webhook docs; in the sandbox, the emulator's)",
    )
    test.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)


def derived_url(environ: dict[str, str] | None = None) -> str:
    """The sandbox host's webhook URL (outside the sandbox the function key is not known)."""
    env = os.environ if environ is None else environ
    port = env.get("SANDBOX_HOST_PORT", "7071")
    key = env.get("SANDBOX_FUNCTION_KEY", "sandbox")
    return f"http://127.0.0.1:{port}{WEBHOOK_ROUTE}?code={key}"


def _registration_document(registration: WebhookRegistration | None) -> dict[str, Any]:
    if registration is None or not registration.webhook_url:
        return {"registered": False}
    events = [str(getattr(e, "value", e)) for e in registration.webhook_events]
    return {
        "registered": True,
        "webhook_url": mask_url(registration.webhook_url),
        "events": events,
        "missing_events": [e for e in EVENTS if e not in events],
        "subscriber_id": registration.subscriber_id,
        "signature_in_header": registration.signature_token_to_ms_signature_header,
    }


def _show(ctx: Context, document: dict[str, Any], *, title: str) -> None:
    rows = [
        ("webhook url", document["webhook_url"]),
        ("events", document["events"]),
        ("missing events", document["missing_events"] or "none"),
        ("subscriber id", document["subscriber_id"]),
        ("signature in header", document["signature_in_header"]),
    ]
    # The View answer carries only the URL and events (reference §4.1): skip what is absent.
    ctx.out.pairs([(k, v) for k, v in rows if v is not None], title=title)


async def register_webhook(ctx: Context) -> int:
    args, out = ctx.args, ctx.out
    url = args.url or (derived_url() if ctx.settings.sandbox else None)
    if not url:
        out.error(
            "--url is required outside the sandbox: the webhook URL of the Function App with "
            "its function key, e.g. https://<app>.azurewebsites.net"
            f"{WEBHOOK_ROUTE}?code=<key>"
        )
        return 1
    problem = _check_url(url)
    if problem:
        out.error(f"--url {mask_url(url)}: {problem}")
        return 1
    pc = await ctx.partner_center()
    current = await pc.get_webhook_registration()
    if current is None or not current.webhook_url:
        saved, action = await pc.register_webhook(url, events=EVENTS), "registered"
    else:
        current_events = {str(getattr(e, "value", e)) for e in current.webhook_events}
        if current.webhook_url == url and set(EVENTS) <= current_events:
            saved, action = current, "unchanged"
        elif current.webhook_url != url and not args.overwrite:
            out.error(
                f"a webhook is already registered to {mask_url(current.webhook_url)}; "
                "Partner Center sends events to one URL only, so replacing it takes them away "
                "from that endpoint. Pass --overwrite to replace it."
            )
            return 1
        else:
            saved, action = await pc.update_webhook(url, events=EVENTS), "updated"
    document = {"action": action, **_registration_document(saved)}
    if out.json_mode:
        out.json(document)
    else:
        _show(ctx, document, title=f"Webhook {action}:")
        if action != "unchanged":
            out.line()
            out.line("Next: `cosell webhook test` sends a test event and reports its delivery.")
    return 0


async def show_webhook(ctx: Context) -> int:
    pc = await ctx.partner_center()
    document = _registration_document(await pc.get_webhook_registration())
    if not document["registered"]:
        if ctx.out.json_mode:
            ctx.out.json(document)
        ctx.out.note("cosell: no webhook is registered; run `cosell webhook register`")
        return 1
    if ctx.out.json_mode:
        ctx.out.json(document)
    else:
        _show(ctx, document, title="Webhook registration:")
    return 0


async def test_webhook(ctx: Context) -> int:
    args, out = ctx.args, ctx.out
    pc = await ctx.partner_center()
    registration = await pc.get_webhook_registration()
    if registration is None or not registration.webhook_url:
        out.error("no webhook is registered; run `cosell webhook register` first")
        return 1
    events = {str(getattr(e, "value", e)) for e in registration.webhook_events}
    if WebhookEventName.TEST_CREATED.value not in events:
        # Partner Center refuses test events unless test-created is registered (§4.1).
        out.error("the registration lacks the test-created event; run `cosell webhook register`")
        return 1
    event = await pc.send_test_event()
    out.note(f"test event {event.correlation_id} sent; waiting for its delivery...")
    deadline = time.monotonic() + max(0.0, args.timeout)
    result: TestEventResult = await pc.get_test_event_result(event.correlation_id)
    while not _settled(result) and time.monotonic() < deadline:
        await asyncio.sleep(max(0.05, args.interval))
        result = await pc.get_test_event_result(event.correlation_id)
    delivered = result.delivered
    chain = await _certificate_chain(ctx)
    document = {
        "correlation_id": event.correlation_id,
        "webhook_url": mask_url(registration.webhook_url),
        "status": result.status,
        "delivered": delivered,
        "timed_out": not _settled(result),
        "attempts": [r.model_dump(mode="json") for r in result.results],
        "certificate": chain,
    }
    if out.json_mode:
        out.json(document)
    else:
        out.pairs(
            [
                ("correlation id", event.correlation_id),
                ("webhook url", document["webhook_url"]),
                ("status", result.status),
                ("delivered", delivered),
            ],
            title="Webhook test event:",
        )
        out.line()
        out.table(
            [
                (r.date_time_utc, r.response_code, r.response_message, r.system_error)
                for r in result.results
            ],
            ("attempt at", "answer", "message", "error"),
            title="Delivery attempts",
        )
        out.line()
        out.table(
            [(c["subject"], c["issuer"], c["not_after"], c["sha256"]) for c in chain["chain"]],
            ("subject", "issuer", "not after", "sha-256"),
            title=f"Signing certificate chain ({chain['url']})",
        )
        if chain["error"]:
            out.note(f"cosell: the signing certificate chain is not trusted: {chain['error']}")
    if not delivered:
        reason = (
            f"no delivery result within {args.timeout:.0f}s"
            if not _settled(result)
            else "the webhook did not answer 2xx"
        )
        out.note(
            f"cosell: test event not delivered: {reason}; is the app running and the "
            "function key in the URL right?"
        )
        return 1
    if chain["error"] and ctx.settings.webhook_signature_mode == "verify":
        return 1
    return 0


async def _certificate_chain(ctx: Context) -> dict[str, Any]:
    """The chain of the signing certificate as the app's verifier builds it: validated (root
    last), or, when it does not validate, the certificate itself and the reason."""
    url = ctx.args.certificate_url or _default_certificate_url(ctx)
    async with certificate_http_client(None) as http:

        async def fetch(location: str) -> bytes:
            return await fetch_certificate(http, location)

        verifier = webhook_verifier_for(ctx.settings, fetch)
        error: str | None = None
        certificates: list[Any] = []
        try:
            certificates = await verifier.certificate_chain(url)
        except (SignatureError, httpx.HTTPError) as exc:
            error = str(exc) or type(exc).__name__
            try:
                certificates = [load_certificate(await fetch(url))]
            except (SignatureError, httpx.HTTPError):
                certificates = []
    links = [
        {
            "subject": link.subject,
            "issuer": link.issuer,
            "not_after": link.not_after.isoformat(),
            "sha256": link.sha256,
        }
        for link in describe_chain(certificates)
    ]
    return {"url": url, "trusted": error is None, "error": error, "chain": links}


def _default_certificate_url(ctx: Context) -> str:
    if ctx.settings.sandbox:
        parts = urlsplit(ctx.settings.partner_center_api_url)
        return f"{parts.scheme}://{parts.netloc}{EMULATOR_CERTIFICATE_PATH}"
    return DOCUMENTED_CERTIFICATE_URL


def _settled(result: TestEventResult) -> bool:
    return result.delivered or (result.status or "").lower() in _FINAL


def _check_url(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "expected an absolute URL"
    if parts.scheme != "https" and not is_loopback_url(url):
        return "Partner Center delivers only to https URLs (http is accepted for localhost)"
    return None
