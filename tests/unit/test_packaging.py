"""requirements.txt (the exact pins the Functions platform installs) and pyproject.toml's
dependencies (the ranges `pip install .` / `pipx install .` resolve for the operator CLI) name
the same packages, and each pin lies in its range: a pin moved past its range, or a package
added to one list only, fails here."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]


def pinned() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for raw in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        (specifier,) = requirement.specifier  # one exact pin per line
        assert specifier.operator == "==", f"requirements.txt pins exactly: {line}"
        pins[canonicalize_name(requirement.name)] = Version(specifier.version)
    return pins


def project() -> dict[str, object]:
    document = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    table: dict[str, object] = document["project"]
    return table


def declared() -> dict[str, Requirement]:
    dependencies = project()["dependencies"]
    assert isinstance(dependencies, list)
    return {canonicalize_name(Requirement(d).name): Requirement(d) for d in dependencies}


def test_every_pinned_package_is_a_declared_dependency_and_back() -> None:
    pins, ranges = pinned(), declared()

    assert sorted(set(pins) - set(ranges)) == [], "add these to pyproject's dependencies"
    assert sorted(set(ranges) - set(pins)) == [], "pin these in requirements.txt"


def test_every_pin_lies_in_its_declared_range() -> None:
    pins, ranges = pinned(), declared()

    outside = {
        name: f"{pins[name]} not in {ranges[name].specifier}"
        for name in pins.keys() & ranges.keys()
        if not ranges[name].specifier.contains(pins[name], prereleases=True)
    }
    assert outside == {}


def test_each_range_has_a_lower_bound_at_its_pin() -> None:
    """`pipx install .` never picks an older release than the one the app is tested with."""
    pins, ranges = pinned(), declared()

    lower = {
        name: str(ranges[name].specifier)
        for name in pins.keys() & ranges.keys()
        if not any(
            s.operator == ">=" and Version(s.version) == pins[name] for s in ranges[name].specifier
        )
    }
    assert lower == {}


def test_the_licence_is_an_spdx_expression_and_the_backend_understands_it() -> None:
    document = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))

    assert project()["license"] == "MIT"  # PEP 639; a {text = ...} table warns on every build
    (backend,) = document["build-system"]["requires"]
    requirement = Requirement(backend)
    assert requirement.name == "setuptools"
    assert not requirement.specifier.contains("76.1")  # PEP 639 metadata needs setuptools 77
    assert requirement.specifier.contains("77.0.3")
