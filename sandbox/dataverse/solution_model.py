"""What a solution file holds, as the emulator reads and writes it (``solution_file.py``) and
gathers it from a solution (``solution_export.py``): the publisher, the solution, and the tables,
columns, relationships, forms, views and roles it brings."""

from __future__ import annotations

from dataclasses import dataclass, field


class SolutionFileError(ValueError):
    """The file is not a solution file the emulator can import; the message says why."""


@dataclass
class Attribute:
    name: str
    type: str  # customizations.xml <Type>
    date_only: bool = False
    max_length: int | None = None
    minimum: float | None = None
    maximum: float | None = None
    options: dict[int, str] = field(default_factory=dict)
    primary_name: bool = False


@dataclass
class Entity:
    logical: str
    schema_name: str
    entity_set: str
    display_name: str
    display_collection_name: str
    custom: bool
    behavior: int = 0  # the root component's: 0 with subcomponents, 2 a shell
    attributes: list[Attribute] = field(default_factory=list)


@dataclass
class Relationship:
    schema_name: str
    referenced: str
    referencing: str
    lookup: str
    navigation: str
    collection: str


@dataclass
class Form:
    formid: str
    table: str
    name: str
    type: int
    formxml: str
    description: str = ""
    activation: int = 1


@dataclass
class View:
    savedqueryid: str
    table: str
    name: str
    querytype: int
    fetchxml: str
    layoutxml: str
    isdefault: bool
    description: str = ""


@dataclass
class Role:
    roleid: str
    name: str
    privileges: list[tuple[str, int]] = field(default_factory=list)  # (name, PrivilegeDepth)


@dataclass
class SolutionFile:
    unique_name: str
    friendly_name: str
    version: str
    managed: bool
    description: str
    publisher: dict[str, str]  # uniquename, friendlyname, prefix, optionvalueprefix
    entities: list[Entity] = field(default_factory=list)
    relationships: list[Relationship] = field(default_factory=list)
    forms: list[Form] = field(default_factory=list)
    views: list[View] = field(default_factory=list)
    roles: list[Role] = field(default_factory=list)
