"""Run the emulator alone: ``python -m sandbox.dataverse`` (port ``SANDBOX_DATAVERSE_PORT``;
its custom columns and tables carry ``CRM_COLUMN_PREFIX``, ``cosell_`` by default;
``SANDBOX_DATAVERSE_BARE=1`` starts it without them, to try ``cosell schema apply``)."""

from __future__ import annotations

import os

import uvicorn

from sandbox.dataverse import create_app
from shared.crm_schema import DEFAULT_PREFIX


def main() -> None:
    port = int(os.environ.get("SANDBOX_DATAVERSE_PORT", "7102"))
    bare = os.environ.get("SANDBOX_DATAVERSE_BARE", "").strip().lower() in ("1", "true", "yes")
    prefix = os.environ.get("CRM_COLUMN_PREFIX", "").strip() or DEFAULT_PREFIX
    app = create_app(custom_schema=not bare, column_prefix=prefix)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
