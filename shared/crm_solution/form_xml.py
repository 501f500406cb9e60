"""Add the co-sell section to a Dynamics 365 form's FormXML and change nothing else.

``cosell schema apply --solution`` puts a "Microsoft Partner Center" section (the co-sell columns
and a "Microsoft Solutions" subgrid) on the opportunity main forms. A form's layout is the
``<form>…</form>`` document Dataverse keeps in ``systemform.formxml``; admins edit it in the form
designer, so this module treats it as theirs:

* ``add_section`` inserts one new ``<section>`` as the last section of the first column of the
  first tab, by splicing text in at a byte offset that a real XML parser (expat's
  ``CurrentByteIndex``) found. The document is never re-serialised: every character outside the
  inserted snippet is the input's own (attribute order, quoting, entities, comments, line endings).
  The snippet follows the surrounding layout: one element a line with the column's newline and
  indentation when the form is pretty-printed, no whitespace at all when it is on one line.
* Only what is missing goes in: a column already bound to any control anywhere on the form
  (``datafieldname`` on a body, header or hidden control) is not added again, and no subgrid is
  added if any subgrid already lists the relationship or the target table. With nothing missing
  the input comes back unchanged, so ``add_section(add_section(x)) == add_section(x)``.
* A section that already carries our name is never modified, even when it lacks fields: a person
  may have moved, removed or relabelled things in it on purpose, and fields put back next to
  their edits would undo them. ``inspect_form`` still reports what it lacks, for the caller to
  tell the admin; ``add_section`` then returns the input unchanged.
* Generated ids (section and cell ``{GUID}``) are uuid5 values of the section and field names, so
  two runs write the same XML; one already used on the form is skipped for the next one.

What cannot be understood raises ``FormXmlError`` saying what is missing ("no <tabs> element in
<form>"); the caller leaves that form untouched and reports it. A first column whose sections
element is written empty (``<sections />``, a valid column with no sections) gets the element
opened around the new section, the only characters outside the snippet that change; a first
column with no ``<sections>`` element at all is refused, since FormXML requires one.

The vocabulary is Microsoft's FormXML: the Form XML schema
(https://learn.microsoft.com/power-apps/developer/model-driven-apps/form-xml-schema) and the
element pages of the Form XML reference: <section>
(https://learn.microsoft.com/previous-versions/dynamicscrm-2016/developers-guide/gg328281(v=crm.8)),
<control> with its table of classids
(https://learn.microsoft.com/previous-versions/dynamicscrm-2016/developers-guide/gg334472(v=crm.8)),
<label>, <RelationshipName>, <TargetEntityType>, <ViewId> and <RecordsPerPage>. Where those pages
leave a choice open, the snippet copies what the form designer writes in the real forms of
tests/fixtures/formxml (section and cell attributes, the subgrid's parameters).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal
from xml.parsers import expat

ControlKind = Literal["checkbox", "toggle", "text", "url", "memo", "choice"]

# The classid of each kind of control, from the <control> (FormXml) table, spelt as Dataverse
# writes them. "checkbox" is CheckBoxControl; "toggle" is RadioControl, the control the form
# designer puts on a Yes/No column by default (every Yes/No control of the real fixtures).
CONTROL_CLASS_IDS: dict[ControlKind, str] = {
    "checkbox": "{B0C6723A-8503-4fd7-BB28-C8A06AC933C2}",
    "toggle": "{67FAC785-CD58-4f9f-ABB3-4B7DDC6ED5ED}",
    "text": "{4273EDBD-AC1D-40d3-9FB2-095C621B552D}",
    "url": "{71716B6C-711E-476c-8AB8-5D11542BFB47}",
    "memo": "{E0DECE4B-6FC8-4a8f-A065-082708572369}",
    "choice": "{3EF39988-22BB-4f0b-BBBE-64B5A3748AEE}",
}
SUBGRID_CLASS_ID = "{E7A81278-8635-4d9e-8D4D-59480B391C5B}"  # GridControl
SUBGRID_ROWS = 4  # records a page, and rows the subgrid's cell spans

_LOGICAL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Characters XML 1.0 cannot carry, even escaped.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_IDS = uuid.uuid5(uuid.NAMESPACE_URL, "urn:cosell-sync:formxml")


class FormXmlError(ValueError):
    """The form XML could not be understood; the message says what is missing or wrong."""


def _logical_name(what: str, value: str) -> None:
    if not _LOGICAL_NAME.match(value):
        raise ValueError(f"{what} {value!r} is not a Dataverse logical or schema name")


def _text(what: str, value: str) -> None:
    if not value or _NOT_XML.search(value):
        raise ValueError(f"{what} {value!r} is empty or has a character XML cannot carry")


@dataclass(frozen=True)
class FormField:
    """One control bound to a column, in a row of its own."""

    column: str  # logical name, e.g. "cosell_syncwithpartnercenter"
    label: str  # e.g. "Sync with Partner Center"
    control: ControlKind  # picks the control's classid

    def __post_init__(self) -> None:
        _logical_name("column", self.column)
        _text("label", self.label)
        if self.control not in CONTROL_CLASS_IDS:
            raise ValueError(f"control {self.control!r} is not one of {sorted(CONTROL_CLASS_IDS)}")


@dataclass(frozen=True)
class Subgrid:
    """A subgrid of the related rows of another table."""

    name: str  # control id, e.g. "cosell_solutions_subgrid"
    label: str  # "Microsoft Solutions"
    target_table: str  # logical name, "cosell_solution"
    relationship: str  # schema name, e.g. "cosell_opportunity_cosell_solutions"
    view_id: str | None  # the target table's view to show, "{guid}"; None writes no <ViewId>

    def __post_init__(self) -> None:
        _logical_name("subgrid name", self.name)
        _text("subgrid label", self.label)
        _logical_name("target table", self.target_table)
        _logical_name("relationship", self.relationship)
        if self.view_id is not None:
            try:
                uuid.UUID(self.view_id)
            except ValueError:
                raise ValueError(f"view id {self.view_id!r} is not a GUID") from None


@dataclass(frozen=True)
class FormSection:
    """The section to add: its name and label, its fields in order, and the subgrid last."""

    name: str  # section name, e.g. "cosell_partnercenter"
    label: str  # "Microsoft Partner Center"
    fields: tuple[FormField, ...]
    subgrid: Subgrid
    language_code: int = 1033  # the LCID of every label written

    def __post_init__(self) -> None:
        _text("section name", self.name)
        _text("section label", self.label)
        if self.language_code <= 0:
            raise ValueError(f"language code {self.language_code} is not an LCID")


@dataclass(frozen=True)
class FormState:
    """What a form already has of a section."""

    section_present: bool  # a <section> with the section's name, anywhere on the form
    missing_fields: tuple[str, ...]  # columns with no control (datafieldname) anywhere
    subgrid_present: bool  # a subgrid on the relationship or the target table, anywhere


def inspect_form(formxml: str, section: FormSection) -> FormState:
    """What ``formxml`` already has of ``section``; FormXmlError if it is not a <form>."""
    _, root = _read(formxml)
    return _state(root, section)


def add_section(formxml: str, section: FormSection) -> str:
    """``formxml`` with ``section`` added as the last section of the first tab's first column,
    holding only the fields and subgrid the form lacks; the input itself when it lacks none or
    already has a section of that name (which is never modified: see the module docstring)."""
    data, root = _read(formxml)
    state = _state(root, section)
    if state.section_present:
        return formxml
    missing = {column.lower() for column in state.missing_fields}
    fields = [f for f in _distinct(section.fields) if f.column.lower() in missing]
    subgrid = None if state.subgrid_present else section.subgrid
    if not fields and subgrid is None:
        return formxml
    sections, column = _first_sections(root)
    lines = _section_lines(section, fields, subgrid, _Ids(root))
    newline = b"\r\n" if b"\r\n" in data else b"\n"
    if sections.empty:
        start, end, snippet = sections.start, sections.end, _opened(data, sections, column, lines)
    else:
        start = end = _insertion_point(sections)
        snippet = _render_in(data, sections, column, lines, newline)
    return (data[:start] + snippet + data[end:]).decode("utf-8")


# --- reading -----------------------------------------------------------------------------------


@dataclass(eq=False)
class _Element:
    """An element of the document with the byte offsets of its tags in the UTF-8 text."""

    name: str
    attrs: dict[str, str]
    start: int  # the "<" of the start tag
    content_start: int = -1  # just after the start tag
    end: int = -1  # just after the end tag
    empty: bool = False  # written as one empty-element tag, <x/>
    children: list[_Element] = field(default_factory=list)
    text: list[str] = field(default_factory=list)

    def child(self, name: str) -> _Element | None:
        return next((c for c in self.children if c.name == name), None)

    def walk(self) -> Iterator[_Element]:
        yield self
        for child in self.children:
            yield from child.walk()

    def child_text(self, name: str) -> str:
        found = self.child(name)
        return "".join(found.text).strip() if found else ""


class _Reader:
    """Builds the element tree from expat's events. ``CurrentByteIndex`` at each event is where
    that event's text starts, so the event after a start tag tells where the start tag ends."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.root: _Element | None = None
        self.stack: list[_Element] = []
        self.open: _Element | None = None  # an element whose start tag's end is not known yet
        # The override makes expat read the UTF-8 bytes it is given whatever a declaration says.
        self.parser = expat.ParserCreate(encoding="UTF-8")
        p = self.parser
        p.StartElementHandler = self._start
        p.EndElementHandler = self._end
        p.CharacterDataHandler = self._characters
        p.CommentHandler = self._other
        p.ProcessingInstructionHandler = self._pi
        p.StartCdataSectionHandler = self._mark
        p.EndCdataSectionHandler = self._mark
        p.DefaultHandlerExpand = self._other
        p.StartDoctypeDeclHandler = self._doctype

    def _mark(self) -> int:
        at = self.parser.CurrentByteIndex
        if self.open is not None:
            self.open.content_start = at
            self.open = None
        return at

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        element = _Element(name, attrs, self._mark())
        if self.stack:
            self.stack[-1].children.append(element)
        else:
            self.root = element
        self.stack.append(element)
        self.open = element

    def _end(self, name: str) -> None:
        at = self.parser.CurrentByteIndex
        element = self.stack.pop()
        if self.open is element and self.data[at - 2 : at] == b"/>":
            # expat reports the end of <x/> just after the tag: nothing came between its events
            # and the tag closes itself.
            self.open = None
            element.empty = True
            element.content_start = element.end = at
            return
        self._mark()
        element.end = self.data.index(b">", at) + 1  # an end tag holds no ">" before its own

    def _characters(self, text: str) -> None:
        self._mark()
        if self.stack:
            self.stack[-1].text.append(text)

    def _other(self, _text: str) -> None:
        self._mark()

    def _pi(self, _target: str, _data: str) -> None:
        self._mark()

    def _doctype(self, *_args: object) -> None:
        raise FormXmlError("it has a DOCTYPE, which form XML never has")


