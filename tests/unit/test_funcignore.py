"""``.funcignore``: what `func azure functionapp publish` leaves out of the deployment package
(learn.microsoft.com azure-functions/functions-run-local, "publish": files matching .funcignore,
gitignore syntax, are not published). Local settings hold secrets; caches are noise."""

from __future__ import annotations

import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _ignored(name: str) -> bool:
    patterns = [
        line.strip()
        for line in (ROOT / ".funcignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return any(fnmatch.fnmatch(name, pattern) for pattern in patterns)


def test_local_settings_and_caches_are_not_published() -> None:
    for name in (
        "local.settings.json",
        ".sandbox",
        "__pycache__",
        "module.pyc",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".venv",
        "node_modules",
        "tests",
    ):
        assert _ignored(name), name


def test_the_app_itself_is_published() -> None:
    for name in ("function_app.py", "host.json", "requirements.txt", "shared"):
        assert not _ignored(name), name
