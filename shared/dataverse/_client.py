"""``DataverseClient``: the async Web API client (reference sections 1, 2, 4, 8).

One client per environment; it owns its connection pool and is an async context manager. The
transport is a constructor argument (tests pass ``httpx.ASGITransport`` of the emulator) and is
wrapped as ``RetryTransport(ThrottledTransport(transport))``: retries per SPEC 7 in one place,
adaptive throttling inside them.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import date
from functools import cached_property
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self
from uuid import UUID

import httpx

from shared.calls import count_request
from shared.dataverse._auth import (
    BearerAuth,
    CredentialTokenProvider,
    StaticTokenProvider,
    TokenProvider,
)
from shared.dataverse._batch import Create, Part, decode_responses, encode_change_set
from shared.dataverse._customizations import SOLUTION_HEADER, Customizations
from shared.dataverse._exceptions import (
    ConnectionFailed,
    NotFound,
    ServiceError,
    error_from_response,
)
from shared.dataverse._models import (
    ChoiceColumnMetadata,
    ColumnDefinition,
    Currency,
    LookupDefinition,
    OpportunityStatus,
    RelationshipMetadata,
    Row,
    TableDefinition,
    TableMetadata,
    WhoAmI,
)
from shared.dataverse._odata import Expand, Filter, check_name, eq, query_params, row_path
from shared.dataverse._throttle import AdaptiveThrottle, ThrottledTransport
from shared.retry import RetryPolicy, RetryTransport
from shared.telemetry import DATAVERSE, traced_transport

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential

API_PATH = "/api/data/v9.2/"
MAX_PAGE_SIZE = 5000  # reference section 2.3
# Headers every request carries (reference 1.2).
_HEADERS = {
    "Accept": "application/json",
    "OData-MaxVersion": "4.0",
    "OData-Version": "4.0",
    "If-None-Match": "null",
}
# Primary keys of Dataverse's own tables the sync uses; custom tables are named by the caller
# (``primary_keys=``, their prefix is the app's), others are looked up in metadata once.
_PRIMARY_KEYS = {
    "opportunities": "opportunityid",
    "accounts": "accountid",
    "contacts": "contactid",
    "leads": "leadid",
    "transactioncurrencies": "transactioncurrencyid",
}
# The metadata type to cast an attribute to for its options, by kind of choice column.
ChoiceKind = Literal["choice", "state", "status"]
_CHOICE_TYPES: dict[str, str] = {
    "choice": "PicklistAttributeMetadata",
    "state": "StateAttributeMetadata",
    "status": "StatusAttributeMetadata",
}
_ENTITY_ID = re.compile(r"\((?P<id>[0-9a-fA-F-]{36})\)$")


# A row's version: its time (whole seconds) and row version, which tells two writes in one
# second apart. Every table has both; a write returns them by default (the etag comes with any
# representation).
VERSION_COLUMNS = ["modifiedon", "versionnumber"]


class DataverseClient:
    """Async client of one Dataverse environment's Web API.

    Authenticate with exactly one of ``credential`` (an azure-identity async credential; tokens
    for ``<url>/.default``), ``token_provider`` or ``token`` (a static token, e.g. the sandbox's).

    Throttling: at most ``max_in_flight`` concurrent requests (cut while 429s arrive, restored
    after) and ``requests_per_window`` = (requests, seconds) sent per sliding window; or pass a
    ready ``throttle``. ``retry_policy`` configures ``shared.retry`` (tests pass a fast sleep).
    ``primary_keys`` maps entity sets to their primary key column (custom tables), saving the
    metadata lookup a keyed create would need. Building one from the app's settings is
    ``shared.wiring``'s job.
    """

    def __init__(
        self,
        url: str,
        *,
        credential: AsyncTokenCredential | None = None,
        token_provider: TokenProvider | None = None,
        token: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        retry_policy: RetryPolicy | None = None,
        throttle: AdaptiveThrottle | None = None,
        max_in_flight: int = 16,
        requests_per_window: tuple[int, float] | None = (6000, 300.0),
        timeout: float = 30.0,
        page_size: int = MAX_PAGE_SIZE,
        owns_credential: bool = False,
        primary_keys: Mapping[str, str] | None = None,
    ) -> None:
        given = [x for x in (credential, token_provider, token) if x is not None]
        if len(given) != 1:
            raise ValueError("pass exactly one of credential=, token_provider= or token=")
        self.url = url.rstrip("/")
        if token_provider is None:
            token_provider = (
                CredentialTokenProvider(credential, f"{self.url}/.default")
                if credential is not None
                else StaticTokenProvider(str(token))
            )
        self._credential = credential if owns_credential else None
        self._token_provider = token_provider
        if throttle is None:
            # Service protection's documented budget per user (reference 6); None turns it off
            # and leaves pacing to Retry-After alone.
            budget, window = requests_per_window or (None, 300.0)
            throttle = AdaptiveThrottle(max_in_flight, window_requests=budget, window_s=window)
        self.throttle = throttle
        inner = transport or httpx.AsyncHTTPTransport()
        self._page_size = max(1, min(page_size, MAX_PAGE_SIZE))
        self._http = httpx.AsyncClient(
            base_url=self.url + API_PATH,
            # One dependency span per call (shared.telemetry), its retries and 429s as events.
            transport=traced_transport(
                RetryTransport(ThrottledTransport(inner, self.throttle), retry_policy), DATAVERSE
            ),
            auth=BearerAuth(token_provider),
            headers=_HEADERS,
            timeout=timeout,
            event_hooks={"request": [count_request]},
        )
        self._currencies: dict[str, Currency] = {}
        self._currency_locks: dict[str, asyncio.Lock] = {}
        self._primary_keys = {**_PRIMARY_KEYS, **(primary_keys or {})}

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def check_token(self) -> None:
        """Get (or reuse the cached) token for ``<url>/.default``; raises what auth raises."""
        await self._token_provider.get_token()

    async def aclose(self) -> None:
        await self._http.aclose()
        if self._credential is not None:
            await self._credential.close()

    # -- plumbing -------------------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        check: bool = True,
    ) -> httpx.Response:
        """One request; ``check=False`` leaves an error answer to the caller to read."""
        try:
            response = await self._http.request(
                method, url, params=params, json=json, content=content, headers=headers
            )
        except httpx.TransportError as exc:
            raise ConnectionFailed(
                f"no answer from Dataverse ({type(exc).__name__})", method=method, url=url
            ) from exc
        if check and response.status_code >= 400:
            raise error_from_response(response)
        return response

    def _same_origin(self, url: str) -> bool:
        base, link = self._http.base_url, httpx.URL(url)
        return (link.scheme, link.host, link.port) == (base.scheme, base.host, base.port)

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ServiceError(
                "expected a JSON object from the Web API",
                status=response.status_code,
                method=response.request.method,
                url=response.request.url.path,
            )
        return body

    async def primary_key(self, entity_set: str) -> str:
        """The primary key column of ``entity_set`` (known tables, else metadata, cached)."""
        key = self._primary_keys.get(entity_set)
        if key is None:
            response = await self._send(
                "GET",
                "EntityDefinitions",
                params={
                    "$select": "PrimaryIdAttribute",
                    "$filter": str(eq("EntitySetName", check_name(entity_set))),
                },
            )
            found = self._json(response).get("value") or []
            if not found:
                raise NotFound(f"no table has the entity set {entity_set!r}")
            key = str(found[0]["PrimaryIdAttribute"])
            self._primary_keys[entity_set] = key
        return key

    # -- reads ----------------------------------------------------------------------------------

    async def get(
        self,
        entity_set: str,
        row_id: UUID | str,
        *,
        select: Sequence[str] | None = None,
        expand: Sequence[str | Expand] | None = None,
    ) -> Row:
        """One row by primary key; ``NotFound`` if it does not exist."""
        response = await self._send(
            "GET", row_path(entity_set, row_id), params=query_params(select=select, expand=expand)
        )
        return self._json(response)

    async def list_rows(
        self,
        entity_set: str,
        *,
        select: Sequence[str] | None = None,
        filter: Filter | None = None,
        orderby: Sequence[str] | None = None,
        expand: Sequence[str | Expand] | None = None,
        top: int | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[Row]:
        """Every matching row; pages are fetched as needed by following ``@odata.nextLink``
        unchanged with the same ``odata.maxpagesize`` (reference 2.3). Give an ``orderby``
        ending in a unique column for stable paging (Dataverse appends the primary key)."""
        params = query_params(select=select, filter=filter, orderby=orderby, expand=expand, top=top)
        size = max(1, min(page_size or self._page_size, MAX_PAGE_SIZE))
        # $top and odata.maxpagesize must not be combined (reference 2.3).
        headers = {} if top is not None else {"Prefer": f"odata.maxpagesize={size}"}
        url: str | None = entity_set
        first = True
        while url is not None:
            response = await self._send(
                "GET", url, params=params if first else None, headers=headers
            )
            first = False
            body = self._json(response)
            for row in body.get("value") or []:
                yield row
            next_link = body.get("@odata.nextLink")
            url = next_link if isinstance(next_link, str) and next_link else None
            if url is not None and not self._same_origin(url):
                # The bearer token must only ever go to this environment.
                raise ServiceError(
                    "@odata.nextLink points outside the Dataverse environment",
                    status=response.status_code,
                    method="GET",
                    url=response.request.url.path,
                )

    async def first(
        self,
        entity_set: str,
        *,
        select: Sequence[str] | None = None,
        filter: Filter | None = None,
        orderby: Sequence[str] | None = None,
        expand: Sequence[str | Expand] | None = None,
    ) -> Row | None:
        """The first matching row, or None (one request with ``$top=1``)."""
        async for row in self.list_rows(
            entity_set, select=select, filter=filter, orderby=orderby, expand=expand, top=1
        ):
            return row
        return None

    # -- writes ---------------------------------------------------------------------------------

    async def _representation(
        self,
        method: str,
        url: str,
        data: Mapping[str, Any],
        *,
        select: Sequence[str] | None,
        headers: dict[str, str],
        expand: Sequence[str | Expand] | None = None,
    ) -> httpx.Response:
        # Prefer: return=representation gives the new etag in the same request (reference 1.2).
        headers = {**headers, "Prefer": "return=representation"}
        params = query_params(select=list(select or VERSION_COLUMNS), expand=expand)
        return await self._send(method, url, params=params, json=dict(data), headers=headers)

    async def create(
        self,
        entity_set: str,
        data: Mapping[str, Any],
        *,
        row_id: UUID | str | None = None,
        select: Sequence[str] | None = None,
        expand: Sequence[str | Expand] | None = None,
    ) -> Row:
        """Create a row and return it (primary key, ``@odata.etag``, ``modifiedon`` and
        ``select``; ``expand`` returns rows made by a deep insert too). With ``row_id`` the
        client chooses the primary key, so a repeated create raises ``AlreadyExists`` instead
        of making a second row. ``shared.retry`` never repeats a POST after a 5xx or timeout
        (it may have landed); the caller repeats it by id."""
        response = await self._representation(
            "POST",
            check_name(entity_set),
            await self._keyed(entity_set, data, row_id),
            select=select,
            headers={},
            expand=expand,
        )
        return await self._written(entity_set, response)

    async def _keyed(
        self, entity_set: str, data: Mapping[str, Any], row_id: UUID | str | None
    ) -> dict[str, Any]:
        """The body of a create, with the primary key the caller chose (if any)."""
        body = dict(data)
        if row_id is not None:
            body[await self.primary_key(entity_set)] = str(UUID(str(row_id)))
        return body

    async def create_in_change_set(self, creates: Sequence[Create]) -> list[Row]:
        """Create several rows in one ``$batch`` change set (reference 5): all or none, in one
        request. A later row may bind to an earlier one with ``content_id(i)`` (``$1`` is the
        first). Returns the rows as ``create`` does, in order; a failing part raises its typed
        error (``AlreadyExists``...) and nothing is created. Every operation counts against
        the window budget, as it does against service protection."""
        parts = []
        for item in creates:
            params = query_params(select=list(item.select or VERSION_COLUMNS), expand=item.expand)
            url = self._http.base_url.join(check_name(item.entity_set)).copy_merge_params(params)
            body = await self._keyed(item.entity_set, item.data, item.row_id)
            parts.append(Part("POST", str(url), body, {"Prefer": "return=representation"}))
        content_type, content = encode_change_set(parts)
        response = await self._send(
            "POST", "$batch", content=content, headers={"Content-Type": content_type}, check=False
        )
        self.throttle.charge(len(creates) - 1)
        try:
            answers = decode_responses(response)
        except ValueError:
            if response.status_code >= 400:
                raise error_from_response(response) from None
            raise ServiceError(
                "the $batch answer is not multipart", status=response.status_code
            ) from None
        failed = next((a for a in answers if a.status_code >= 400), None)
        if failed is not None:
            raise error_from_response(failed)
        if len(answers) != len(creates):
            raise ServiceError(f"$batch answered {len(answers)} parts for {len(creates)}")
        return [await self._written(c.entity_set, a) for c, a in zip(creates, answers, strict=True)]

    async def update(
        self,
        entity_set: str,
        row_id: UUID | str,
        data: Mapping[str, Any],
        *,
        etag: str = "*",
        select: Sequence[str] | None = None,
    ) -> Row:
        """Change an existing row and return it with its new etag. ``etag`` is the etag read
        earlier (412 → ``PreconditionFailed`` if the row changed since) or ``*`` (any version,
        but never create: 404 → ``NotFound``; reference 4.2-4.3)."""
        response = await self._representation(
            "PATCH",
            row_path(entity_set, row_id),
            data,
            select=select,
            headers={"If-Match": etag},
        )
        return await self._written(entity_set, response)

    async def upsert(
        self,
        entity_set: str,
        row_id: UUID | str,
        data: Mapping[str, Any],
        *,
        select: Sequence[str] | None = None,
    ) -> tuple[Row, bool]:
        """PATCH without ``If-Match``: update the row or create it with this id (reference
        4.2/4.4). Returns the row and whether it was created (201 vs 200)."""
        response = await self._representation(
            "PATCH", row_path(entity_set, row_id), data, select=select, headers={}
        )
        return await self._written(entity_set, response), response.status_code == 201

    async def _written(self, entity_set: str, response: httpx.Response) -> Row:
        if response.status_code != 204:
            return self._json(response)
        # A 204 (no representation) still names the row in OData-EntityId (reference 4.1).
        match = _ENTITY_ID.search(response.headers.get("OData-EntityId", ""))
        if match is None:
            raise ServiceError("the write returned neither a row nor OData-EntityId")
        return {await self.primary_key(entity_set): match.group("id")}

    async def delete(self, entity_set: str, row_id: UUID | str, *, etag: str | None = None) -> None:
        """Delete a row (404 → ``NotFound``; a stale ``etag`` → ``PreconditionFailed``)."""
        headers = {"If-Match": etag} if etag else None
        await self._send("DELETE", row_path(entity_set, row_id), headers=headers)

    # -- opportunity actions (reference 8.2) ----------------------------------------------------

    async def win_opportunity(
        self,
        opportunity_id: UUID | str,
        *,
        subject: str = "Won",
        status: int = OpportunityStatus.WON,
        actual_revenue: float | None = None,
        actual_end: date | None = None,
        description: str | None = None,
    ) -> None:
        """Close an opportunity as Won (a ``statecode`` PATCH is refused by Dataverse)."""
        await self._close(
            "WinOpportunity", opportunity_id, subject, status, actual_revenue, actual_end,
            description,
        )  # fmt: skip

    async def lose_opportunity(
        self,
        opportunity_id: UUID | str,
        *,
        subject: str = "Lost",
        status: int = OpportunityStatus.OUT_SOLD,
        actual_revenue: float | None = None,
        actual_end: date | None = None,
        description: str | None = None,
    ) -> None:
        """Close an opportunity as Lost: ``OUT_SOLD`` (5) or ``CANCELED`` (4) (SPEC 4.3)."""
        await self._close(
            "LoseOpportunity", opportunity_id, subject, status, actual_revenue, actual_end,
            description,
        )  # fmt: skip

    async def _close(
        self,
        action: str,
        opportunity_id: UUID | str,
        subject: str,
        status: int,
        actual_revenue: float | None,
        actual_end: date | None,
        description: str | None,
    ) -> None:
        close: dict[str, Any] = {
            "subject": subject,
            "opportunityid@odata.bind": "/" + row_path("opportunities", opportunity_id),
        }
        if actual_revenue is not None:
            close["actualrevenue"] = actual_revenue
        if actual_end is not None:
            close["actualend"] = actual_end.isoformat()
        if description is not None:
            close["description"] = description
        await self._send("POST", action, json={"Status": int(status), "OpportunityClose": close})

    # -- reference data -------------------------------------------------------------------------

    async def who_am_i(self) -> WhoAmI:
        """The application user (also a connectivity probe, reference 1.1)."""
        return WhoAmI.model_validate(self._json(await self._send("GET", "WhoAmI")))

    async def get_currency(self, iso_code: str) -> Currency:
        """The ``transactioncurrencies`` row of an ISO 4217 code, cached per client.

        Concurrent first lookups of one code wait for a single request: a backfill starts many
        syncs at once, and each would otherwise spend a request on the same row (SPEC 11).
        """
        code = iso_code.strip().upper()
        cached = self._currencies.get(code)
        if cached is not None:
            return cached
        async with self._currency_locks.setdefault(code, asyncio.Lock()):
            cached = self._currencies.get(code)
            if cached is not None:
                return cached
            return await self._look_up_currency(code)

    async def _look_up_currency(self, code: str) -> Currency:
        row = await self.first(
            "transactioncurrencies",
            select=[
                "isocurrencycode",
                "currencyname",
                "currencysymbol",
                "currencyprecision",
                "exchangerate",
            ],
            filter=eq("isocurrencycode", code),
        )
        if row is None:
            raise NotFound(f"the currency {code} is not enabled in this Dataverse environment")
        currency = Currency.model_validate(row)
        self._currencies[code] = currency
        return currency

    async def currency_id(self, iso_code: str) -> UUID:
        """The ``transactioncurrencyid`` for an ISO code (bind it as ``transactioncurrencyid``)."""
        return (await self.get_currency(iso_code)).id

    # -- metadata (for `cosell schema check|apply`) ---------------------------------------------

    async def get_table(self, logical_name: str) -> TableMetadata:
        """A table's definition with its columns; ``NotFound`` if there is no such table."""
        response = await self._send(
            "GET",
            f"EntityDefinitions(LogicalName='{check_name(logical_name)}')",
            params={"$expand": "Attributes"},
        )
        return TableMetadata.model_validate(self._json(response))

    async def find_table(self, logical_name: str) -> TableMetadata | None:
        try:
            return await self.get_table(logical_name)
        except NotFound:
            return None

    async def get_choice_options(
        self,
        table_logical_name: str,
        column_logical_name: str,
        *,
        kind: ChoiceKind = "choice",
    ) -> dict[int, str]:
        """A choice column's options: value → label (``UserLocalizedLabel``, the label in the
        calling user's language), e.g. ``{1: "Synced", 2: "Error", 3: "Pending"}``.

        ``OptionSet`` is a navigation property of the choice attribute types, not of
        ``AttributeMetadata``, so it is read through a cast to the column's type with
        ``$expand`` (one request). ``kind`` picks the type: ``"choice"`` (a picklist),
        ``"state"`` (``statecode``) or ``"status"`` (``statuscode``). ``NotFound`` if the table
        or column does not exist, or is not of that type (UNCERTAIN: the reference does not
        cover metadata; a cast to the wrong type is a 404 in OData)."""
        type_name = _CHOICE_TYPES[kind]
        # A picklist made from a global choice may carry its options in GlobalOptionSet; state
        # and status columns always have their own.
        expand = "OptionSet($select=Options)"
        if kind == "choice":
            expand += ",GlobalOptionSet($select=Options)"
        response = await self._send(
            "GET",
            f"EntityDefinitions(LogicalName='{check_name(table_logical_name)}')"
            f"/Attributes(LogicalName='{check_name(column_logical_name)}')"
            f"/Microsoft.Dynamics.CRM.{type_name}",
            params={"$select": "LogicalName", "$expand": expand},
        )
        return ChoiceColumnMetadata.model_validate(self._json(response)).options()

    async def list_one_to_many(self, logical_name: str) -> list[RelationshipMetadata]:
        """The one-to-many relationships where ``logical_name`` is the "one" side, e.g. for
        ``opportunity`` the one to ``cosell_solution`` whose collection-valued navigation
        property the engine expands (``crm_schema.opportunity_solutions``); lets
        `schema check` confirm that name instead of assuming it (reference 4.5)."""
        response = await self._send(
            "GET",
            f"EntityDefinitions(LogicalName='{check_name(logical_name)}')/OneToManyRelationships",
            params={
                "$select": "SchemaName,MetadataId,ReferencedEntity,ReferencingEntity,"
                "ReferencingAttribute,"
                "ReferencedEntityNavigationPropertyName,ReferencingEntityNavigationPropertyName"
            },
        )
        values = self._json(response).get("value") or []
        return [RelationshipMetadata.model_validate(v) for v in values]

    async def create_table(
        self, definition: TableDefinition, *, solution: str | None = None
    ) -> None:
        """Create a custom table with its primary name column (``AlreadyExists`` if present);
        ``solution`` names the unmanaged solution it joins (``MSCRM.SolutionUniqueName``)."""
        await self._send(
            "POST", "EntityDefinitions", json=definition.to_metadata(), headers=_in(solution)
        )

    async def create_column(
        self, table_logical_name: str, column: ColumnDefinition, *, solution: str | None = None
    ) -> None:
        """Add a custom column to a table (``AlreadyExists`` if the name is taken)."""
        await self._send(
            "POST",
            f"EntityDefinitions(LogicalName='{check_name(table_logical_name)}')/Attributes",
            json=column.to_metadata(),
            headers=_in(solution),
        )

    async def create_lookup(
        self, definition: LookupDefinition, *, solution: str | None = None
    ) -> None:
        """Add a lookup column through a one-to-many relationship."""
        await self._send(
            "POST", "RelationshipDefinitions", json=definition.to_metadata(), headers=_in(solution)
        )

    @cached_property
    def customizations(self) -> Customizations:
        """Solutions, forms, views, roles, export and import (``_customizations.py``)."""
        return Customizations(self)


def _in(solution: str | None) -> dict[str, str] | None:
    # Metadata created with this header joins that unmanaged solution (reference §4 of
    # dataverse-push-and-webhook-trust.md; create-update-column-definitions-using-web-api).
    return {SOLUTION_HEADER: solution} if solution else None