def _read(formxml: str) -> tuple[bytes, _Element]:
    try:
        data = formxml.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise FormXmlError(f"not text UTF-8 can carry ({exc.reason})") from None
    reader = _Reader(data)
    try:
        reader.parser.Parse(data, True)
    except expat.ExpatError as exc:
        where = f"line {exc.lineno}, column {exc.offset + 1}"
        raise FormXmlError(
            f"not well-formed XML: {expat.ErrorString(exc.code)} ({where})"
        ) from None
    root = reader.root
    if root is None:  # pragma: no cover - expat refuses a document without an element
        raise FormXmlError("no element in it")
    if root.name != "form":
        raise FormXmlError(f"no <form> element: the document is a <{root.name}>")
    return data, root


def _state(root: _Element, section: FormSection) -> FormState:
    elements = list(root.walk())
    present = any(e.name == "section" and e.attrs.get("name") == section.name for e in elements)
    bound = {e.attrs["datafieldname"].lower() for e in elements if "datafieldname" in e.attrs}
    missing = tuple(f.column for f in _distinct(section.fields) if f.column.lower() not in bound)
    subgrid = any(_shows(e, section.subgrid) for e in elements)
    return FormState(present, missing, subgrid)


def _shows(element: _Element, subgrid: Subgrid) -> bool:
    """Whether ``element`` is a subgrid control on the subgrid's relationship or table."""
    if element.name != "control" or _guid(element.attrs.get("classid", "")) != _guid(
        SUBGRID_CLASS_ID
    ):
        return False
    parameters = element.child("parameters")
    if parameters is None:
        return False
    relationship = parameters.child_text("RelationshipName").lower()
    table = parameters.child_text("TargetEntityType").lower()
    return relationship == subgrid.relationship.lower() or table == subgrid.target_table.lower()


