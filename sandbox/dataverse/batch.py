"""``POST /api/data/v9.2/$batch`` (reference 5): requests and change sets in one
``multipart/mixed`` body, run in order through the emulator's own handlers, answered in one
``multipart/mixed`` body.

Accepted (CRLF or LF line ends; the boundary may be quoted)::

    --batch_1
    Content-Type: multipart/mixed; boundary=changeset_1

    --changeset_1
    Content-Type: application/http
    Content-Transfer-Encoding: binary
    Content-ID: 1

    POST accounts HTTP/1.1
    Content-Type: application/json; type=entry

    {"name": "Contoso"}
    --changeset_1--
    --batch_1--

Inner URLs may be absolute, rooted (``/api/data/v9.2/...``) or relative to the service root;
in a change set ``$<Content-ID>`` at the start of a URL or as an ``@odata.bind`` value stands for
the row an earlier part of the same change set created or addressed. A change set runs inside
one ``Store.atomic`` scope and without giving the event loop a turn, so no other request sees
it half applied.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote, urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message

from sandbox.dataverse.api import ROW, json_response, preferences, service_root
from sandbox.dataverse.errors import DataverseFault, query_error
from sandbox.dataverse.state import API_PREFIX, Emulator

MAX_REQUESTS = 1000  # reference 5
_BOUNDARY = re.compile(r';\s*boundary\s*=\s*(?:"(?P<quoted>[^"]+)"|(?P<token>[^;\s]+))', re.I)
_REQUEST_LINE = re.compile(r"^(?P<method>[A-Za-z]+) (?P<url>\S+) HTTP/1\.[01]$")
_METHODS = ("GET", "POST", "PATCH", "PUT", "DELETE")
# "$1" or "$1/rest" at the start of a URL; $metadata, $batch... are resource paths, not ids.
_URL_REFERENCE = re.compile(r"^\$(?P<id>[^/?()$]+)(?P<rest>.*)$", re.S)
_RESERVED = {"metadata", "batch", "entity", "all", "crossjoin", "root"}
_BIND_REFERENCE = re.compile(r"^\$(?P<id>[^/?()$]+)$")
_METADATA_WRITES = ("EntityDefinitions", "RelationshipDefinitions")
_HEADER_NAMES = {
    "etag": "ETag",
    "odata-entityid": "OData-EntityId",
    "odata-version": "OData-Version",
    "www-authenticate": "WWW-Authenticate",
}


@dataclass
class Operation:
    """One inner request as written; ``path`` is under the service root, ``body`` parsed."""

    number: int  # 1-based position in the batch, for messages
    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: Any
    content_id: str | None

    def __str__(self) -> str:
        return f"request {self.number} ({self.method} {self.path})"


@dataclass
class ChangeSet:
    operations: list[Operation]


@dataclass
class Answer:
    response: Response
    content_id: str | None


class _ChangeSetFailed(Exception):
    def __init__(self, answer: Answer) -> None:
        super().__init__(answer.response.status_code)
        self.answer = answer


def _malformed(detail: str) -> DataverseFault:
    # UNCERTAIN: the reference gives no code for a malformed $batch body; the emulator answers
    # with the OData request/URL code of reference 7.3.
    return query_error(f"The $batch request is malformed: {detail}")


# -- parsing ------------------------------------------------------------------------------------


def parse(content_type: str, body: bytes) -> list[Operation | ChangeSet]:
    """The batch's requests and change sets, checked before anything runs (400 if malformed)."""
    boundary = _boundary(content_type, "the batch request")
    try:
        text = body.decode("utf-8").replace("\r\n", "\n")
    except UnicodeDecodeError:
        raise _malformed("the body is not UTF-8 text.") from None
    items: list[Operation | ChangeSet] = []
    count = 0
    for index, part in enumerate(_split(text, boundary, "the batch body"), start=1):
        headers, content = _head(part, f"part {index} of the batch")
        part_type = _header(headers, "content-type")
        if part_type.lower().startswith("multipart/mixed"):
            inner = _boundary(part_type, f"the change set in part {index}")
            operations: list[Operation] = []
            for sub in _split(content, inner, f"the change set in part {index}"):
                sub_headers, sub_content = _head(sub, f"a part of the change set {inner}")
                if _header(sub_headers, "content-type").lower().startswith("multipart/"):
                    raise _malformed(f"change sets cannot be nested (in the change set {inner}).")
                count += 1
                operations.append(_operation(count, sub_headers, sub_content))
                _check_size(count)
            _check_change_set(operations)
            items.append(ChangeSet(operations))
        else:
            count += 1
            operation = _operation(count, headers, content)
            _check_size(count)
            _check_references(operation, set())
            items.append(operation)
    return items


