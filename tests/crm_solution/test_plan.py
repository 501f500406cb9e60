"""``shared.crm_solution.plan``: what apply would do, decided from a survey (pure, no I/O)."""

from __future__ import annotations

from pathlib import Path

from shared.crm_solution import components
from shared.crm_solution.form_xml import add_section
from shared.crm_solution.plan import (
    AddComponent,
    CreatePublisher,
    CreateRole,
    CreateSolution,
    CreateView,
    EditForm,
    GrantPrivileges,
    Publish,
    plan_container,
    plan_customizations,
)
from shared.crm_solution.survey import RoleFound, Survey
from shared.dataverse import (
    ComponentType,
    Privilege,
    Publisher,
    Role,
    SavedQuery,
    Solution,
    SystemForm,
)

PREFIX = "cosell_"
FORM = (Path(__file__).parent.parent / "fixtures" / "formxml").glob("opportunity_main_unified*")
FORM_XML = next(iter(FORM)).read_text(encoding="utf-8")


def _privileges() -> dict[str, Privilege]:
    names = {n for spec in components.roles(PREFIX) for n in spec.names}
    return {n.lower(): Privilege(privilegeid=f"p-{n.lower()}", name=n) for n in names}


def _complete() -> Survey:
    """An org that has everything, as apply leaves it."""
    found = Survey(PREFIX, None, business_unit="bu")
    section = components.form_section(PREFIX)
    found.forms = [
        SystemForm(formid="f1", name="Opportunity", formxml=add_section(FORM_XML, section))
    ]
    found.views = {
        v.name: SavedQuery(savedqueryid=f"v-{v.name}", name=v.name, fetchxml=v.fetchxml)
        for v in components.views(PREFIX)
    }
    found.privileges = _privileges()
    found.roles = {
        spec.name: RoleFound(
            Role(roleid=f"r-{spec.name}", name=spec.name),
            {n.lower(): d for n, d in spec.privileges},
        )
        for spec in components.roles(PREFIX)
    }
    return found


def test_a_complete_org_needs_nothing() -> None:
    plan = plan_customizations(_complete())

    assert plan.steps == [] and plan.problems == []
    assert plan.ok


def test_a_bare_org_gets_the_section_views_roles_privileges_then_a_publish() -> None:
    found = _complete()
    found.forms = [SystemForm(formid="f1", name="Opportunity", formxml=FORM_XML)]
    found.views, found.roles = {}, {}

    steps = plan_customizations(found).steps

    assert [type(s) for s in steps] == [
        EditForm,
        CreateView,
        CreateView,
        CreateRole,
        GrantPrivileges,
        CreateRole,
        GrantPrivileges,
        Publish,
    ]


def test_each_role_missing_gets_created_and_granted_and_the_forms_published_last() -> None:
    found = _complete()
    found.forms = [SystemForm(formid="f1", name="Opportunity", formxml=FORM_XML)]
    found.roles = {}

    steps = plan_customizations(found).steps

    grants = [s for s in steps if isinstance(s, GrantPrivileges)]
    assert [g.role for g in grants] == ["Co-sell Sync", "Co-sell seller"]
    assert len(grants[0].privileges) == len(components.roles(PREFIX)[0].privileges)
    assert isinstance(steps[-1], Publish) and "opportunity" in steps[-1].tables


def test_a_role_holding_more_than_it_needs_is_reported_never_trimmed() -> None:
    found = _complete()
    found.roles["Co-sell Sync"].privileges["prvdeleteaccount"] = "Global"

    plan = plan_customizations(found)

    assert plan.steps == []
    (role,) = [f for f in plan.findings if f.name == "Co-sell Sync"]
    assert role.status == "differs" and "prvdeleteaccount" in role.detail


def test_a_privilege_held_at_a_lower_depth_is_raised() -> None:
    found = _complete()
    found.roles["Co-sell Sync"].privileges["prvreadopportunity"] = "Basic"

    (step,) = plan_customizations(found).steps

    assert isinstance(step, GrantPrivileges)
    assert step.privileges == (("prvReadOpportunity", "p-prvreadopportunity", "Global"),)


def test_a_view_whose_query_only_differs_in_layout_is_the_same() -> None:
    found = _complete()
    view = found.views["Co-sell: sync errors"]
    spaced = view.fetchxml.replace("><", ">\n  <") if view.fetchxml else ""
    found.views["Co-sell: sync errors"] = SavedQuery(
        savedqueryid=view.id, name=view.name, fetchxml=spaced
    )

    assert plan_customizations(found).ok


def test_a_view_an_admin_changed_is_reported_and_left() -> None:
    found = _complete()
    view = found.views["Co-sell: sync errors"]
    found.views[view.name] = SavedQuery(
        savedqueryid=view.id, name=view.name, fetchxml="<fetch><entity name='opportunity'/></fetch>"
    )

    plan = plan_customizations(found)

    assert plan.steps == []
    assert any(f.name == view.name and f.status == "differs" for f in plan.findings)


def test_an_unreadable_form_is_a_problem_and_gets_no_step() -> None:
    found = _complete()
    found.forms = [SystemForm(formid="f1", name="Opportunity", formxml="<form><header/></form>")]

    plan = plan_customizations(found)

    assert not any(isinstance(s, EditForm) for s in plan.steps)
    assert plan.problems and "left untouched" in plan.problems[0]


def test_a_new_solution_comes_with_its_publisher_unless_the_prefix_has_one() -> None:
    found = Survey(PREFIX, "CoSellSync")
    assert [type(s) for s in plan_container(found).steps] == [CreatePublisher, CreateSolution]

    found.publisher = Publisher(publisherid="p", uniquename="theirs", customizationprefix="cosell")
    assert [type(s) for s in plan_container(found).steps] == [CreateSolution]


def test_existing_components_outside_the_solution_are_added_to_it() -> None:
    found = _complete()
    found.solution_name = "CoSellSync"
    found.solution = Solution(solutionid="s", uniquename="CoSellSync")
    found.metadata_ids = {
        (ComponentType.ENTITY, "opportunity"): "E-OPP",
        (ComponentType.ATTRIBUTE, "opportunity.cosell_audit"): "A-AUDIT",
    }
    found.in_solution = {"a-audit"}

    steps = [s for s in plan_customizations(found).steps if isinstance(s, AddComponent)]

    added = {s.object_id: s.subcomponents for s in steps}
    assert added["E-OPP"] is False  # the standard table travels without its other columns
    assert "A-AUDIT" not in added
    assert {"f1", "r-Co-sell Sync", "v-Co-sell: sync errors"} <= set(added)