def _distinct(fields: tuple[FormField, ...]) -> list[FormField]:
    seen: dict[str, FormField] = {}
    for f in fields:
        seen.setdefault(f.column.lower(), f)
    return list(seen.values())


def _guid(value: str) -> str:
    return value.strip().strip("{}").lower()


def _first_sections(root: _Element) -> tuple[_Element, _Element]:
    """The <sections> of the first column of the first tab, and that column."""
    tabs = root.child("tabs")
    if tabs is None:
        raise FormXmlError("no <tabs> element in <form>")
    tab = tabs.child("tab")
    if tab is None:
        raise FormXmlError("no <tab> element in <tabs>")
    named = tab.attrs.get("name") or tab.attrs.get("id")
    which = f"the first <tab> ({named})" if named else "the first <tab>"
    columns = tab.child("columns")
    if columns is None:
        raise FormXmlError(f"no <columns> element in {which}")
    column = columns.child("column")
    if column is None:
        raise FormXmlError(f"no <column> element in the <columns> of {which}")
    sections = column.child("sections")
    if sections is None:
        raise FormXmlError(f"no <sections> element in the first <column> of {which}")
    return sections, column


# --- writing -----------------------------------------------------------------------------------


class _Ids:
    """Deterministic ids that no element of the form already uses."""

    def __init__(self, root: _Element) -> None:
        self.guids: set[str] = set()
        self.controls: set[str] = set()
        for element in root.walk():
            for name in ("id", "labelid", "uniqueid"):
                if name in element.attrs:
                    self.guids.add(_guid(element.attrs[name]))
            if element.name in ("control", "data") and "id" in element.attrs:
                self.controls.add(element.attrs["id"].lower())

    def guid(self, key: str) -> str:
        n = 0
        while (value := str(uuid.uuid5(_IDS, key if n == 0 else f"{key}#{n}"))) in self.guids:
            n += 1
        self.guids.add(value)
        return "{" + value + "}"

    def control(self, wanted: str) -> str:
        candidate, n = wanted, 0
        while candidate.lower() in self.controls:
            n += 1
            candidate = f"{wanted}{n}"
        self.controls.add(candidate.lower())
        return candidate