def _check_size(count: int) -> None:
    if count > MAX_REQUESTS:
        raise _malformed(f"a batch holds at most {MAX_REQUESTS} requests.")


def _boundary(content_type: str, what: str) -> str:
    found = _BOUNDARY.search(content_type)
    if not content_type.lower().startswith("multipart/mixed") or found is None:
        raise _malformed(
            f"{what} needs 'Content-Type: multipart/mixed; boundary=...', "
            f"not '{content_type or '(none)'}'."
        )
    return found.group("quoted") or found.group("token")


def _split(text: str, boundary: str, what: str) -> list[str]:
    """The parts between the ``--boundary`` lines of ``text`` (LF line ends)."""
    delimiter, close = f"--{boundary}", f"--{boundary}--"
    parts: list[str] = []
    current: list[str] | None = None
    for line in text.split("\n"):
        stripped = line.rstrip(" \t")
        if stripped in (delimiter, close):
            if current is not None:
                parts.append("\n".join(current))
            if stripped == close:
                return parts
            current = []
        elif current is not None:
            current.append(line)
    if current is None:
        raise _malformed(f"{what} has no line '{delimiter}'.")
    raise _malformed(f"{what} does not end with '{close}'.")


def _head(text: str, what: str) -> tuple[list[tuple[str, str]], str]:
    """(headers, content) of header lines, a blank line and content."""
    headers: list[tuple[str, str]] = []
    lines = text.split("\n")
    for index, line in enumerate(lines):
        if not line.strip():
            return headers, "\n".join(lines[index + 1 :])
        name, sep, value = line.partition(":")
        if not sep or not name.strip() or name != name.strip():
            raise _malformed(f"in {what}, '{line[:200]}' is not a header line.")
        headers.append((name, value.strip()))
    return headers, ""


def _header(headers: list[tuple[str, str]], name: str) -> str:
    return next((value for key, value in headers if key.lower() == name), "")


def _operation(number: int, part_headers: list[tuple[str, str]], content: str) -> Operation:
    part_type = _header(part_headers, "content-type")
    if part_type.split(";")[0].strip().lower() != "application/http":
        raise _malformed(
            f"part {number} has 'Content-Type: {part_type or '(none)'}'; a request part needs "
            "'Content-Type: application/http' and a change set 'multipart/mixed'."
        )
    lines = content.split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines:
        raise _malformed(f"request {number} has no request line.")
    found = _REQUEST_LINE.match(lines[0].strip())
    if found is None:
        raise _malformed(
            f"request {number} starts with '{lines[0].strip()[:200]}', not "
            "'<METHOD> <URL> HTTP/1.1'."
        )
    method = found.group("method").upper()
    if method not in _METHODS:
        raise _malformed(f"request {number} uses the method {method}.")
    headers, text = _head("\n".join(lines[1:]), f"request {number}")
    path, query = _target(found.group("url"), number)
    body: Any = None
    if text.strip():
        try:
            body = json.loads(text)
        except ValueError as error:
            raise _malformed(
                f"the body of request {number} ({method} {path}) is not valid JSON ({error})."
            ) from None
    content_id = _header(part_headers, "content-id") or None
    return Operation(number, method, path, query, headers, body, content_id)


def _target(url: str, number: int) -> tuple[str, str]:
    """(path under the service root, query string) of an inner request's URL."""
    if url.lower().startswith(("http://", "https://")):
        parts = urlsplit(url)
        path, query = parts.path, parts.query
    else:
        path, _, query = url.partition("?")
    if path.startswith("/"):
        if not path.startswith(API_PREFIX):
            raise _malformed(f"the URL '{url}' of request {number} is not under {API_PREFIX}.")
        path = path[len(API_PREFIX) :]
    path = unquote(path)
    if path == "$batch":
        raise _malformed(f"request {number} is a $batch; batches cannot be nested.")
    return path, query


def _check_change_set(operations: list[Operation]) -> None:
    declared: set[str] = set()
    for operation in operations:
        if operation.method == "GET":
            raise _malformed(f"{operation} is a GET; GET is not allowed in a change set.")
        if operation.path.startswith(_METADATA_WRITES):
            # UNCERTAIN: the emulator cannot roll metadata changes back, so it keeps them out.
            raise _malformed(
                f"{operation} changes metadata; the emulator does not allow that in a change set."
            )
        _check_references(operation, declared)
        if operation.content_id is not None:
            if operation.content_id in declared:
                raise _malformed(
                    f"the Content-ID {operation.content_id} is used twice in a change set."
                )
            declared.add(operation.content_id)


