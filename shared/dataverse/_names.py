"""Schema names the sync relies on that ``cosell schema apply`` creates (SPEC 4.1).

Kept here, in one place, so the engine, the schema command and the sandbox emulator
(``sandbox/dataverse/schema.py`` imports it) cannot drift apart.
"""

from __future__ import annotations

# The one-to-many relationship opportunity -> cosell_solution (lookup cosell_opportunityid).
# Its collection-valued navigation property on ``opportunity`` has this name: the relationship's
# SchemaName, which Dataverse uses as ReferencedEntityNavigationPropertyName unless told
# otherwise (reference 4.5: read navigation names from metadata, never guess them). Use it in
# ``$expand`` (reference 2.4) and as a deep-insert array (reference 4.1).
OPPORTUNITY_SOLUTIONS = "cosell_opportunity_cosell_solutions"
