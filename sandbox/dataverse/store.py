"""In-memory rows with Dataverse's write rules: validation against the schema, ``@odata.bind``
lookups checked to exist, row versions behind ``@odata.etag``, a monotonic ``modifiedon``, and the
opportunity state rules (Won/Lost only through the close actions, reference 8.2).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sandbox.dataverse import odata, rules
from sandbox.dataverse.errors import (
    DataverseFault,
    duplicate_record,
    not_found,
    payload_error,
    version_mismatch,
)
from sandbox.dataverse.schema import (
    GUID,
    Column,
    Kind,
    OneToMany,
    Schema,
    Table,
    coerce,
    format_datetime,
    not_declared,
)
from sandbox.odata import Getter, Node

Row = dict[str, Any]

# (ISO code, name, symbol, precision, exchange rate to the base currency USD)
CURRENCIES = (
    ("USD", "US Dollar", "$", 2, 1.0),
    ("EUR", "Euro", "€", 2, 0.92),
    ("GBP", "Pound Sterling", "£", 2, 0.79),
    ("JPY", "Yen", "¥", 0, 150.0),
    ("CAD", "Canadian Dollar", "CA$", 2, 1.36),
    ("AUD", "Australian Dollar", "A$", 2, 1.52),
    ("CHF", "Swiss Franc", "CHF", 2, 0.88),
    ("INR", "Indian Rupee", "₹", 2, 83.0),
    ("CNY", "Yuan Renminbi", "¥", 2, 7.2),
    ("BRL", "Brazilian Real", "R$", 2, 5.0),
    ("SEK", "Swedish Krona", "kr", 2, 10.5),
    ("NOK", "Norwegian Krone", "kr", 2, 10.6),
    ("DKK", "Danish Krone", "kr", 2, 6.9),
    ("NZD", "New Zealand Dollar", "NZ$", 2, 1.65),
    ("SGD", "Singapore Dollar", "S$", 2, 1.34),
    ("MXN", "Mexican Peso", "MX$", 2, 17.0),
    ("ZAR", "Rand", "R", 2, 18.5),
    ("PLN", "Zloty", "zł", 2, 4.0),
)
# Fixed ids so a reset keeps the same currency rows (and clients' caches stay valid).
_CURRENCY_NAMESPACE = uuid.UUID("6d1f8a52-3c1e-4c36-9f0e-2f0d3c4b5a60")
BASE_CURRENCY = "USD"


def currency_id(iso_code: str) -> str:
    return str(uuid.uuid5(_CURRENCY_NAMESPACE, iso_code))


@dataclass
class Record:
    values: Row
    # lookup column -> entity set of the row it points at (polymorphic lookups need it)
    targets: dict[str, str] = field(default_factory=dict)

    @property
    def etag(self) -> str:
        return f'W/"{self.values["versionnumber"]}"'


@dataclass
class Payload:
    """What a write body asks for: column changes (by wire name), lookup targets, and the rows
    of a deep insert (reference 4.1): single-valued navigation objects, created first so the new
    row can point at them, and collection-valued arrays, created after it pointing back."""

    changes: Row = field(default_factory=dict)
    targets: dict[str, str] = field(default_factory=dict)
    related: list[tuple[Column, str, Row]] = field(default_factory=list)
    children: list[tuple[OneToMany, list[Row]]] = field(default_factory=list)


@dataclass(frozen=True)
class Caller:
    """The identity WhoAmI reports; it owns and modifies every row written through the API."""

    user_id: str = "4a5b6c7d-0000-4000-8000-00000000a001"
    business_unit_id: str = "4a5b6c7d-0000-4000-8000-00000000b001"
    organization_id: str = "4a5b6c7d-0000-4000-8000-00000000c001"


class Store:
    """All rows of all tables, in memory."""

    def __init__(
        self,
        schema: Schema,
        *,
        caller: Caller | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.schema = schema
        self.caller = caller or Caller()
        self._wall_clock = wall_clock
        self._version = 1_000_000
        self._last_s = 0
        self.tables: dict[str, dict[str, Record]] = {}
        self.closes: list[Row] = []  # the opportunityclose activities the close actions made
        # UNCERTAIN (the reference does not say): whether an @odata.bind may point at a row the
        # same deep insert creates through a single-valued navigation property. The platform
        # creates those related rows before the row itself, so it is taken to work; set False
        # to answer 404 as for any missing row (the client then falls back to a $batch).
        self.binds_to_nested_rows = True
        # undo log of the write in progress (see atomic): (entity set, row id, the row as it
        # was before, or None for a row the write inserted)
        self._journal: list[tuple[str, str, Record | None]] | None = None
        self.reset()

    # -- housekeeping -------------------------------------------------------------------------

    def reset(self) -> None:
        """Empty every table; the currencies come back (Dataverse keeps them, SPEC 9)."""
        self.tables = {name: {} for name in self.schema.tables}
        self.closes = []
        for iso, name, symbol, precision, rate in CURRENCIES:
            self.create(
                "transactioncurrencies",
                {
                    "transactioncurrencyid": currency_id(iso),
                    "isocurrencycode": iso,
                    "currencyname": name,
                    "currencysymbol": symbol,
                    "currencyprecision": precision,
                    "exchangerate": rate,
                },
            )

    def ensure_table(self, entity_set: str) -> None:
        self.tables.setdefault(entity_set, {})

    def backfill_column(self, table: Table, column: Column) -> None:
        """A new column reads as null on existing rows."""
        for record in self.tables.get(table.entity_set, {}).values():
            record.values.setdefault(column.wire_name, None)

    def count(self, entity_set: str) -> int:
        return len(self.tables.get(entity_set, {}))

    def _stamp(self) -> tuple[int, str]:
        """The next row version and ``modifiedon``, to the second as Dataverse stamps it
        ("2026-12-01T12:00:05Z"): two writes in one second share it, only ``versionnumber``
        (one counter for the organization, strictly increasing) tells them apart."""
        self._version += 1
        now_s = int(self._wall_clock())
        self._last_s = max(now_s, self._last_s)  # never backwards (a test's clock jump)
        stamp = datetime.fromtimestamp(self._last_s, UTC)
        return self._version, format_datetime(stamp)

    # -- reads ----------------------------------------------------------------------------------

    def table(self, entity_set: str) -> Table:
        table = self.schema.table(entity_set)
        if table is None:
            raise DataverseFault(
                404, "0x80060888", f"Resource not found for the segment '{entity_set}'."
            )
        return table

    def get(self, entity_set: str, row_id: str) -> Record:
        table = self.table(entity_set)
        record = self.tables[entity_set].get(row_id.lower())
        if record is None:
            raise not_found(table.logical_name, row_id)
        return record

    def find(self, entity_set: str, row_id: str) -> Record | None:
        return self.tables.get(entity_set, {}).get(row_id.lower())

    def value(self, table: Table, record: Record, path: str) -> Any:
        """A row's value at a wire name, or through one lookup (``nav/column``)."""
        if "/" not in path:
            return record.values.get(path)
        nav, _, rest = path.partition("/")
        found = table.navigation(nav)
        if found is None:
            return None
        column, target_set = found
        target_id = record.values.get(column.wire_name)
        if target_id is None or record.targets.get(column.name) != target_set:
            return None
        target = self.find(target_set, target_id)
        return None if target is None else target.values.get(rest)

    def select(
        self,
        entity_set: str,
        where: Node | None,
        order: list[tuple[str, bool]],
        *,
        after: list[Any] | None = None,
        rows: Iterable[Record] | None = None,
    ) -> list[tuple[Record, list[Any]]]:
        """Matching rows with their sort keys, in a stable order (the requested one, then the
        primary key); ``after`` keeps only rows past a paging cookie's sort key; ``rows``
        narrows the candidates (the children of one row in a collection ``$expand``)."""
        table = self.table(entity_set)
        rows = list(self.tables[entity_set].values() if rows is None else rows)
        if where is not None:
            rows = [r for r in rows if odata.evaluate(where, r.values, self._getter(table, r))]
        keys = self.order_keys(table, order)
        keyed = [(r, [self.value(table, r, k) for k, _ in keys]) for r in rows]
        if after is not None:
            keyed = [item for item in keyed if compare_values(keys, item[1], after) > 0]
        # One stable sort per key, last key first, gives the multi-column order.
        for index in reversed(range(len(keys))):
            keyed.sort(key=_key_at(index), reverse=keys[index][1])
        return keyed

    def _getter(self, table: Table, record: Record) -> Getter:
        def get(values: Row, path: str) -> Any:
            return self.value(table, record, path)

        return get

    @staticmethod
    def order_keys(table: Table, order: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
        # Dataverse appends the primary key so paging is stable (reference 2.3).
        if any(name == table.primary_key for name, _ in order):
            return order
        return [*order, (table.primary_key, False)]

    # -- writes ---------------------------------------------------------------------------------

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """Writes made inside are all or nothing: if the block raises, every row they inserted
        goes again and every row they updated or deleted comes back as it was (values, targets
        and so ETag). One write request is such a block (reference 4.1, deep insert), and so is
        a ``$batch`` change set (reference 5). Nested calls join the outer block."""
        if self._journal is not None:
            yield
            return
        self._journal = []
        closes = len(self.closes)
        try:
            yield
        except BaseException:
            for entity_set, row_id, before in reversed(self._journal):
                if before is None:
                    self.tables[entity_set].pop(row_id, None)
                else:
                    self.tables[entity_set][row_id] = before
            del self.closes[closes:]
            raise
        finally:
            self._journal = None

    def _remember(self, entity_set: str, row_id: str, record: Record) -> None:
        """Keep a copy of ``record`` before it changes in place, for ``atomic`` to restore."""
        if self._journal is not None:
            self._journal.append(
                (entity_set, row_id, Record(dict(record.values), dict(record.targets)))
            )

    def create(self, entity_set: str, body: Row) -> Record:
        """POST: a new row, with the related rows of a deep insert, in one step (4.1)."""
        table = self.table(entity_set)
        row_id = body.get(table.primary_key)
        if row_id is None:
            row_id = str(uuid.uuid4())
        elif not isinstance(row_id, str) or not GUID.match(row_id):
            raise payload_error(
                entity_set,
                f"Cannot convert the literal '{row_id}' to the expected type 'Edm.Guid'.",
            )
        row_id = row_id.lower()
        if row_id in self.tables[entity_set]:
            # UNCERTAIN (reference 7.3): DuplicateRecord 0x80040237 is mapped to 412 by the
            # server's status map; the client accepts the code with any status. A nested row of
            # a deep insert with an existing id fails the same way, and so the whole request.
            raise duplicate_record()
        with self.atomic():
            return self._insert(table, row_id, body)

    def _insert(self, table: Table, row_id: str, body: Row) -> Record:
        record = Record({column.wire_name: None for column in table.columns.values()})
        payload = self._changes(table, body, None)
        changes, targets = payload.changes, payload.targets
        state, status = rules.initial_state(table, changes)
        self._insert_related(payload)
        record.values.update(changes)
        record.targets.update(targets)
        record.values.update({table.primary_key: row_id, "statecode": state, "statuscode": status})
        if record.values.get("_transactioncurrencyid_value", "") is None:
            # UNCERTAIN (reference 4.6): the currency Dataverse uses when none is sent; the
            # emulator takes the organisation's base currency.
            record.values["_transactioncurrencyid_value"] = currency_id(BASE_CURRENCY)
            record.targets["transactioncurrencyid"] = "transactioncurrencies"
        for column in table.columns.values():
            if column.kind is Kind.BOOLEAN and record.values[column.name] is None:
                record.values[column.name] = False  # two-option columns default to "No"
        user = self.caller.user_id
        for owner in ("_ownerid_value", "_createdby_value", "_modifiedby_value"):
            record.values[owner] = user
            record.targets[owner[1:-6]] = "systemusers"
        version, stamp = self._stamp()
        record.values.update({"versionnumber": version, "createdon": stamp, "modifiedon": stamp})
        self._derive(table, record)
        if row_id in self.tables[table.entity_set]:
            # A related row of this very request took the id (e.g. an account nesting an account
            # with the same accountid): a duplicate, not an overwrite.
            raise duplicate_record()
        self.tables[table.entity_set][row_id] = record
        if self._journal is not None:
            self._journal.append((table.entity_set, row_id, None))
        # Collection-valued deep insert (reference 4.1): the children exist only once the
        # parent does, because each one binds its lookup to the parent.
        for relation, bodies in payload.children:
            for child in bodies:
                self.create(relation.entity_set, _child_body(table, row_id, relation, child))
        return record

    def update(
        self,
        entity_set: str,
        row_id: str,
        body: Row,
        *,
        if_match: str | None = None,
        if_none_match: str | None = None,
    ) -> tuple[Record, bool]:
        """PATCH: an upsert unless ``If-Match`` is sent (reference 4.2-4.4); (row, created)."""
        table = self.table(entity_set)
        if not GUID.match(row_id):
            raise payload_error(
                entity_set,
                f"Cannot convert the literal '{row_id}' to the expected type 'Edm.Guid'.",
            )
        record = self.tables[entity_set].get(row_id.lower())
        if record is None:
            if if_match is not None:
                raise not_found(table.logical_name, row_id)
            body = {**body, table.primary_key: row_id.lower()}
            with self.atomic():
                return self._insert(table, row_id.lower(), body), True
        if if_none_match == "*":
            raise duplicate_record()
        if if_match is not None and if_match != "*" and if_match != record.etag:
            raise version_mismatch()
        with self.atomic():
            payload = self._changes(table, body, record)
            rules.check_state_change(table, record.values["statecode"], payload.changes)
            self._insert_related(payload)
        # Past every check: from here on nothing fails, so the existing row changes in place.
        self._remember(entity_set, row_id.lower(), record)
        record.values.update(payload.changes)
        record.targets.update(payload.targets)
        record.values["_modifiedby_value"] = self.caller.user_id
        version, stamp = self._stamp()
        record.values.update({"versionnumber": version, "modifiedon": stamp})
        self._derive(table, record)
        return record, False

    def delete(self, entity_set: str, row_id: str, *, if_match: str | None = None) -> None:
        record = self.get(entity_set, row_id)
        if if_match is not None and if_match != "*" and if_match != record.etag:
            raise version_mismatch()
        self._remember(entity_set, row_id.lower(), record)
        del self.tables[entity_set][row_id.lower()]

    def close_opportunity(self, won: bool, body: Row) -> None:
        """WinOpportunity / LoseOpportunity (reference 8.2): state and status from ``Status``."""
        request = rules.read_close(won, body, self.table("opportunities"))
        record = self.get("opportunities", request.opportunity_id)
        rules.check_closable(record.values["statecode"])
        close = request.close
        self._remember("opportunities", request.opportunity_id.lower(), record)
        revenue = close.get("actualrevenue", record.values.get("estimatedvalue"))
        end = (
            close.get("actualend")
            or datetime.fromtimestamp(self._wall_clock(), UTC).date().isoformat()
        )
        record.values.update(
            {
                "statecode": request.state,
                "statuscode": request.status,
                "actualvalue": revenue if won else record.values.get("actualvalue"),
                "actualclosedate": str(end)[:10],
                "_modifiedby_value": self.caller.user_id,
            }
        )
        version, stamp = self._stamp()
        record.values.update({"versionnumber": version, "modifiedon": stamp})
        self.closes.append({"action": request.action, "status": request.status, **close})

    # -- validation -----------------------------------------------------------------------------

    def _changes(self, table: Table, body: Row, record: Record | None) -> Payload:
        """Wire-name changes, lookup targets and deep inserts a payload asks for; 400/404 when
        invalid."""
        payload = Payload()
        changes = payload.changes
        nested = self._nested_rows(table, body) if self.binds_to_nested_rows else set()
        for key, value in body.items():
            if key.endswith("@odata.bind"):
                nav = key.removesuffix("@odata.bind")
                self._bind(table, nav, value, changes, payload.targets, nested)
                continue
            if key.startswith("@") or "@" in key:
                continue  # instance annotations such as @odata.type carry no data
            found = table.navigation(key)
            if found is not None and isinstance(value, dict):
                # Deep insert (reference 4.1): the related row is created in the same request.
                payload.related.append((found[0], found[1], value))
                continue
            relation = self.schema.collection(table, key)
            if relation is not None:
                payload.children.append((relation, _child_rows(table, relation, value, record)))
                continue
            column = table.columns.get(key)
            if column is None:
                raise not_declared(table, key)
            if column.kind is Kind.LOOKUP:
                # A lookup can only be cleared by name; it is set through @odata.bind (4.5).
                if value is not None:
                    raise not_declared(table, key)
                changes[column.wire_name] = None
                continue
            if key == table.primary_key:
                if record is None:
                    continue  # used as the new row's id
                if str(value).lower() != record.values[key]:
                    raise payload_error(table.entity_set, "The primary key cannot be changed.")
                continue
            if column.read_only:
                continue  # Dataverse ignores values sent for read-only columns
            changes[column.name] = coerce(table, column, value)
        return payload

    def _insert_related(self, payload: Payload) -> None:
        """Create the single-valued related rows of a deep insert and point the lookups at them.
        Inside ``atomic``: if a later part of the request fails they are removed again."""
        for column, target_set, body in payload.related:
            child = self.create(target_set, body)
            payload.changes[column.wire_name] = child.values[self.table(target_set).primary_key]
            payload.targets[column.name] = target_set

    def _nested_rows(self, table: Table, body: Row) -> set[tuple[str, str]]:
        """(entity set, id) of the rows this body deep-inserts through single-valued
        navigation properties with a chosen id: rows a bind of the same body may point at."""
        rows: set[tuple[str, str]] = set()
        for key, value in body.items():
            found = table.navigation(key) if isinstance(value, dict) else None
            if found is not None:
                row_id = value.get(self.table(found[1]).primary_key)
                if isinstance(row_id, str):
                    rows.add((found[1], row_id.lower()))
        return rows

    def _bind(
        self,
        table: Table,
        nav: str,
        value: Any,
        changes: Row,
        targets: dict[str, str],
        nested: set[tuple[str, str]],
    ) -> None:
        found = table.navigation(nav)
        if found is None:
            raise payload_error(
                table.entity_set,
                f"An undeclared property '{nav}' which only has property annotations in the "
                "payload but no property value was found in the payload. In OData, only declared "
                "navigation properties and declared named streams can be represented as "
                "properties without values.",
            )
        column, target_set = found
        if value is None:
            changes[column.wire_name] = None
            return
        match = rules.BIND.match(value) if isinstance(value, str) else None
        if match is None or match.group("set") != target_set:
            raise payload_error(
                table.entity_set,
                f"The value '{value}' of '{nav}@odata.bind' is not a reference to a "
                f"'{target_set}' row.",
            )
        target_table = self.table(target_set)
        target = self.find(target_set, match.group("id"))
        if target is None and (target_set, match.group("id").lower()) not in nested:
            raise not_found(target_table.logical_name, match.group("id"))
        changes[column.wire_name] = match.group("id").lower()
        targets[column.name] = target_set

    def _derive(self, table: Table, record: Record) -> None:
        values = record.values
        if "fullname" in table.columns and "firstname" in table.columns:
            parts = [values.get("firstname"), values.get("lastname")]
            values["fullname"] = " ".join(p for p in parts if p) or None
        if table.entity_set == "opportunities":
            rate = self._rate(values.get("_transactioncurrencyid_value"))
            values["exchangerate"] = rate

    def _rate(self, currency: str | None) -> float | None:
        row = self.find("transactioncurrencies", currency) if currency else None
        return None if row is None else row.values.get("exchangerate")


def _child_rows(table: Table, relation: OneToMany, value: Any, record: Record | None) -> list[Row]:
    """The rows of a collection-valued deep insert: a JSON array of objects (reference 4.1)."""
    if record is not None:
        # UNCERTAIN: reference 4.1 documents deep insert for POST only; PATCH of an existing row
        # with a collection array is refused rather than guessed at.
        raise payload_error(
            table.entity_set,
            f"The collection-valued navigation property '{relation.name}' can only be set when "
            "the row is created (deep insert).",
        )
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise payload_error(
            table.entity_set,
            f"The value of the collection-valued navigation property '{relation.name}' must be "
            "an array of objects.",
        )
    return value


def _child_body(table: Table, parent_id: str, relation: OneToMany, body: Row) -> Row:
    """A collection child's body, bound to its new parent through the relationship's lookup."""
    for key in body:
        if key.split("@", 1)[0] in relation.column.targets:
            # The array already says who the parent is; a second answer would be ambiguous.
            raise payload_error(
                relation.entity_set,
                f"'{key}' cannot be set on a row deep-inserted through '{relation.name}'; it is "
                f"linked to the new {table.logical_name}.",
            )
    bind = f"/{table.entity_set}({parent_id})"
    return {**body, f"{relation.navigation}@odata.bind": bind}


def _not_a_guid(entity_set: str, value: Any) -> DataverseFault:
    return payload_error(
        entity_set, f"Cannot convert the literal '{value}' to the expected type 'Edm.Guid'."
    )


def _sort_value(value: Any) -> tuple[int, Any]:
    # Nulls sort first ascending; strings compare case-insensitively like Dataverse's collation.
    if value is None:
        return (0, 0)
    if isinstance(value, str):
        return (1, value.casefold())
    return (1, value)


def _key_at(index: int) -> Callable[[tuple[Record, list[Any]]], tuple[int, Any]]:
    def key(item: tuple[Record, list[Any]]) -> tuple[int, Any]:
        return _sort_value(item[1][index])

    return key


def compare_values(keys: list[tuple[str, bool]], left: list[Any], right: list[Any]) -> int:
    """Compare two rows' sort keys column by column, honouring each direction."""
    for (_, descending), x, y in zip(keys, left, right, strict=True):
        a, b = _sort_value(x), _sort_value(y)
        if a == b:
            continue
        try:
            result = -1 if a < b else 1
        except TypeError:
            result = -1 if str(a) < str(b) else 1
        return -result if descending else result
    return 0
