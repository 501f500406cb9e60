"""shared.crm_solution.form_xml on real forms (tests/fixtures/formxml, see SOURCES.md there)."""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest

from shared.crm_solution.form_xml import (
    CONTROL_CLASS_IDS,
    SUBGRID_CLASS_ID,
    FormField,
    FormSection,
    FormXmlError,
    Subgrid,
    add_section,
    inspect_form,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "formxml"
OPPORTUNITY_FORMS = sorted(p.name for p in FIXTURES.glob("opportunity_main_*.xml"))
ALL_FORMS = sorted(p.name for p in FIXTURES.glob("*.xml"))
VIEW_ID = "{6A0E1D2C-3B4A-4F5E-8D7C-9B0A1F2E3D4C}"

SECTION = FormSection(
    "cosell_partnercenter",
    "Microsoft Partner Center",
    (
        FormField("cosell_syncwithpartnercenter", "Sync with Partner Center", "checkbox"),
        FormField("cosell_referralid", "Referral ID", "text"),
        FormField("cosell_referrallink", "Referral link", "url"),
        FormField("cosell_visibletomicrosoft", "Visible to Microsoft", "toggle"),
        FormField("cosell_helpneeded", "Help needed", "choice"),
        FormField("cosell_audit", "Co-sell audit", "memo"),
    ),
    Subgrid(
        "cosell_solutions_subgrid",
        "Microsoft Solutions",
        "cosell_solution",
        "cosell_opportunity_cosell_solutions",
        VIEW_ID,
    ),
)
COLUMNS = tuple(f.column for f in SECTION.fields)


def _form(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def _tree(formxml: str) -> ET.Element:
    return ET.fromstring(formxml)  # noqa: S314 - the test's own fixtures and output


def _inserted(before: str, after: str) -> str:
    """The text ``after`` has more than ``before``, asserting it is one contiguous insertion:
    every other character of ``after`` is ``before``'s, in order."""
    grown = len(after) - len(before)
    assert grown > 0, "nothing was inserted"
    same = 0
    while same < len(before) and before[same] == after[same]:
        same += 1
    assert after[same + grown :] == before[same:], "characters outside the insertion changed"
    return after[same : same + grown]


def _first_column_sections(form: ET.Element) -> list[ET.Element]:
    sections = form.find("tabs/tab/columns/column/sections")
    assert sections is not None
    return list(sections)


def _ours(form: ET.Element) -> ET.Element:
    found = [s for s in form.iter("section") if s.get("name") == SECTION.name]
    assert len(found) == 1
    return found[0]


def _bound(form: ET.Element) -> list[str]:
    return [e.attrib["datafieldname"] for e in form.iter() if "datafieldname" in e.attrib]


@pytest.mark.parametrize("name", ALL_FORMS)
def test_section_added_to_real_opportunity_form_leaves_the_rest_unchanged(name: str) -> None:
    before = _form(name)
    after = add_section(before, SECTION)
    snippet = _inserted(before, after)
    assert f'<section name="{SECTION.name}"' in snippet
    assert snippet.count("<section ") == 1
    # The section is the last of the first tab's first column; the sections before it are the
    # form's own, in their order.
    old = [s.get("name") for s in _first_column_sections(_tree(before))]
    new = [s.get("name") for s in _first_column_sections(_tree(after))]
    assert new == [*old, SECTION.name]


@pytest.mark.parametrize("name", ALL_FORMS)
def test_result_is_well_formed_and_parses(name: str) -> None:
    before = _form(name)
    after = _tree(add_section(before, SECTION))
    section = _ours(after)
    rows = section.find("rows")
    assert rows is not None
    assert section.find("labels/label") is not None
    assert len(list(after.iter())) > len(list(_tree(before).iter()))
    controls = [c for c in section.iter("control") if c.get("datafieldname")]
    assert [c.get("datafieldname") for c in controls] == list(COLUMNS)
    # Every id of the form stays unique with ours in it.
    ids = [e.get("id") for e in after.iter() if e.tag in ("tab", "section", "cell") and e.get("id")]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("name", ALL_FORMS)
def test_second_apply_changes_nothing(name: str) -> None:
    once = add_section(_form(name), SECTION)
    assert add_section(once, SECTION) == once
    state = inspect_form(once, SECTION)
    assert state.section_present and state.subgrid_present and state.missing_fields == ()


def test_the_same_form_gets_the_same_xml_and_guid_ids_every_time() -> None:
    before = _form("opportunity_main_unified_interface_fr.xml")
    first, second = add_section(before, SECTION), add_section(before, SECTION)
    assert first == second
    section = _ours(_tree(first))
    ids = [section.get("id"), *(c.get("id") for c in section.iter("cell"))]
    assert len(ids) == len(COLUMNS) + 2 == len(set(ids))
    for value in ids:
        assert value is not None and re.fullmatch(r"\{[0-9a-f-]{36}\}", value)
        assert uuid.UUID(value).version == 5


def test_new_section_follows_the_forms_indentation() -> None:
    before = _form("opportunity_main_unified_interface_fr.xml")
    after = add_section(before, SECTION)
    lines = after.split("\n")
    start = next(i for i, line in enumerate(lines) if 'name="cosell_partnercenter"' in line)
    end = next(i for i in range(start, len(lines)) if lines[i].strip() == "</section>")
    # The column's last section ends at that depth; ours follows at the same one, one element a
    # line, each level two spaces further in, and the column's end tags follow as before.
    assert lines[start - 1] == "                </section>"
    assert lines[start].startswith('                <section name="cosell_partnercenter" ')
    assert lines[start + 1] == "                  <labels>"
    assert lines[end] == "                </section>"
    assert lines[end + 1 : end + 3] == ["              </sections>", "            </column>"]
    assert all(line.strip().startswith("<") for line in lines[start : end + 1])


def test_one_line_form_gets_a_one_line_section() -> None:
    before = re.sub(r">\s+<", "><", _form("opportunity_main_classic_information_fr.xml"))
    after = add_section(before, SECTION)
    start = after.index(f'<section name="{SECTION.name}"')
    end = after.index("</section>", start) + len("</section>")
    assert after[:start] + after[end:] == before  # the section element is all that was added
    assert not re.search(r"\s<|>\s", after[start:end])


def test_windows_line_endings_are_kept() -> None:
    before = _form("opportunity_main_custom_block_booking_en.xml").replace("\n", "\r\n")
    snippet = _inserted(before, add_section(before, SECTION))
    assert "\r\n" in snippet
    assert "\n" not in snippet.replace("\r\n", "")


def test_fields_already_on_the_form_are_not_added_twice() -> None:
    # "name" is in the body of every opportunity form, "estimatedvalue" in the UCI form's header
    # and "statecode" only among its hidden controls: all three are on the form already.
    section = replace(
        SECTION,
        fields=(
            FormField("name", "Topic", "text"),
            FormField("estimatedvalue", "Est. revenue", "text"),
            FormField("statecode", "Status", "choice"),
            FormField("cosell_referralid", "Referral ID", "text"),
            FormField("cosell_referralid", "Referral ID again", "text"),
        ),
    )
    before = _form("opportunity_main_unified_interface_fr.xml")
    assert inspect_form(before, section).missing_fields == ("cosell_referralid",)
    after = _tree(add_section(before, section))
    bound, was = _bound(after), _bound(_tree(before))
    for column in ("name", "estimatedvalue", "statecode"):
        assert bound.count(column) == was.count(column)
    assert bound.count("cosell_referralid") == 1
    ours = _ours(after)
    assert [c.get("datafieldname") for c in ours.iter("control") if c.get("datafieldname")] == [
        "cosell_referralid"
    ]


def test_only_the_missing_fields_go_in_one_a_row_with_the_classid_of_their_kind() -> None:
    before = _form("opportunity_main_custom_block_booking_en.xml")
    section = replace(SECTION, fields=(*SECTION.fields, FormField("name", "Topic", "text")))
    ours = _ours(_tree(add_section(before, section)))
    rows = ours.findall("rows/row")
    field_rows = [r for r in rows if r.find("cell/control[@datafieldname]") is not None]
    assert len(field_rows) == len(COLUMNS)
    for row, f in zip(field_rows, SECTION.fields, strict=True):
        (cell,) = row.findall("cell")
        control = cell.find("control")
        assert control is not None
        assert control.get("datafieldname") == control.get("id") == f.column
        assert control.get("classid") == CONTROL_CLASS_IDS[f.control]
        assert [e.get("description") for e in cell.iter("label")] == [f.label]
    assert CONTROL_CLASS_IDS["checkbox"] == "{B0C6723A-8503-4fd7-BB28-C8A06AC933C2}"
    assert CONTROL_CLASS_IDS["toggle"] == "{67FAC785-CD58-4f9f-ABB3-4B7DDC6ED5ED}"


def test_subgrid_names_the_relationship_and_view() -> None:
    before = _form("opportunity_main_classic_information_fr.xml")
    ours = _ours(_tree(add_section(before, SECTION)))
    grids = [c for c in ours.iter("control") if c.get("classid") == SUBGRID_CLASS_ID]
    assert len(grids) == 1
    grid = grids[0]
    assert grid.get("id") == "cosell_solutions_subgrid"
    assert grid.get("indicationOfSubgrid") == "true"
    assert grid.findtext("parameters/TargetEntityType") == "cosell_solution"
    assert grid.findtext("parameters/RelationshipName") == "cosell_opportunity_cosell_solutions"
    assert grid.findtext("parameters/ViewId") == VIEW_ID.lower()
    assert grid.findtext("parameters/IsUserView") == "false"
    assert grid.findtext("parameters/RecordsPerPage") == "4"
    # The subgrid is the section's last field row, spanning the empty rows after it.
    rows = ours.findall("rows/row")
    cell = rows[len(COLUMNS)].find("cell")
    assert cell is not None and cell.find("control") is grid
    spans = int(cell.get("rowspan", "1"))
    assert spans > 1
    assert len(rows) == len(COLUMNS) + spans
    assert all(len(r) == 0 for r in rows[len(COLUMNS) + 1 :])


def test_subgrid_without_a_view_writes_no_view_id() -> None:
    section = replace(SECTION, subgrid=replace(SECTION.subgrid, view_id=None))
    ours = _ours(_tree(add_section(_form("ye_booking_main_information_en.xml"), section)))
    grid = next(c for c in ours.iter("control") if c.get("classid") == SUBGRID_CLASS_ID)
    assert grid.find("parameters/ViewId") is None
    assert grid.findtext("parameters/RelationshipName") == section.subgrid.relationship


def test_subgrid_already_on_the_form_is_not_added_again() -> None:
    # The block booking form lists ye_booking rows through ye_opportunity_ye_booking.
    before = _form("opportunity_main_custom_block_booking_en.xml")
    by_table = replace(SECTION.subgrid, target_table="ye_booking", relationship="other_rel")
    by_relationship = replace(SECTION.subgrid, relationship="ye_opportunity_ye_booking")
    for subgrid in (by_table, by_relationship):
        section = replace(SECTION, subgrid=subgrid)
        assert inspect_form(before, section).subgrid_present
        ours = _ours(_tree(add_section(before, section)))
        assert not [c for c in ours.iter("control") if c.get("classid") == SUBGRID_CLASS_ID]
    assert not inspect_form(before, SECTION).subgrid_present


def test_nothing_missing_returns_the_input_unchanged() -> None:
    before = _form("opportunity_main_unified_interface_fr.xml")
    section = replace(
        SECTION,
        fields=(FormField("name", "Topic", "text"), FormField("budgetamount", "Budget", "text")),
        subgrid=replace(SECTION.subgrid, target_table="quote", relationship="opportunity_quotes"),
    )
    state = inspect_form(before, section)
    assert not state.section_present and state.missing_fields == () and state.subgrid_present
    assert add_section(before, section) == before


def test_section_already_there_is_left_alone_even_when_it_lacks_fields() -> None:
    before = _form("opportunity_main_unified_interface_fr.xml")
    partial = add_section(before, replace(SECTION, fields=SECTION.fields[:2]))
    state = inspect_form(partial, SECTION)
    assert state.section_present
    assert state.missing_fields == COLUMNS[2:]
    assert state.subgrid_present
    assert add_section(partial, SECTION) == partial


def test_labels_are_escaped() -> None:
    label = "R&D <\"partners\"> 'n' co\nline two"
    section = replace(
        SECTION,
        label=label,
        fields=(FormField("cosell_referralid", label, "text"),),
        subgrid=replace(SECTION.subgrid, label="Solutions & more"),
    )
    before = _form("opportunity_main_custom_block_booking_en.xml")
    snippet = _inserted(before, add_section(before, section))
    assert "R&amp;D &lt;&quot;partners&quot;&gt;" in snippet
    assert "&#10;" in snippet and "Solutions &amp; more" in snippet
    ours = _ours(_tree(add_section(before, section)))
    descriptions = [e.get("description") for e in ours.iter("label")]
    assert descriptions == [label, label, "Solutions & more"]


def test_ids_already_used_on_the_form_are_not_reused() -> None:
    taken = add_section(_form("ye_booking_main_information_en.xml"), SECTION)
    theirs = _ours(_tree(taken))
    section_id, control_id = theirs.get("id"), "cosell_referralid"
    # The same ids on a form under another section name, with an unbound control holding the
    # column's control id: ours must pick others.
    renamed = taken.replace(f'name="{SECTION.name}"', 'name="renamed_by_admin"').replace(
        'datafieldname="cosell_referralid" ', ""
    )
    after = _tree(add_section(renamed, SECTION))
    ours = _ours(after)
    assert ours.get("id") != section_id
    control = next(c for c in ours.iter("control") if c.get("datafieldname") == control_id)
    assert control.get("id") == "cosell_referralid1"
    ids = [e.get("id") for e in after.iter() if e.tag in ("section", "cell")]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(
    ("formxml", "reason"),
    [
        ("<form><header /></form>", "no <tabs> element in <form>"),
        ("<form><tabs /></form>", "no <tab> element in <tabs>"),
        ('<form><tabs><tab name="general" /></tabs></form>', "no <columns> element in the first"),
        ('<form><tabs><tab name="general"><columns /></tab></tabs></form>', "no <column> element"),
        (
            '<form><tabs><tab name="general"><columns><column /></columns></tab></tabs></form>',
            "no <sections> element in the first <column> of the first <tab> (general)",
        ),
    ],
)
def test_form_without_tabs_is_refused_with_the_reason(formxml: str, reason: str) -> None:
    assert not inspect_form(formxml, SECTION).section_present  # inspecting needs no layout
    with pytest.raises(FormXmlError, match=re.escape(reason)):
        add_section(formxml, SECTION)


@pytest.mark.parametrize(
    ("formxml", "reason"),
    [
        ("", "not well-formed XML"),
        ("<form><tabs>", "not well-formed XML"),
        ("not xml at all", "not well-formed XML"),
        (_form("opportunity_main_classic_information_fr.xml")[:-3], "not well-formed XML"),
        ("<forms><systemform><form /></systemform></forms>", "no <form> element"),
        ('<!DOCTYPE form [<!ENTITY x "y">]><form />', "DOCTYPE"),
    ],
)
def test_what_is_not_form_xml_is_refused_with_the_reason(formxml: str, reason: str) -> None:
    for call in (inspect_form, add_section):
        with pytest.raises(FormXmlError, match=re.escape(reason)):
            call(formxml, SECTION)


@pytest.mark.parametrize(
    ("before", "expected_tag"),
    [
        (
            "<form><tabs><tab><columns><column><sections/></column></columns></tab></tabs></form>",
            "<sections>",
        ),
        (
            "<form>\n  <tabs>\n    <tab>\n      <columns>\n        <column>\n"
            '          <sections id="x" />\n        </column>\n      </columns>\n    </tab>\n'
            "  </tabs>\n</form>",
            '<sections id="x">',
        ),
    ],
)
def test_empty_sections_element_is_opened_around_the_new_section(
    before: str, expected_tag: str
) -> None:
    after = add_section(before, SECTION)
    start = before.index("<sections")
    end = before.index(">", start) + 1
    assert after[:start] == before[:start]
    assert after[len(after) - (len(before) - end) :] == before[end:]
    assert after[start:].startswith(expected_tag)
    assert [s.get("name") for s in _first_column_sections(_tree(after))] == [SECTION.name]
    if "\n" in before:  # laid out like the rest: the end tag under its start tag
        assert "\n          </sections>\n        </column>" in after
        assert '\n            <section name="cosell_partnercenter"' in after


def test_empty_pretty_sections_element_keeps_its_whitespace() -> None:
    before = (
        '<form>\n  <tabs>\n    <tab name="t">\n      <columns>\n        <column width="100%">\n'
        "          <sections>\n          </sections>\n        </column>\n      </columns>\n"
        "    </tab>\n  </tabs>\n</form>"
    )
    after = add_section(before, SECTION)
    _inserted(before, after)
    assert '          <sections>\n            <section name="cosell_partnercenter"' in after
    assert "              <labels>\n" in after
    assert "</rows>\n            </section>\n          </sections>\n        </column>" in after


def test_sandbox_seed_is_the_stock_form_and_takes_the_section() -> None:
    seed = Path(__file__).parents[2] / "sandbox" / "dataverse" / "seed"
    formxml = (seed / "opportunity_main.formxml.xml").read_text(encoding="utf-8")
    assert formxml == _form("opportunity_main_unified_interface_fr.xml")
    assert inspect_form(formxml, SECTION).missing_fields == COLUMNS


def test_bad_definitions_are_refused() -> None:
    with pytest.raises(ValueError, match="logical"):
        FormField("cosell referral", "Referral", "text")
    with pytest.raises(ValueError, match="XML cannot carry"):
        FormField("cosell_x", "bell\x07", "text")
    with pytest.raises(ValueError, match="GUID"):
        replace(SECTION.subgrid, view_id="not-a-guid")
    with pytest.raises(ValueError, match="control"):
        FormField("cosell_x", "X", "slider")  # type: ignore[arg-type]


def test_declaration_comments_and_cdata_are_kept_as_they_are() -> None:
    before = (
        '<?xml version="1.0" encoding="utf-16"?>\n<!-- exported -->\n<form>\n  <tabs>\n'
        '    <tab name="général">\n      <columns>\n        <column width="100%">\n'
        "          <sections>\n"
        '            <section name="a"><rows><row><cell id="{1}"><control id="x">'
        "<parameters><Url><![CDATA[a<b&c]]></Url></parameters></control></cell></row></rows>"
        "</section>\n            <!-- the admin's note -->\n          </sections>\n"
        "        </column>\n      </columns>\n    </tab>\n  </tabs>\n</form>\n"
    )
    after = add_section(before, SECTION)
    _inserted(before, after)
    assert '</section>\n            <section name="cosell_partnercenter"' in after
    assert "\n            <!-- the admin's note -->\n          </sections>" in after
    assert [s.get("name") for s in _first_column_sections(_tree(after.split("\n", 1)[1]))] == [
        "a",
        SECTION.name,
    ]
