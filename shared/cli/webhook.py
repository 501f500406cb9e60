"""``cosell webhook register|show|test|unregister [--only partner-center|dataverse]``: both
pushes into the app (SPEC 10) — the tenant's Partner Center webhook (reference §4.1) and
Dataverse's service endpoint and steps (reference: dataverse-push-and-webhook-trust §1.2,
``shared.dataverse_push``). Without ``--only`` a command does both, Partner Center first.

Partner Center keeps one registration per tenant and sends events only to its latest URL, so
registering a different URL takes events away from another deployment: that needs
``--overwrite``; so does pointing our Dataverse endpoint at another URL. Function keys in webhook
URLs (``?code=``) are never printed; Dataverse gets the key as the endpoint's WebhookKey
``authvalue`` (sent as ``?code=``, never readable back).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

from shared.cli._context import Context
from shared.cli._output import mask_url
from shared.cli._parser import add_command, add_group
from shared.cli._settings_file import file_values
from shared.dataverse_push import (
    WEBHOOK_ROUTE as DATAVERSE_ROUTE,
)
from shared.dataverse_push import (
    EndpointInUse,
    PushRegistrar,
    PushReport,
    push_steps,
)
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
from shared.sync.engine import sync_policy

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
    group = add_group(
        commands,
        "webhook",
        help="register, show, test or unregister the Partner Center webhook and Dataverse push",
    )
    register = add_command(
        group,
        "register",
        help="register Partner Center's referral events and Dataverse's push to the app",
        examples=(
            "cosell webhook register --url "
            "'https://cosell-prod.azurewebsites.net/api/webhooks/partner-center?code=<key>'",
            "cosell webhook register --url https://.../api/webhooks/partner-center?code=<key> "
            "--overwrite",
            "cosell webhook register --only dataverse --dataverse-url "
            "'https://cosell-prod.azurewebsites.net/api/webhooks/dataverse?code=<key>'",
            "cosell webhook register            # sandbox: the local host's URLs",
        ),
        notes="Without --url the URL is derived only in the sandbox (the local Functions host, "
        "SANDBOX_HOST_PORT and SANDBOX_FUNCTION_KEY). Without --dataverse-url the Dataverse "
        "push goes to --url's host with the route /api/webhooks/dataverse and the same key "
        "(a host key serves both functions). In Azure, get the function keys with\n"
        "  az functionapp function keys list -g <group> -n <app> "
        "--function-name partner_center_webhook   (or dataverse_webhook)\n"
        "Dataverse gets one service endpoint (WebhookKey auth) and asynchronous post-operation "
        "steps: opportunity Create/Update (filtered to the columns the mapping reads), "
        "Win/Lose, and solution-row Create/Update/Delete. A second run changes nothing; a "
        "changed mapping updates the filtering attributes.",
        handler=register_webhook,
    )
    _add_only(register)
    register.add_argument(
        "--dataverse-url",
        help="dataverse_webhook's URL with its function key (?code=...); see the notes",
    )
    register.add_argument("--url", help="the webhook URL, with its function key (?code=...)")
    register.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a registration that points to another URL (it stops getting events)",
    )
    show = add_command(
        group,
        "show",
        help="show the current registrations (URLs with the key hidden, events, steps)",
        examples=("cosell webhook show", "cosell webhook show --only dataverse --json"),
        notes="Exit status 1 when a push asked for is not registered. For Dataverse: the "
        "endpoint, each step with its filtering attributes and image, and how many deliveries "
        "failed (System Jobs with statuscode 31).",
        handler=show_webhook,
    )
    _add_only(show)
    unregister = add_command(
        group,
        "unregister",
        help="remove our registrations (other endpoints and steps are left alone)",
        examples=("cosell webhook unregister --only dataverse",),
        notes="Dataverse: our service endpoint and its steps (found by name; other endpoints "
        "and their steps stay). Partner Center documents no way to remove its registration: "
        "it is left and the command says so.",
        handler=unregister_webhook,
    )
    _add_only(unregister)
    test = add_command(
        group,
        "test",
        help="send a test event to each push and report its delivery",
        examples=("cosell webhook test", "cosell webhook test --timeout 120"),
        notes="Partner Center allows 2 test events per minute. Also shows the chain of the "
        "signing certificate (subject, issuer, not after, SHA-256 per certificate) as the app "
        "verifies it: leaf, intermediates from their AIA URLs, trusted root. Exit status 0 "
        "when the event reached the webhook with a 2xx answer and, with "
        "WEBHOOK_SIGNATURE_MODE=verify, the chain is trusted. Dataverse has no test event: "
        "the command posts a harmless push (a solution row naming no opportunity: nothing is "
        "enqueued) to dataverse_webhook with its key, as Dataverse would, and reports failed "
        "deliveries of the registered steps.",
        handler=test_webhook,
    )
    _add_only(test)
    test.add_argument(
        "--dataverse-url",
        help="dataverse_webhook's URL with its key (default in the sandbox: the local host's)",
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


def _add_only(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--only",
        choices=("partner-center", "dataverse"),
        help="only this push (default: both)",
    )


def _wants(ctx: Context, push: str) -> bool:
    only = getattr(ctx.args, "only", None)
    return only is None or only == push


def derived_url(environ: dict[str, str] | None = None, *, route: str = WEBHOOK_ROUTE) -> str:
    """The sandbox host's webhook URL (outside the sandbox the function key is not known)."""
    env = os.environ if environ is None else environ
    port = env.get("SANDBOX_HOST_PORT", "7071")
    key = env.get("SANDBOX_FUNCTION_KEY", "sandbox")
    return f"http://127.0.0.1:{port}{route}?code={key}"


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


