"""Run the emulator alone: ``python -m sandbox.dataverse`` (port ``SANDBOX_DATAVERSE_PORT``)."""

from __future__ import annotations

import os

import uvicorn

from sandbox.dataverse.app import create_app


def main() -> None:
    port = int(os.environ.get("SANDBOX_DATAVERSE_PORT", "7102"))
    uvicorn.run(create_app(), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
