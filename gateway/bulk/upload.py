"""A bulk upload as the gateway holds it: a spooled file with a safe name, and its form fields."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class Upload:
    filename: str  # already reduced to a safe ASCII name by the HTTP layer
    content_type: str
    path: Path
    size: int
    ignore_duplicate_file: str | None

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
