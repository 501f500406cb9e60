"""The values of ``--settings-file`` (Core Tools' ``local.settings.json``), under the
environment: read once by the command's settings, and by ``webhook register`` for the sandbox's
own values. No command module is imported here (``_settings`` imports them all)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from shared.settings import setting_names


def read_values(path: str | None) -> dict[str, str]:
    """The known app settings of the environment, over those of the settings file."""
    names = set(setting_names())
    return {k: v for k, v in file_values(path).items() if k in names and v != ""}


def file_values(path: str | None) -> dict[str, str]:
    """Every value of the settings file's ``Values``, under the environment (which wins):
    the app settings and the sandbox's own (``SANDBOX_HOST_PORT``, written by ``make up``)."""
    merged: dict[str, str] = {}
    if path is not None:
        document: Any = json.loads(Path(path).read_text(encoding="utf-8"))
        values = document.get("Values") if isinstance(document, dict) else None
        if not isinstance(values or {}, dict):
            raise ValueError(f"{path}: 'Values' is not an object")
        merged.update({str(k): str(v) for k, v in (values or {}).items()})
    merged.update(os.environ)
    return merged
