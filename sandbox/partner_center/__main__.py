"""Run the emulator alone: ``python -m sandbox.partner_center`` (port ``SANDBOX_PC_PORT``, 7101)."""

from __future__ import annotations

import os

import uvicorn

from .app import create_app


def main() -> None:
    port = int(os.environ.get("SANDBOX_PC_PORT", "7101"))
    uvicorn.run(create_app(), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