def _check_references(operation: Operation, declared: set[str]) -> None:
    """Refuse ``$n`` that no earlier part of the same change set declared (reference 5)."""

    def check(content_id: str) -> str:
        if content_id not in declared:
            raise DataverseFault(
                400,
                "0x80060888",
                f"Content-ID Reference: '${content_id}' does not exist in the batch context "
                f"({operation}); a change set part can only refer to an earlier part of the same "
                "change set.",
            )
        return f"${content_id}"

    reference = _url_reference(operation.path)
    if reference is not None:
        check(reference[0])
    _binds(operation.body, check)


def _url_reference(path: str) -> tuple[str, str] | None:
    found = _URL_REFERENCE.match(path)
    if found is None or found.group("id") in _RESERVED:
        return None
    return found.group("id"), found.group("rest")


def _binds(value: Any, resolve: Callable[[str], str]) -> Any:
    """``value`` with every ``"$n"`` ``@odata.bind`` value (deep inserts too) resolved."""
    if isinstance(value, list):
        return [_binds(item, resolve) for item in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key.endswith("@odata.bind"):
            out[key] = (
                [_bind(v, resolve) for v in item]
                if isinstance(item, list)
                else _bind(item, resolve)
            )
        else:
            out[key] = _binds(item, resolve)
    return out


def _bind(value: Any, resolve: Callable[[str], str]) -> Any:
    found = _BIND_REFERENCE.match(value) if isinstance(value, str) else None
    return value if found is None else resolve(found.group("id"))


# -- running ------------------------------------------------------------------------------------

# One request through the emulator's metadata and data handlers (``app._ServiceRoot.dispatch``).
Dispatch = Callable[[Request, str], Coroutine[Any, Any, Response]]


class Batch:
    """One ``$batch`` request being answered."""

    def __init__(self, emulator: Emulator, request: Request, dispatch: Dispatch) -> None:
        self.emulator = emulator
        self.request = request
        self.dispatch = dispatch
        self.base = service_root(request)
        self.executed = 0

    def run(self, items: list[Operation | ChangeSet], keep_going: bool) -> tuple[int, list[str]]:
        """(outer status, response parts). Stops at the first failure unless ``keep_going``."""
        parts: list[str] = []
        for item in items:
            if isinstance(item, ChangeSet):
                failed, answers = self.change_set(item)
                parts.append(_http_part(failed) if failed else _change_set_part(answers))
            else:
                answer = self.execute(item, {})
                failed = answer if answer.response.status_code >= 400 else None
                parts.append(_http_part(answer))
            if failed is not None and not keep_going:
                # UNCERTAIN (reference 5): the documented example is an outer 400 holding the one
                # failed part. Here the outer status is the failed part's own, and the parts run
                # (and kept) before it are answered too; a failed change set is answered by its
                # failing part alone, as OData does, whether or not the batch continues.
                return failed.response.status_code, parts
        return 200, parts

    def change_set(self, change_set: ChangeSet) -> tuple[Answer | None, list[Answer]]:
        """All parts in one atomic scope: the first failure undoes the others (reference 5)."""
        entities: dict[str, str] = {}
        answers: list[Answer] = []
        try:
            with self.emulator.store.atomic():
                for operation in change_set.operations:
                    answer = self.execute(operation, entities)
                    if answer.response.status_code >= 400:
                        raise _ChangeSetFailed(answer)
                    answers.append(answer)
                    entity = self.entity_of(operation, answer.response)
                    if operation.content_id is not None and entity is not None:
                        entities[operation.content_id] = entity
        except _ChangeSetFailed as failed:
            return failed.answer, answers
        return None, answers

    def execute(self, operation: Operation, entities: dict[str, str]) -> Answer:
        """One inner request through the emulator's handlers; faults become error answers."""
        self.executed += 1

        def resolve(content_id: str) -> str:
            entity = entities.get(content_id)
            if entity is None:
                raise DataverseFault(
                    400,
                    "0x80060888",
                    f"Content-ID Reference: '${content_id}' does not address a row ({operation}).",
                )
            return "/" + entity

        path = operation.path
        try:
            reference = _url_reference(path)
            if reference is not None:
                path = resolve(reference[0])[1:] + reference[1]
            body = _binds(operation.body, resolve)
            self.emulator.count_batched(operation.method, path)
            raw = b"" if body is None else json.dumps(body, ensure_ascii=False).encode()
            response = _now(self.dispatch(self._inner_request(operation, path, raw), path))
        except DataverseFault as fault:
            response = json_response(fault.body(), fault.status, fault.headers)
        if operation.method == "POST" and "location" not in response.headers:
            entity = self.entity_of(operation, response)
            if entity is not None and response.status_code in (201, 204):
                response.headers["Location"] = self.base + entity
        return Answer(response, operation.content_id)

    def _inner_request(self, operation: Operation, path: str, body: bytes) -> Request:
        skip = ("host", "content-length", "authorization")
        headers = [
            (name.lower().encode("latin-1", "replace"), value.encode("utf-8"))
            for name, value in operation.headers
            if name.lower() not in skip
        ]
        headers += [
            (name, value) for name, value in self.request.scope["headers"] if name == b"host"
        ]
        headers.append((b"content-length", str(len(body)).encode()))
        scope = {
            **self.request.scope,
            "method": operation.method,
            "path": API_PREFIX + path,
            "raw_path": (API_PREFIX + path).encode(),
            "query_string": operation.query.encode(),
            "headers": headers,
            "path_params": {"path": path},
        }

        async def receive() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        return Request(scope, receive)

    def entity_of(self, operation: Operation, response: Response) -> str | None:
        """The row a part created or addressed, under the service root (``accounts(<id>)``)."""
        for name in ("odata-entityid", "location"):
            url = response.headers.get(name)
            if url and API_PREFIX in url:
                return url.split(API_PREFIX, 1)[1]
        if response.status_code in (200, 201):
            try:
                body = json.loads(bytes(response.body))
            except ValueError:
                body = None
            if isinstance(body, dict) and str(body.get("@odata.context", "")).endswith("/$entity"):
                entity_set = str(body["@odata.context"]).rpartition("#")[2][: -len("/$entity")]
                table = self.emulator.store.schema.table(entity_set)
                if table is not None and isinstance(body.get(table.primary_key), str):
                    return f"{entity_set}({body[table.primary_key]})"
        if ROW.match(operation.path):
            return operation.path
        return None


def _now(coroutine: Coroutine[Any, Any, Response]) -> Response:
    """Run a handler to its end without giving the event loop a turn: the emulator's handlers
    only wait on the in-memory request body, so they never suspend. One that would is a bug
    here, not a reason to let another request see a change set half applied."""
    try:
        coroutine.send(None)
    except StopIteration as finished:
        response: Response = finished.value
        return response
    coroutine.close()
    raise RuntimeError("a batched request tried to wait on the event loop")


# -- answering ----------------------------------------------------------------------------------


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _http_part(answer: Answer) -> str:
    lines = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if answer.content_id is not None:
        lines.append(f"Content-ID: {answer.content_id}")
    response = answer.response
    lines += ["", f"HTTP/1.1 {response.status_code} {_reason(response.status_code)}".rstrip()]
    for name, value in response.headers.items():
        if name != "content-length":
            canonical = _HEADER_NAMES.get(name, "-".join(w.capitalize() for w in name.split("-")))
            lines.append(f"{canonical}: {value}")
    lines += ["", bytes(response.body).decode("utf-8")]
    return "\r\n".join(lines)


def _multipart(boundary: str, parts: list[str]) -> str:
    return "".join(f"--{boundary}\r\n{part}\r\n" for part in parts) + f"--{boundary}--\r\n"


def _change_set_part(answers: list[Answer]) -> str:
    boundary = f"changesetresponse_{uuid.uuid4()}"
    parts = [_http_part(answer) for answer in answers]
    return f"Content-Type: multipart/mixed; boundary={boundary}\r\n\r\n" + _multipart(
        boundary, parts
    )


async def handle(emulator: Emulator, request: Request, dispatch: Dispatch) -> Response:
    """``POST $batch``: parse it all (400 if malformed, nothing run), run it through
    ``dispatch`` (the emulator's own handlers), answer it."""
    if request.method != "POST":
        raise DataverseFault(
            405, "0x80060888", f"The method {request.method} is not allowed on '$batch'."
        )
    items = parse(request.headers.get("content-type", ""), await request.body())
    prefs = preferences(request)
    continue_on_error = prefs.get("odata.continue-on-error", "false").lower() != "false"
    batch = Batch(emulator, request, dispatch)
    try:
        status, parts = batch.run(items, continue_on_error)
    finally:
        # Every inner operation counts toward the request limit (reference 5 and 6); the batch
        # itself was admitted, and counted once, as one request.
        emulator.protection.charge(batch.executed - 1)
    boundary = f"batchresponse_{uuid.uuid4()}"
    return Response(
        _multipart(boundary, parts).encode(),
        status_code=status,
        headers={"OData-Version": "4.0"},
        media_type=f"multipart/mixed; boundary={boundary}",
    )
