"""The ``$batch`` wire format (reference 5): one change set out, its responses back.

Only what the client needs: a change set of POSTs whose later parts may refer to earlier ones as
``$<n>`` (Content-ID), and the multipart answer read back into one response per part.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from shared.dataverse._odata import Expand

_BOUNDARY = re.compile(r'boundary="?(?P<b>[^";]+)"?', re.IGNORECASE)
_STATUS_LINE = re.compile(r"^HTTP/1\.[01] (?P<status>\d{3})")


@dataclass(frozen=True)
class Create:
    """One row of ``DataverseClient.create_in_change_set``: the arguments ``create`` takes."""

    entity_set: str
    data: Mapping[str, Any]
    row_id: uuid.UUID | str | None = None
    select: Sequence[str] | None = None
    expand: Sequence[str | Expand] | None = None


@dataclass(frozen=True)
class Part:
    """One request of a change set: ``url`` is absolute, ``data`` its JSON body."""

    method: str
    url: str
    data: Mapping[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)


def content_id(index: int) -> str:
    """How a later part refers to the row part ``index`` (0-based) creates: ``$1`` for the
    first part. Usable as an ``@odata.bind`` value."""
    return f"${index + 1}"


def encode_change_set(parts: Sequence[Part]) -> tuple[str, bytes]:
    """(Content-Type, body) of a batch holding ``parts`` as one atomic change set."""
    batch, change_set = f"batch_{uuid.uuid4().hex}", f"changeset_{uuid.uuid4().hex}"
    lines = [f"--{batch}", f'Content-Type: multipart/mixed; boundary="{change_set}"', ""]
    for number, part in enumerate(parts, start=1):
        body = json.dumps(dict(part.data), ensure_ascii=False)
        lines += [
            f"--{change_set}",
            "Content-Type: application/http",
            "Content-Transfer-Encoding: binary",
            f"Content-ID: {number}",
            "",
            f"{part.method} {part.url} HTTP/1.1",
            "Content-Type: application/json; type=entry",
            *(f"{name}: {value}" for name, value in part.headers.items()),
            "",
            body,
        ]
    lines += [f"--{change_set}--", "", f"--{batch}--", ""]
    return f'multipart/mixed; boundary="{batch}"', "\r\n".join(lines).encode()


def decode_responses(response: httpx.Response) -> list[httpx.Response]:
    """The inner responses of a ``$batch`` answer, in order (change sets flattened).

    Raises ``ValueError`` when the body is not the multipart answer the reference describes.
    """
    return _responses(response.headers.get("content-type", ""), response.content, response)


def _responses(content_type: str, body: bytes, outer: httpx.Response) -> list[httpx.Response]:
    found = _BOUNDARY.search(content_type)
    if found is None or not content_type.lower().startswith("multipart/mixed"):
        raise ValueError(f"not a multipart $batch answer ({content_type or 'no Content-Type'})")
    responses: list[httpx.Response] = []
    for part in _split(body, found.group("b")):
        headers, _, content = _head(part)
        part_type = headers.get("content-type", "")
        if part_type.lower().startswith("multipart/mixed"):
            responses += _responses(part_type, content, outer)
        else:
            responses.append(_inner(content, outer))
    return responses


def _split(body: bytes, boundary: str) -> list[bytes]:
    delimiter = b"--" + boundary.encode()
    chunks = body.split(delimiter)[1:]  # before the first delimiter: preamble
    parts = []
    for chunk in chunks:
        if chunk.startswith(b"--"):
            break  # the closing delimiter
        parts.append(chunk.strip(b"\r\n"))
    return parts


def _head(part: bytes) -> tuple[dict[str, str], str, bytes]:
    """(headers, first line, rest) of a block of header lines, a blank line and content;
    the first line is returned apart only when it is not a header (an HTTP status line)."""
    text = part.replace(b"\r\n", b"\n")
    head, _, content = text.partition(b"\n\n")
    lines = head.decode("utf-8", "replace").split("\n")
    first = lines[0] if lines and _STATUS_LINE.match(lines[0]) else ""
    headers: dict[str, str] = {}
    for line in lines[1:] if first else lines:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers, first, content


def _inner(message: bytes, outer: httpx.Response) -> httpx.Response:
    headers, status_line, content = _head(message)
    found = _STATUS_LINE.match(status_line)
    if found is None:
        raise ValueError("a $batch answer part has no HTTP status line")
    return httpx.Response(
        int(found.group("status")),
        headers=headers,
        content=content.rstrip(b"\r\n"),
        request=outer.request,
    )
