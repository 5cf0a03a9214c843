"""The README says what the code does: its settings table and its error table.

Both tables are read from README.md and held against the code they describe.
Settings: every variable `gateway.settings.documented()` declares is a row of
its own, with the default the code uses, and no row names anything else
(a secret's `_FILE` variant may stand beside it).  Errors: the rows are
exactly the `GatewayError` classes (status, code, `X-Gateway-Error`), each
class is raised somewhere in `gateway/`, and each code is exercised by a test.
"""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import gateway.http.app  # noqa: F401 - loads every module, so every error class is known
from gateway import errors
from gateway.cli.settings_help import show_default
from gateway.settings import Settings, documented

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
NAME = re.compile(r"`([A-Z][A-Z0-9_]+)`")


def table_after(header: str) -> list[list[str]]:
    """The rows (cells stripped) of the README table whose header line is `header`."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index(header)
    rows = []
    for line in lines[start + 2 :]:  # past the header and its |---| line
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    assert rows, f"no rows under {header!r}"
    return rows


def settings_rows() -> dict[str, str]:
    """variable → its default cell, one row per setting (its `_FILE` variant beside it)."""
    secrets = {f.metadata["env"] for f in fields(Settings) if f.metadata["read"] == "secret"}
    rows: dict[str, str] = {}
    for first, _meaning, default in table_after("| variable | meaning | default |"):
        names = NAME.findall(first)
        variants = [n for n in names if n.endswith("_FILE") and n.removesuffix("_FILE") in secrets]
        primary = [name for name in names if name not in variants]
        assert len(primary) == 1, f"one setting per row, found {names}"
        assert all(name == f"{primary[0]}_FILE" for name in variants), names
        assert primary[0] not in rows, f"{primary[0]} is listed twice"
        rows[primary[0]] = default
    return rows


def default_is_shown(cell: str, default: Any) -> bool:
    if default is None or default == ():
        return cell.startswith(("none", "unset"))
    if isinstance(default, Path):
        return "system temp dir" in cell
    return f"`{show_default(default)}`" in cell


def test_settings_table_is_exactly_the_declared_settings() -> None:
    """Every declared variable has a row and every row names a declared variable."""
    declared = [variable for variable, _, _ in documented()]
    assert sorted(settings_rows()) == sorted(declared)


def test_settings_table_shows_the_defaults_of_the_code() -> None:
    """Each row's default is the code's default (as `serve --help-settings` prints it)."""
    rows = settings_rows()
    wrong = {
        variable: (rows[variable], show_default(default))
        for variable, _, default in documented()
        if not default_is_shown(rows[variable], default)
    }
    assert not wrong, wrong


def error_classes() -> dict[tuple[int, int, str], list[type[errors.GatewayError]]]:
    """(status, code, reason) → the GatewayError classes (subclasses included) answering it."""
    found: dict[tuple[int, int, str], list[type[errors.GatewayError]]] = {}
    pending: list[type[errors.GatewayError]] = [errors.GatewayError]
    while pending:
        cls = pending.pop()
        found.setdefault((cls.status, cls.code, cls.reason), []).append(cls)
        pending.extend(cls.__subclasses__())
    return found


def error_rows() -> set[tuple[int, int, str]]:
    rows = set()
    for status, code, reason, _meaning in table_after(
        "| HTTP | code | `X-Gateway-Error` | meaning |"
    ):
        rows.add((int(status), int(code), reason.strip("`")))
    return rows


def test_error_table_is_exactly_the_error_classes() -> None:
    """Every row is a GatewayError class with that status, code and reason, and every class
    (whatever module defines it) is a row."""
    assert error_rows() == set(error_classes())


def test_every_error_class_is_raised_somewhere() -> None:
    """Each documented error is instantiated (raised or returned) by gateway code: none is
    documented that the gateway never gives."""
    sources = [
        line
        for path in (ROOT / "gateway").rglob("*.py")
        for line in path.read_text(encoding="utf-8").splitlines()
        if not line.lstrip().startswith("class ")
    ]
    never = [
        [cls.__name__ for cls in classes]
        for classes in error_classes().values()
        if not any(re.search(rf"\b{cls.__name__}\(", line) for cls in classes for line in sources)
    ]
    assert not never, f"never instantiated in gateway/: {never}"


def test_every_error_code_is_exercised_by_a_test() -> None:
    """Each documented code appears in a test that provokes it (this file and the OpenAPI
    table comparison do not count)."""
    skip = {"test_docs.py", "test_openapi.py"}
    texts = [p.read_text(encoding="utf-8") for p in (ROOT / "tests").glob("test_*.py")
             if p.name not in skip]  # fmt: skip
    untested = [code for _, code, _ in error_rows()
                if not any(re.search(rf"\b{code}\b", text) for text in texts)]  # fmt: skip
    assert not untested, f"codes no test provokes: {sorted(untested)}"
