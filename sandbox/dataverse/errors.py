"""Dataverse's error answers: ``{"error": {"code": "0x...", "message": "..."}}`` (reference 7.1)."""

from __future__ import annotations

from typing import Any

# Codes the emulator answers with (reference sections 0, 6 and 7.3).
OBJECT_DOES_NOT_EXIST = "0x80040217"
CONCURRENCY_VERSION_MISMATCH = "0x80060882"
DUPLICATE_RECORD = "0x80040237"
PAYLOAD_ERROR = "0x80048d19"
QUERY_ERROR = "0x80060888"
REQUESTS_LIMIT = "0x80072322"
CONCURRENCY_LIMIT = "0x80072326"
# UNCERTAIN: the reference gives no code for a refused state change of an opportunity nor for an
# action on a closed one; the emulator uses the generic "invalid argument" code 0x80040203.
INVALID_ARGUMENT = "0x80040203"


class DataverseFault(Exception):
    """An error response: status, Dataverse code and message, optional extra headers."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


def payload_error(entity_set: str, detail: str) -> DataverseFault:
    """400 for an undeclared property or a literal of the wrong type (reference 7.3)."""
    return DataverseFault(
        400,
        PAYLOAD_ERROR,
        f"Error identified in Payload provided by the user for Entity :'{entity_set}', "
        f"----> InnerException : Microsoft.OData.ODataException: {detail}",
    )


def query_error(detail: str) -> DataverseFault:
    """400 for a query option the emulator cannot parse or that names unknown properties."""
    return DataverseFault(400, QUERY_ERROR, detail)


def not_found(logical_name: str, row_id: str) -> DataverseFault:
    return DataverseFault(
        404, OBJECT_DOES_NOT_EXIST, f"{logical_name} With Id = {row_id} Does Not Exist"
    )


def version_mismatch() -> DataverseFault:
    return DataverseFault(
        412,
        CONCURRENCY_VERSION_MISMATCH,
        "The version of the existing record doesn't match the RowVersion property provided.",
    )


def duplicate_record() -> DataverseFault:
    return DataverseFault(
        412, DUPLICATE_RECORD, "A record with matching key values already exists."
    )
