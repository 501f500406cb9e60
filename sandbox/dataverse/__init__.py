"""The Dataverse Web API emulator (SPEC 9): ``create_app()`` returns the ASGI app.

API under ``/api/data/v9.2/`` (bearer token required): entity sets ``opportunities``,
``accounts``, ``contacts``, ``leads``, ``tasks``, ``transactioncurrencies`` (seeded),
``cosell_solutions``, ``cosell_solutiondetails`` — collection GET (``$select``, ``$filter``,
``$orderby``, ``$top``, ``$expand``, ``$count``, ``Prefer: odata.maxpagesize`` paging; any other
system query option is a 400, ``query_options.py``) and POST (with deep insert, all or nothing);
row GET/PATCH/DELETE (``If-Match``, ``If-None-Match``, ``Prefer: return=representation``
answered with ``Preference-Applied``); ``DELETE .../<nav>/$ref``; ``$batch`` with change sets
(``batch.py``); the bound bulk actions ``<set>/Microsoft.Dynamics.CRM.CreateMultiple`` and
``UpdateMultiple`` (``bulk.py``); ``WhoAmI``; ``WinOpportunity`` / ``LoseOpportunity``;
``EntityDefinitions`` (GET with ``$filter``/``$select`` on their properties, POST; a table by
``(<MetadataId>)`` or ``(LogicalName='x')``; ``/Attributes`` GET/POST, one attribute by either
key, casts of the collection or of one attribute to a derived type such as
``/Microsoft.Dynamics.CRM.PicklistAttributeMetadata`` with ``$expand=OptionSet($select=Options)``
for choices' values and labels, ``/OneToManyRelationships`` GET) and ``RelationshipDefinitions``
(POST). Microsoft's ``PowerPlatform-Dataverse-Client`` runs against it unmodified
(tests/dataverse/test_microsoft_sdk.py).

Customization (issue 17, ``customization.py`` routes it): the system tables ``publishers``,
``solutions``, ``solutioncomponents`` (``solutions.py``), ``systemforms`` (``forms.py``),
``savedqueries`` (``views.py``), ``businessunits``, ``roles``, ``roleprivilegescollection``
(``roles.py``), ``privileges`` (``privileges.py``) and ``importjobs`` (``import_job.py``) are
ordinary tables, seeded like a new org (default publishers; the Default, Active and Basic
solutions; the opportunity main form — Microsoft's stock one, ``seed/`` — and quick create
form and the account main form; the standard opportunity and account views; the root business
unit; the standard and customization privileges). ``MSCRM.SolutionUniqueName`` on POST
EntityDefinitions, ``/Attributes``, RelationshipDefinitions, savedqueries, roles and PATCH
systemforms adds a solution component (an unknown or managed solution is refused); unbound
``AddSolutionComponent``, ``PublishXml``, ``PublishAllXml`` (a PATCHed form stays unpublished
until then), ``ExportSolution``, ``ImportSolution``, ``ImportSolutionAsync`` (an
``asyncoperations`` system job and the ``importjobs`` row show its progress;
``solution_file.py`` reads and writes the zip); bound ``AddPrivilegesRole``,
``ReplacePrivilegesRole``, ``RetrieveRolePrivilegesRole()``, ``RetrieveUnpublished()``;
``GET <set>?savedQuery=<id>`` and ``?fetchXml=`` (``fetchxml.py``: a subset, anything else a 400).
A table made through the metadata API or an import (``definitions.py``) gets its privileges and
its "Active <plural>" view. A request needing a privilege the operator lacks is a 403
0x80040220 (``access.py``).

The app's custom columns and tables are seeded from ``shared.crm_schema`` with
``create_app(column_prefix=...)`` (``cosell_`` by default, so ``cosell_solutions`` and
``cosell_solutiondetails`` above). ``create_app(custom_schema=False)`` starts from an org without
them: the standard tables only (what ``cosell schema apply`` finds); ``/_emulator/reset`` returns
to the starting schema.

Control (no token): ``GET /_emulator/health``, ``POST /_emulator/reset`` (currencies stay;
the system tables back to their seed), ``GET /_emulator/stats`` (``solutions``: each solution's
components; ``publishes``), ``PUT|DELETE /_emulator/faults``, ``GET|PUT /_emulator/limits``,
``GET|PUT|DELETE /_emulator/customization`` (``missing_privileges``, ``import_delay_ms``;
``customizing.py``).

``$expand`` (reference 2.4) takes single-valued navigation properties (lookups) and
collection-valued ones: every lookup gives its target table one, named by its relationship's
SchemaName — the standard ones as Dataverse names them (``opportunity_customer_accounts``,
``contact_customer_accounts``, ``Opportunity_Tasks`` …, ``standard.py``), the app's from
``shared.crm_schema`` (``cosell_opportunity_cosell_solutions``), and the rest (lookups to
``systemuser``) by the rule ``<referencing table>_<navigation property>``
(``schema.collection_name``). Nested options in
parentheses, ``;``-separated: ``$select``, ``$expand``, and on collections ``$filter``,
``$orderby``, ``$top``. Deep insert (reference 4.1) nests related rows in a POST: objects under
single-valued navigation properties, arrays under collection-valued ones; one request, and if
any row fails no row is created.

Not emulated: change tracking (``odata.track-changes``), alternate keys (so ``UpsertMultiple``),
``<nav>@odata.nextLink`` paging of expanded collections (up to 5000 rows come inline), binding
existing rows into a collection on create (``<collection>@odata.bind``), filters through
collection-valued properties (``any``/``all``), and the execution-time service-protection limit.
"""

from sandbox.dataverse.app import create_app, emulator_of
from sandbox.dataverse.limits import Limits
from sandbox.dataverse.state import Emulator
from sandbox.kit.faults import Faults

__all__ = ["Emulator", "Faults", "Limits", "create_app", "emulator_of"]
