"""XML the emulator reads from requests (FetchXML, FormXml, ParameterXml, solution files).

Python's parser expands entities, so a document with a DTD is refused before it is parsed (no
"billion laughs", no external entities); none of Dataverse's XML formats has one.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET


class XmlRefused(ValueError):
    """The text is not well-formed XML, or declares a DTD."""


def parse(text: str | bytes) -> ET.Element:
    raw = text.encode("utf-8") if isinstance(text, str) else text
    if b"<!DOCTYPE" in raw.upper() or b"<!ENTITY" in raw.upper():
        raise XmlRefused("a document type declaration (DTD) is not allowed")
    try:
        return ET.fromstring(raw)  # noqa: S314 - DTDs refused above, so no entity expansion
    except ET.ParseError as exc:
        raise XmlRefused(str(exc)) from None
