"""Old home of the solutions collection name; ``shared.crm_schema`` now declares it per prefix.

The client does not know the app's schema: callers take the name from
``shared.crm_schema.opportunity_solutions(prefix)`` (or ``Columns.solutions_relationship``).
"""

from __future__ import annotations

from shared.crm_schema import DEFAULT_PREFIX, opportunity_solutions

# -- Old name, removed once shared/dataverse/__init__.py stops exporting it --------------------
# The default prefix's name only: it ignores CRM_COLUMN_PREFIX, so nothing in the app uses it.
OPPORTUNITY_SOLUTIONS = opportunity_solutions(DEFAULT_PREFIX)
