"""`clearout-gateway serve --help-settings`: every setting, its default and its meaning.

Rendered from `gateway.settings.documented()`, the same declarations the
server reads its environment with, so the list cannot miss or misname one.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.settings import documented


def show_default(value: Any) -> str:
    if value is None or value == ():
        return "unset"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, Path):
        return f"{value} (the system temp dir)" if str(value) else "."
    return str(value)


def render() -> str:
    lines = [
        "Every setting is an environment variable (a secret can also be read from the file",
        "named by <VARIABLE>_FILE). `--host` and `--port` override GATEWAY_HOST and GATEWAY_PORT.",
        "",
    ]
    for variable, meaning, default in documented():
        lines.append(f"{variable}  (default: {show_default(default)})")
        lines.append(f"    {meaning}")
    return "\n".join(lines)


class HelpSettings(argparse.Action):
    """Print the settings and exit, like --help."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
        values: str | Sequence[Any] | None, option_string: str | None = None,
    ) -> None:  # fmt: skip
        print(render())
        parser.exit()
