"""A solution file: the zip ``ExportSolution`` answers and ``ImportSolution`` reads, written from
and read into ``solution_model.SolutionFile`` (``solution_export.py`` gathers one from a
solution, ``import_job.py`` applies one).

Layout (learn.microsoft.com/power-platform/alm/solution-concepts-alm, .../alm/solution-
packager-tool "the compressed solution file (.zip)"; learn.microsoft.com/power-apps/developer/
model-driven-apps/customization-xml-reference): ``[Content_Types].xml``, ``solution.xml`` —
``ImportExportXml/SolutionManifest`` with ``UniqueName``, ``LocalizedNames``, ``Version``,
``Managed`` (0/1), ``Publisher`` (``UniqueName``, ``LocalizedNames``, ``CustomizationPrefix``,
``CustomizationOptionValuePrefix``) and ``RootComponents`` — and ``customizations.xml`` —
``ImportExportXml`` with ``Entities`` (each ``Entity``: ``Name``, ``EntityInfo/entity`` with its
``attributes``, ``FormXml`` with the forms' ``systemform`` elements and their ``form``,
``SavedQueries`` with the views' ``savedquery`` elements), ``Roles`` (``Role`` with
``RolePrivileges/RolePrivilege name level``) and ``EntityRelationships``.

What the emulator writes is what it needs to recreate the components: custom columns with their
type (nvarchar, ntext, int, bigint, money, decimal, float, bit, picklist, datetime), length,
range and options; lookups as relationships only. UNCERTAIN: a real file carries far more
(ribbons, display masks, cascade settings, every attribute of a table added with its
subcomponents); readers of a real file take what they know and ignore the rest, as here.
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
import zipfile

from sandbox.dataverse import forms, solutions, xml_safe
from sandbox.dataverse.roles import DEPTHS
from sandbox.dataverse.solution_model import (
    Attribute,
    Entity,
    Form,
    Relationship,
    Role,
    SolutionFile,
    SolutionFileError,
    View,
)
from sandbox.dataverse.xml_safe import XmlRefused

LANGUAGE = "1033"
# customizations.xml type -> the AttributeMetadata type the metadata API creates
METADATA_TYPES = {
    "nvarchar": "StringAttributeMetadata",
    "ntext": "MemoAttributeMetadata",
    "int": "IntegerAttributeMetadata",
    "bigint": "BigIntAttributeMetadata",
    "money": "MoneyAttributeMetadata",
    "decimal": "DecimalAttributeMetadata",
    "float": "DoubleAttributeMetadata",
    "bit": "BooleanAttributeMetadata",
    "picklist": "PicklistAttributeMetadata",
    "datetime": "DateTimeAttributeMetadata",
}
_DEPTH_NAMES = {v: k for k, v in DEPTHS.items()}
_FORM_TYPES = {2: "main", 6: "quickView", 7: "quick", 0: "dashboard", 12: "card"}
_FORM_CODES = {v: k for k, v in _FORM_TYPES.items()}


# -- writing -------------------------------------------------------------------------------------


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attributes: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attributes)
    if text is not None:
        element.text = text
    return element


def _names(parent: ET.Element, tag: str, inner: str, text: str) -> None:
    _sub(_sub(parent, tag), inner, description=text, languagecode=LANGUAGE)


def _embedded(parent: ET.Element, tag: str, text: str) -> None:
    """FormXml, FetchXML and LayoutXml sit in the file as XML, not as escaped text."""
    holder = _sub(parent, tag)
    if text:
        try:
            holder.append(xml_safe.parse(text))
        except XmlRefused:
            holder.text = text


def _manifest(file: SolutionFile) -> ET.Element:
    root = ET.Element(
        "ImportExportXml",
        {"version": "9.2.24121.212", "SolutionPackageVersion": "9.2", "languagecode": LANGUAGE,
         "generatedBy": "CrmLive"},
    )  # fmt: skip
    manifest = _sub(root, "SolutionManifest")
    _sub(manifest, "UniqueName", file.unique_name)
    _names(manifest, "LocalizedNames", "LocalizedName", file.friendly_name)
    if file.description:
        _names(manifest, "Descriptions", "Description", file.description)
    _sub(manifest, "Version", file.version)
    _sub(manifest, "Managed", "1" if file.managed else "0")
    publisher = _sub(manifest, "Publisher")
    _sub(publisher, "UniqueName", file.publisher["uniquename"])
    _names(publisher, "LocalizedNames", "LocalizedName", file.publisher["friendlyname"])
    _sub(publisher, "CustomizationPrefix", file.publisher["prefix"])
    _sub(publisher, "CustomizationOptionValuePrefix", file.publisher["optionvalueprefix"])
    components = _sub(manifest, "RootComponents")
    for entity in file.entities:
        _sub(components, "RootComponent", type="1", schemaName=entity.logical,
             behavior=str(entity.behavior))  # fmt: skip
    for relationship in file.relationships:
        _sub(components, "RootComponent", type="10", schemaName=relationship.schema_name,
             behavior="0")  # fmt: skip
    for kind, ids in (
        (solutions.ROLE, [r.roleid for r in file.roles]),
        (solutions.SAVED_QUERY, [v.savedqueryid for v in file.views]),
        (solutions.SYSTEM_FORM, [f.formid for f in file.forms]),
    ):
        for row_id in ids:
            _sub(components, "RootComponent", type=str(kind), id=f"{{{row_id}}}", behavior="0")
    _sub(manifest, "MissingDependencies")
    return root


def _customizations(file: SolutionFile) -> ET.Element:
    root = ET.Element("ImportExportXml", {"OrganizationVersion": "9.2.24121.212"})
    entities = _sub(root, "Entities")
    for entity in file.entities:
        element = _sub(entities, "Entity")
        _sub(element, "Name", entity.logical, LocalizedName=entity.display_name,
             OriginalName=entity.display_name)  # fmt: skip
        info = _sub(_sub(element, "EntityInfo"), "entity", Name=entity.schema_name)
        _names(info, "LocalizedNames", "LocalizedName", entity.display_name)
        _names(info, "LocalizedCollectionNames", "LocalizedCollectionName",
               entity.display_collection_name)  # fmt: skip
        attributes = _sub(info, "attributes")
        for attribute in entity.attributes:
            _write_attribute(attributes, attribute)
        _sub(info, "EntitySetName", entity.entity_set)
        _sub(info, "IsCustomizable", "1")
        _sub(info, "IsCustomEntity", "1" if entity.custom else "0")
        _sub(info, "OwnershipTypeMask", "UserOwned")
        form_xml = _sub(element, "FormXml")
        for form in (f for f in file.forms if f.table == entity.logical):
            group = _sub(form_xml, "forms", type=_FORM_TYPES.get(form.type, str(form.type)))
            system_form = _sub(group, "systemform")
            _sub(system_form, "formid", f"{{{form.formid}}}")
            _sub(system_form, "FormActivationState", str(form.activation))
            _embedded_form(system_form, form.formxml)
            _names(system_form, "LocalizedNames", "LocalizedName", form.name)
            if form.description:
                _names(system_form, "Descriptions", "Description", form.description)
        queries = _sub(_sub(element, "SavedQueries"), "savedqueries")
        for view in (v for v in file.views if v.table == entity.logical):
            query = _sub(queries, "savedquery")
            _sub(query, "savedqueryid", f"{{{view.savedqueryid}}}")
            _sub(query, "querytype", str(view.querytype))
            _sub(query, "isdefault", "1" if view.isdefault else "0")
            _embedded(query, "fetchxml", view.fetchxml)
            _embedded(query, "layoutxml", view.layoutxml)
            _names(query, "LocalizedNames", "LocalizedName", view.name)
            if view.description:
                _names(query, "Descriptions", "Description", view.description)
    roles = _sub(root, "Roles")
    for role in file.roles:
        element = _sub(roles, "Role", id=f"{{{role.roleid}}}", name=role.name)
        held = _sub(element, "RolePrivileges")
        for name, depth in role.privileges:
            _sub(held, "RolePrivilege", name=name, level=_DEPTH_NAMES[depth])
    relationships = _sub(root, "EntityRelationships")
    for relationship in file.relationships:
        element = _sub(relationships, "EntityRelationship", Name=relationship.schema_name)
        _sub(element, "EntityRelationshipType", "OneToMany")
        _sub(element, "ReferencingEntityName", relationship.referencing)
        _sub(element, "ReferencedEntityName", relationship.referenced)
        _sub(element, "ReferencingAttributeName", relationship.lookup)
        roles_element = _sub(element, "EntityRelationshipRoles")
        for role_type, name in (("1", relationship.navigation), ("0", relationship.collection)):
            role_element = _sub(roles_element, "EntityRelationshipRole")
            _sub(role_element, "NavigationPropertyName", name)
            _sub(role_element, "RelationshipRoleType", role_type)
    _sub(_sub(root, "Languages"), "Language", LANGUAGE)
    return root


def _embedded_form(parent: ET.Element, text: str) -> None:
    try:
        parent.append(xml_safe.parse(text))
    except XmlRefused:
        _sub(parent, "form").text = text


def _write_attribute(parent: ET.Element, attribute: Attribute) -> None:
    element = _sub(parent, "attribute", PhysicalName=attribute.name)
    _sub(element, "Type", attribute.type)
    _sub(element, "Name", attribute.name)
    _sub(element, "LogicalName", attribute.name)
    _sub(element, "IsCustomField", "1")
    if attribute.primary_name:
        _sub(element, "DisplayMask", "PrimaryName|ValidForAdvancedFind|ValidForForm|ValidForGrid")
    if attribute.type == "datetime":
        _sub(element, "Format", "date" if attribute.date_only else "datetime")
    if attribute.max_length is not None:
        _sub(element, "MaxLength", str(attribute.max_length))
    if attribute.minimum is not None:
        _sub(element, "MinValue", repr(attribute.minimum))
    if attribute.maximum is not None:
        _sub(element, "MaxValue", repr(attribute.maximum))
    _names(element, "displaynames", "displayname", attribute.name)
    if attribute.type == "picklist":
        option_set = _sub(element, "optionset", Name=attribute.name)
        _sub(option_set, "OptionSetType", "picklist")
        options = _sub(option_set, "options")
        for value, label in sorted(attribute.options.items()):
            option = _sub(options, "option", value=str(value))
            _names(option, "labels", "label", label)


def write(file: SolutionFile) -> bytes:
    """The zip, as Dataverse exports it."""
    content_types = (
        '<?xml version="1.0" encoding="utf-8"?><Types xmlns="http://schemas.openxmlformats.org/'
        'package/2006/content-types"><Default Extension="xml" ContentType="application/'
        'octet-stream" /></Types>'
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", content_types)
        parts = (("solution.xml", _manifest(file)), ("customizations.xml", _customizations(file)))
        for name, root in parts:
            archive.writestr(name, ET.tostring(root, encoding="utf-8", xml_declaration=True))
    return buffer.getvalue()


# -- reading -------------------------------------------------------------------------------------


def _text(parent: ET.Element, path: str, what: str) -> str:
    element = parent.find(path)
    if element is None or not (element.text or "").strip():
        raise SolutionFileError(f"solution.xml has no {what} ({path}).")
    return (element.text or "").strip()


def _label(parent: ET.Element, path: str) -> str:
    element = parent.find(path)
    return "" if element is None else element.get("description", "")


def _guid(text: str | None) -> str:
    return (text or "").strip().strip("{}").lower()


def read(data: bytes) -> SolutionFile:
    """The solution a file holds; ``SolutionFileError`` naming what is wrong with it."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise SolutionFileError(
            "The file is not a solution file: it is not a zip archive."
        ) from None
    names = set(archive.namelist())
    for required in ("[Content_Types].xml", "solution.xml", "customizations.xml"):
        if required not in names:
            raise SolutionFileError(f"The solution file has no {required}.")
    try:
        manifest_root = xml_safe.parse(archive.read("solution.xml"))
        customizations = xml_safe.parse(archive.read("customizations.xml"))
    except XmlRefused as exc:
        raise SolutionFileError(
            f"The solution file holds XML that cannot be read: {exc}."
        ) from None
    manifest = manifest_root.find("SolutionManifest")
    if manifest_root.tag != "ImportExportXml" or manifest is None:
        raise SolutionFileError("solution.xml has no ImportExportXml/SolutionManifest.")
    managed = _text(manifest, "Managed", "Managed flag")
    if managed not in ("0", "1"):
        raise SolutionFileError(f"solution.xml's Managed is '{managed}', not 0 or 1.")
    file = SolutionFile(
        unique_name=_text(manifest, "UniqueName", "UniqueName"),
        friendly_name=_label(manifest, "LocalizedNames/LocalizedName"),
        version=_text(manifest, "Version", "Version"),
        managed=managed == "1",
        description=_label(manifest, "Descriptions/Description"),
        publisher={
            "uniquename": _text(manifest, "Publisher/UniqueName", "publisher UniqueName"),
            "friendlyname": _label(manifest, "Publisher/LocalizedNames/LocalizedName"),
            "prefix": _text(manifest, "Publisher/CustomizationPrefix", "CustomizationPrefix"),
            "optionvalueprefix": _text(
                manifest,
                "Publisher/CustomizationOptionValuePrefix",
                "CustomizationOptionValuePrefix",
            ),
        },
    )
    if customizations.tag != "ImportExportXml":
        raise SolutionFileError("customizations.xml has no ImportExportXml root element.")
    behaviors = {
        (c.get("schemaName") or "").lower(): int(c.get("behavior") or 0)
        for c in manifest.iterfind("RootComponents/RootComponent")
        if c.get("type") == "1"
    }
    for element in customizations.iterfind("Entities/Entity"):
        _read_entity(file, element, behaviors)
    for element in customizations.iterfind("Roles/Role"):
        role = Role(_guid(element.get("id")), element.get("name") or "")
        for held in element.iterfind("RolePrivileges/RolePrivilege"):
            level = held.get("level") or "Global"
            if level not in DEPTHS:
                raise SolutionFileError(f"The role '{role.name}' has the unknown level '{level}'.")
            role.privileges.append((held.get("name") or "", DEPTHS[level]))
        file.roles.append(role)
    for element in customizations.iterfind("EntityRelationships/EntityRelationship"):
        navigation = {
            r.findtext("RelationshipRoleType", ""): r.findtext("NavigationPropertyName", "")
            for r in element.iterfind("EntityRelationshipRoles/EntityRelationshipRole")
        }
        file.relationships.append(
            Relationship(
                element.get("Name") or "",
                element.findtext("ReferencedEntityName", "").lower(),
                element.findtext("ReferencingEntityName", "").lower(),
                element.findtext("ReferencingAttributeName", "").lower(),
                navigation.get("1", ""),
                navigation.get("0", ""),
            )
        )
    return file