_Side = Callable[[Context, dict[str, Any]], Awaitable[int]]


async def _both_sides(
    ctx: Context, partner_center: _Side, dataverse: _Side, *, stop_on_failure: bool = False
) -> int:
    """Run a subcommand for Partner Center's webhook and Dataverse's push (``--only`` picks
    one); the worst exit code, and one JSON document with a key per side."""
    documents: dict[str, Any] = {}
    code = await partner_center(ctx, documents) if _wants(ctx, "partner-center") else 0
    if _wants(ctx, "dataverse") and not (stop_on_failure and code):
        code = max(code, await dataverse(ctx, documents))
    if ctx.out.json_mode and documents:
        ctx.out.json(documents)
    return code


async def register_webhook(ctx: Context) -> int:
    # A failed Partner Center registration stops there: the push would point at the same app.
    return await _both_sides(
        ctx, _register_partner_center, _register_dataverse, stop_on_failure=True
    )


async def show_webhook(ctx: Context) -> int:
    return await _both_sides(ctx, _show_partner_center, _show_dataverse)


async def test_webhook(ctx: Context) -> int:
    return await _both_sides(ctx, _test_partner_center, _test_dataverse)


async def _register_partner_center(ctx: Context, documents: dict[str, Any]) -> int:
    args, out = ctx.args, ctx.out
    url = args.url or (derived_url(_sandbox_environ(ctx)) if ctx.settings.sandbox else None)
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
    out.note(f"Partner Center webhook URL: {mask_url(url)}")
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
        documents.update(document)
    else:
        _show(ctx, document, title=f"Webhook {action}:")
        if action != "unchanged":
            out.line()
            out.line("Next: `cosell webhook test` sends a test event and reports its delivery.")
    return 0


async def _show_partner_center(ctx: Context, documents: dict[str, Any]) -> int:
    pc = await ctx.partner_center()
    document = _registration_document(await pc.get_webhook_registration())
    if ctx.out.json_mode:
        documents.update(document)
    if not document["registered"]:
        ctx.out.note("cosell: no webhook is registered; run `cosell webhook register`")
        return 1
    if not ctx.out.json_mode:
        _show(ctx, document, title="Webhook registration:")
    return 0


