"""`pipx install .` gives a working `cosell` (SPEC 10): the project is built as a wheel, installed
with its declared dependencies into a fresh virtual environment — what pipx does, with pip — and
the console script is run from there, away from this checkout, with storage settings alone.

The wheel is built from a copy of what it packages (pyproject.toml, README.md, shared/,
sandbox/), so the checkout is left alone, in an isolated build environment with the
build-system's setuptools from the package index, as pipx builds it. The install resolves
pyproject's dependency ranges from the package index, constrained to the versions this
environment runs (its `pip freeze`), so it downloads the same releases every time: about 40 s
on a 2-core VM. Deselect with `-m "not install"` where there is no package index.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.install, pytest.mark.azurite]

ROOT = Path(__file__).resolve().parents[2]
PACKAGED = ("pyproject.toml", "README.md", "shared", "sandbox")
INSTALL_TIMEOUT_S = 300


@dataclass
class Installed:
    wheel: Path
    build_log: str
    venv: Path
    folder: Path

    @property
    def cosell(self) -> Path:
        return self.venv / "bin" / "cosell"

    def run(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``cosell ARGS`` from the fresh environment, in a folder without the sources, with
        no app setting in its environment but those of ``env``."""
        base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
        return subprocess.run(
            [str(self.cosell), *args],
            cwd=self.folder,
            env={**base, **(env or {})},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


def _pip(*args: str, python: str = sys.executable, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, "-m", "pip", "--disable-pip-version-check", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
        check=False,
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    folder = tmp_path_factory.mktemp("install")
    source = folder / "source"
    for name in PACKAGED:
        if (ROOT / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
            shutil.copytree(ROOT / name, source / name, ignore=ignore)
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(ROOT / name, source / name)

    built = _pip(
        "wheel", "-v", "--no-deps", "-w", str(folder / "dist"), ".",
        cwd=source,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = (folder / "dist").glob("co_sell_sync-*.whl")

    frozen = _pip("freeze", "--exclude-editable", cwd=folder)
    assert frozen.returncode == 0, frozen.stderr
    pins = [line for line in frozen.stdout.splitlines() if not line.startswith("co-sell-sync")]
    constraints = folder / "constraints.txt"
    constraints.write_text("\n".join(pins) + "\n", encoding="utf-8")

    venv = folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    install = _pip(
        "install", "--quiet", "-c", str(constraints), str(wheel), python=python, cwd=folder
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    return Installed(wheel, built.stdout + built.stderr, venv, folder)


def test_the_wheel_builds_without_a_licence_warning(installed: Installed) -> None:
    assert "is deprecated" not in installed.build_log
    assert "License classifiers" not in installed.build_log
    assert installed.wheel.name == "co_sell_sync-0.1.0-py3-none-any.whl"


def test_the_installed_cosell_shows_its_help(installed: Installed) -> None:
    top = installed.run("--help")
    poison = installed.run("poison", "list", "--help")

    assert top.returncode == 0, top.stderr
    assert "usage: cosell" in top.stdout and "poison" in top.stdout
    assert poison.returncode == 0, poison.stderr
    assert "usage: cosell poison list" in poison.stdout


def test_the_installed_cosell_lists_the_poison_queue_with_storage_settings_alone(
    installed: Installed, storage_connection_string: str
) -> None:
    ran = installed.run(
        "poison", "list", "--json", env={"AzureWebJobsStorage": storage_connection_string}
    )

    assert ran.returncode == 0, ran.stderr
    assert '"queue": "sync-jobs-poison"' in ran.stdout


def test_the_installed_cosell_is_not_the_checkout(installed: Installed) -> None:
    """The script imports the installed package, with the dependencies pip installed."""
    python = installed.venv / "bin" / "python"
    where = subprocess.run(
        [str(python), "-c", "import shared, azure.keyvault.secrets; print(shared.__file__)"],
        cwd=installed.folder,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert str(installed.venv) in where.stdout
    assert str(ROOT) not in where.stdout
