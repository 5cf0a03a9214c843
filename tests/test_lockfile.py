"""The lock files pin every dependency of pyproject.toml, with hashes, within its bounds.

`requirements.lock` (runtime, what the image installs) and
`requirements-dev.lock` (with the dev extra, what `.ci/test.sh` installs) are
made by `uv pip compile --universal --generate-hashes` from pyproject.toml
(the command is in each file's header), and `requirements-build.lock` pins
its build backend; this test fails when pyproject changes and a lock was not
made again.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s\\]+)")


def pins(lock: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in lock.read_text().splitlines():
        match = PIN.match(line)
        if match:
            found[canonicalize_name(match.group(1))] = match.group(2)
    return found


def declared(*extras: str) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = list(project["dependencies"])
    for extra in extras:
        names += project["optional-dependencies"][extra]
    return [Requirement(text) for text in names]


@pytest.mark.parametrize(
    ("lock", "extras"), [("requirements.lock", ()), ("requirements-dev.lock", ("dev",))]
)
def test_every_dependency_is_pinned_within_its_bounds(lock: str, extras: tuple[str, ...]) -> None:
    pinned = pins(ROOT / lock)
    for requirement in declared(*extras):
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{lock} does not pin {name}: run pip-compile again"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"{lock} pins {name}=={pinned[name]}, outside {requirement.specifier}"
        )


def test_the_build_backend_is_pinned() -> None:
    backend = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    pinned = pins(ROOT / "requirements-build.lock")
    for text in backend:
        requirement = Requirement(text)
        version = pinned[canonicalize_name(requirement.name)]
        assert requirement.specifier.contains(version), (requirement, version)


@pytest.mark.parametrize(
    "lock", ["requirements.lock", "requirements-dev.lock", "requirements-build.lock"]
)
def test_every_pin_carries_a_hash(lock: str) -> None:
    text = (ROOT / lock).read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9._-]+==)", text.split("\n", 6)[-1])
    for entry in entries:
        if PIN.match(entry):
            assert "--hash=sha256:" in entry, entry.splitlines()[0]