async def _test_partner_center(ctx: Context, documents: dict[str, Any]) -> int:
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
        documents.update(document)
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


# -- Dataverse push ---------------------------------------------------------------------------


def _split_key(url: str) -> tuple[str, str | None]:
    """(the URL without ``code=``, the key): Dataverse sends the key itself (WebhookKey)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    key = next((v for k, v in query if k.lower() == "code"), None)
    rest = urlencode([(k, v) for k, v in query if k.lower() != "code"])
    return urlunsplit(parts._replace(query=rest)), key


def _dataverse_url(ctx: Context) -> str | None:
    """``--dataverse-url``, else ``--url`` on the Dataverse route, else the sandbox's."""
    args = ctx.args
    if getattr(args, "dataverse_url", None):
        return str(args.dataverse_url)
    if getattr(args, "url", None):
        parts = urlsplit(str(args.url))
        return urlunsplit(parts._replace(path=DATAVERSE_ROUTE))
    if not ctx.settings.sandbox:
        return None
    return derived_url(_sandbox_environ(ctx), route=DATAVERSE_ROUTE)


def _sandbox_environ(ctx: Context) -> dict[str, str]:
    """``SANDBOX_HOST_PORT``/``SANDBOX_FUNCTION_KEY`` from ``--settings-file`` (``make up`` writes
    them to ``.sandbox/local.settings.json``) under the environment, which wins as for every
    setting: so the running sandbox's host is found on whatever port it got. The file was read
    already when the settings loaded; a broken one would have stopped the command there."""
    return file_values(getattr(ctx.args, "settings_file", None))


async def _register_dataverse(ctx: Context, documents: dict[str, Any]) -> int:
    out = ctx.out
    url = _dataverse_url(ctx)
    if not url:
        out.error(
            "--dataverse-url (or --url) is required outside the sandbox: dataverse_webhook's "
            f"URL with its function key, e.g. https://<app>.azurewebsites.net{DATAVERSE_ROUTE}"
            "?code=<key>"
        )
        return 1
    base, key = _split_key(url)
    if key is None and ctx.settings.sandbox:  # the local host's key (SPEC 9)
        key = os.environ.get("SANDBOX_FUNCTION_KEY", "sandbox")
    problem = _check_url(base) or (None if key else "needs the function key as ?code=<key>")
    if problem:
        out.error(f"Dataverse push URL {mask_url(url)}: {problem}")
        return 1
    out.note(f"Dataverse push URL: {mask_url(base)} (WebhookKey auth)")
    assert key is not None
    registrar = PushRegistrar(await ctx.dataverse())
    try:
        report = await registrar.register(
            base, key, push_steps(sync_policy(ctx.settings).columns), overwrite=ctx.args.overwrite
        )
    except EndpointInUse as exc:
        out.error(
            f"our Dataverse service endpoint points to {mask_url(exc.url)}; replacing it takes "
            "the push away from that deployment. Pass --overwrite to replace it."
        )
        return 1
    _report_dataverse(ctx, documents, report, title="Dataverse push")
    return 0


async def _show_dataverse(ctx: Context, documents: dict[str, Any]) -> int:
    report = await PushRegistrar(await ctx.dataverse()).show()
    _report_dataverse(ctx, documents, report, title="Dataverse push")
    if not report.registered:
        ctx.out.note("cosell: the Dataverse push is not registered; run `cosell webhook register`")
        return 1
    return 0


async def unregister_webhook(ctx: Context) -> int:
    out = ctx.out
    documents: dict[str, Any] = {}
    code = 0
    if _wants(ctx, "partner-center"):
        code = await _unregister_partner_center(ctx, documents)
    if _wants(ctx, "dataverse"):
        report = await PushRegistrar(await ctx.dataverse()).unregister()
        _report_dataverse(ctx, documents, report, title="Dataverse push")
    if out.json_mode and documents:
        out.json(documents)
    return code