def _read_entity(file: SolutionFile, element: ET.Element, behaviors: dict[str, int]) -> None:
    logical = (element.findtext("Name") or "").strip().lower()
    info = element.find("EntityInfo/entity")
    if not logical or info is None:
        raise SolutionFileError("customizations.xml has an Entity without Name or EntityInfo.")
    entity = Entity(
        logical,
        info.get("Name") or logical,
        info.findtext("EntitySetName") or logical + "s",
        _label(info, "LocalizedNames/LocalizedName") or logical,
        _label(info, "LocalizedCollectionNames/LocalizedCollectionName") or logical,
        info.findtext("IsCustomEntity") == "1",
        behaviors.get(logical, 0),
    )
    for attribute in info.iterfind("attributes/attribute"):
        kind = attribute.findtext("Type") or ""
        if kind not in METADATA_TYPES:
            raise SolutionFileError(
                f"The column '{attribute.findtext('Name')}' of '{logical}' has the type '{kind}', "
                "which the emulator cannot create."
            )
        options = {
            int(o.get("value") or 0): _label(o, "labels/label")
            for o in attribute.iterfind("optionset/options/option")
        }

        def number(tag: str, *, of: ET.Element = attribute) -> float | None:
            text = of.findtext(tag)
            return None if text is None else float(text)

        length = attribute.findtext("MaxLength")
        entity.attributes.append(
            Attribute(
                (attribute.findtext("LogicalName") or attribute.findtext("Name") or "").lower(),
                kind,
                date_only=attribute.findtext("Format") == "date",
                max_length=None if length is None else int(length),
                minimum=number("MinValue"),
                maximum=number("MaxValue"),
                options=options,
                primary_name="PrimaryName" in (attribute.findtext("DisplayMask") or ""),
            )
        )
    file.entities.append(entity)
    for group in element.iterfind("FormXml/forms"):
        for system_form in group.iterfind("systemform"):
            form = system_form.find("form")
            file.forms.append(
                Form(
                    _guid(system_form.findtext("formid")),
                    logical,
                    _label(system_form, "LocalizedNames/LocalizedName"),
                    _FORM_CODES.get(group.get("type") or "main", forms.MAIN),
                    "" if form is None else ET.tostring(form, encoding="unicode"),
                    _label(system_form, "Descriptions/Description"),
                    int(system_form.findtext("FormActivationState") or 1),
                )
            )
    for query in element.iterfind("SavedQueries/savedqueries/savedquery"):
        file.views.append(
            View(
                _guid(query.findtext("savedqueryid")),
                logical,
                _label(query, "LocalizedNames/LocalizedName"),
                int(query.findtext("querytype") or 0),
                _inner(query.find("fetchxml")),
                _inner(query.find("layoutxml")),
                query.findtext("isdefault") == "1",
                _label(query, "Descriptions/Description"),
            )
        )


def _inner(holder: ET.Element | None) -> str:
    if holder is None:
        return ""
    children = list(holder)
    if children:
        return ET.tostring(children[0], encoding="unicode")
    return (holder.text or "").strip()