def _attr(value: str) -> str:
    escaped = (
        value.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("\t", "&#9;")
        .replace("\n", "&#10;")
        .replace("\r", "&#13;")
    )
    return f'"{escaped}"'


def _content(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


Lines = list[tuple[int, str]]  # (depth below the section, one element's tag)


def _section_lines(
    section: FormSection, fields: list[FormField], subgrid: Subgrid | None, ids: _Ids
) -> Lines:
    lcid = section.language_code

    def labels(depth: int, text: str) -> Lines:
        return [
            (depth, "<labels>"),
            (depth + 1, f'<label description={_attr(text)} languagecode="{lcid}" />'),
            (depth, "</labels>"),
        ]

    section_id = ids.guid(f"section:{section.name}")
    lines: Lines = [
        (
            0,
            f'<section name={_attr(section.name)} showlabel="true" showbar="false" '
            f'id="{section_id}" IsUserDefined="0" columns="1">',
        ),
        *labels(1, section.label),
        (1, "<rows>"),
    ]
    for f in fields:
        cell = ids.guid(f"cell:{section.name}:{f.column}")
        control = (
            f"<control id={_attr(ids.control(f.column))} classid="
            f'"{CONTROL_CLASS_IDS[f.control]}" datafieldname={_attr(f.column)} disabled="false" />'
        )
        lines += [
            (2, "<row>"),
            (3, f'<cell id="{cell}" showlabel="true">'),
            *labels(4, f.label),
            (4, control),
            (3, "</cell>"),
            (2, "</row>"),
        ]
    if subgrid is not None:
        lines += _subgrid_lines(section, subgrid, ids, labels(4, subgrid.label))
    lines += [(1, "</rows>"), (0, "</section>")]
    return lines


def _subgrid_lines(section: FormSection, subgrid: Subgrid, ids: _Ids, labels: Lines) -> Lines:
    cell = ids.guid(f"cell:{section.name}:{subgrid.name}")
    view = (
        []
        if subgrid.view_id is None
        else [(6, f"<ViewId>{{{uuid.UUID(subgrid.view_id)}}}</ViewId>")]
    )
    return [
        (2, "<row>"),
        (3, f'<cell id="{cell}" showlabel="true" colspan="1" rowspan="{SUBGRID_ROWS}">'),
        *labels,
        (
            4,
            f"<control id={_attr(ids.control(subgrid.name))} "
            f'classid="{SUBGRID_CLASS_ID}" indicationOfSubgrid="true">',
        ),
        (5, "<parameters>"),
        (6, f"<TargetEntityType>{_content(subgrid.target_table)}</TargetEntityType>"),
        *view,
        (6, f"<RelationshipName>{_content(subgrid.relationship)}</RelationshipName>"),
        (6, "<EnableViewPicker>false</EnableViewPicker>"),
        (6, "<ViewIds />"),
        (6, "<IsUserView>false</IsUserView>"),
        (6, f"<RecordsPerPage>{SUBGRID_ROWS}</RecordsPerPage>"),
        (6, "<AutoExpand>Fixed</AutoExpand>"),
        (6, "<EnableQuickFind>false</EnableQuickFind>"),
        (6, "<EnableJumpBar>false</EnableJumpBar>"),
        (6, "<ChartGridMode>Grid</ChartGridMode>"),
        (6, "<VisualizationId />"),
        (6, "<IsUserChart>false</IsUserChart>"),
        (6, "<EnableChartPicker>false</EnableChartPicker>"),
        (5, "</parameters>"),
        (4, "</control>"),
        (3, "</cell>"),
        (2, "</row>"),
        # The rows a multi-row cell spans follow it empty, as the form designer writes them.
        *[(2, "<row />")] * (SUBGRID_ROWS - 1),
    ]


def _indent(data: bytes, at: int) -> bytes | None:
    """The spaces and tabs before ``at`` when they start a line; None when ``at`` is not the
    first thing on its line."""
    i = at
    while i > 0 and data[i - 1] in b" \t":
        i -= 1
    return data[i:at] if i > 0 and data[i - 1] == ord("\n") else None


def _unit(outer: bytes | None, inner: bytes | None) -> bytes | None:
    if outer is not None and inner is not None and inner.startswith(outer) and inner != outer:
        return inner[len(outer) :]
    return None


def _layout(data: bytes, sections: _Element, column: _Element) -> tuple[bytes, bytes] | None:
    """(indent of a section in ``sections``, one level of indentation), or None when the
    column is not laid out one element a line."""
    own = _indent(data, sections.start)
    placed = [c for c in sections.children if c.name == "section"]
    if placed:
        indent = _indent(data, placed[-1].start)
        if indent is None:
            return None
        first = placed[-1].children[0] if placed[-1].children else None
        inner = _indent(data, first.start) if first else None
        step = _unit(own, indent) or _unit(indent, inner) or b"  "
        return indent, step
    if own is None:
        return None
    step = _unit(_indent(data, column.start), own) or b"  "
    return own + step, step


def _render(lines: Lines, newline: bytes, indent: bytes, step: bytes) -> bytes:
    return b"".join(newline + indent + step * depth + text.encode() for depth, text in lines)


def _insertion_point(sections: _Element) -> int:
    placed = [c for c in sections.children if c.name == "section"]
    return placed[-1].end if placed else sections.content_start


def _render_in(
    data: bytes, sections: _Element, column: _Element, lines: Lines, newline: bytes
) -> bytes:
    layout = _layout(data, sections, column)
    if layout is None:
        return "".join(text for _, text in lines).encode()
    indent, step = layout
    snippet = _render(lines, newline, indent, step)
    placed = any(c.name == "section" for c in sections.children)
    inside = data[sections.content_start : sections.end]
    if not placed and b"\n" not in inside:
        # <sections></sections> laid out on one line: put the end tag back on a line of its own.
        snippet += newline + indent[: len(indent) - len(step)]
    return snippet


def _opened(data: bytes, sections: _Element, column: _Element, lines: Lines) -> bytes:
    """``<sections />`` written as a start tag, the new section and an end tag."""
    tag = data[sections.start : sections.end]
    opened = tag[:-2].rstrip() + b">"
    own = _indent(data, sections.start)
    if own is None:
        return opened + "".join(text for _, text in lines).encode() + b"</sections>"
    newline = b"\r\n" if b"\r\n" in data else b"\n"
    step = _unit(_indent(data, column.start), own) or b"  "
    return opened + _render(lines, newline, own + step, step) + newline + own + b"</sections>"