async def _unregister_partner_center(ctx: Context, documents: dict[str, Any]) -> int:
    """Partner Center's webhook API documents no DELETE of a registration (reference:
    partner-center-referrals-api, open question 4): it is left as it is, and said so."""
    pc = await ctx.partner_center()
    current = await pc.get_webhook_registration()
    registered = current is not None and bool(current.webhook_url)
    documents["partner_center"] = {"registered": registered, "action": "left"}
    if registered and not ctx.out.json_mode:
        ctx.out.note(
            "cosell: the Partner Center webhook stays registered: its API documents no way to "
            "remove it (`cosell webhook register --overwrite --url ...` points it elsewhere)"
        )
    return 0


async def _test_dataverse(ctx: Context, documents: dict[str, Any]) -> int:
    """Post what Dataverse would for a solution row naming no opportunity (nothing is
    enqueued) to dataverse_webhook with its key; report failed deliveries of our steps."""
    out = ctx.out
    report = await PushRegistrar(await ctx.dataverse()).show()
    url = getattr(ctx.args, "dataverse_url", None)
    if not url and report.url and ctx.settings.sandbox:
        key = os.environ.get("SANDBOX_FUNCTION_KEY", "sandbox")
        url = f"{report.url}?code={key}"
    if not url:
        if not report.registered and ctx.args.only is None:
            out.note("cosell: the Dataverse push is not registered: not tested")
            return 0
        out.error("--dataverse-url is required: dataverse_webhook's URL with its key")
        return 1
    schema = sync_policy(ctx.settings).columns.schema
    row_id = str(uuid.uuid4())
    body = {
        "MessageName": "Update",
        "PrimaryEntityName": schema.solution.logical_name,
        "PrimaryEntityId": row_id,
        "InitiatingUserId": "00000000-0000-0000-0000-000000000000",
        "InputParameters": [
            {"key": "Target", "value": {"__type": "Entity:http://schemas.microsoft.com/xrm/2011/"
             "Contracts", "Attributes": [], "Id": row_id,
             "LogicalName": schema.solution.logical_name}},
        ],
    }  # fmt: skip
    headers = {
        "x-ms-dynamics-entity-name": schema.solution.logical_name,
        "x-ms-dynamics-request-name": "Update",
    }
    started = time.perf_counter()
    try:
        async with httpx.AsyncClient(timeout=ctx.args.timeout) as http:
            answer = await http.post(url, json=body, headers=headers)
        status: int | None = answer.status_code
        error = None if answer.is_success else f"answered {answer.status_code}"
    except httpx.HTTPError as exc:
        status, error = None, type(exc).__name__
    document = {
        "url": mask_url(url),
        "status": status,
        "delivered": error is None,
        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        "registered": report.registered,
        "failed_deliveries": report.failed_jobs,
    }
    if out.json_mode:
        documents["dataverse"] = document
    else:
        out.line()
        out.pairs(
            [(k.replace("_", " "), v) for k, v in document.items()], title="Dataverse push test:"
        )
    if error is not None:
        out.note(f"cosell: dataverse_webhook did not accept the push ({error}); is the app "
                 "running and the key in the URL right?")  # fmt: skip
        return 1
    return 0


def _report_dataverse(
    ctx: Context, documents: dict[str, Any], report: PushReport, *, title: str
) -> None:
    document = report.as_dict()
    document["url"] = mask_url(document["url"])
    if ctx.out.json_mode:
        documents["dataverse"] = document
        return
    out = ctx.out
    out.line()
    out.pairs(
        [
            ("service endpoint", report.endpoint_action if report.registered else "not registered"),
            ("url", document["url"]),
            ("failed deliveries", report.failed_jobs),
            ("other webhook endpoints", report.other_endpoints),
        ],
        title=f"{title}:",
    )
    if report.steps:
        out.table(
            [
                (s.get("name"), s.get("action"), s.get("filtering_attributes") or "—",
                 s.get("pre_image") or "—")
                for s in report.steps
            ],
            ("step", "action", "filtering attributes", "pre image"),
            title="Steps",
        )  # fmt: skip
