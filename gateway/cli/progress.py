"""How `clearout-gateway bulk` shows a list's progress: a bar for people, lines for logs.

On a terminal, a rich progress bar (the list's short id, its state, the
percentage and the time it has run); anywhere else (a pipe, a CI log, a
cron mail), one plain line per change, `list 6b0f3a1c… running 40%`, so the
output reads the same in a file as it did live.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Protocol, TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn


def short_id(list_id: str) -> str:
    return list_id if len(list_id) <= 8 else f"{list_id[:8]}…"


class ListView(Protocol):
    def say(self, line: str) -> None: ...
    def update(self, list_id: str, state: str, percentage: int) -> None: ...
    def __enter__(self) -> ListView: ...
    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class PlainView:
    """One line per change of state or percentage."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._last: tuple[str, int] | None = None

    def say(self, line: str) -> None:
        print(line, file=self._out, flush=True)

    def update(self, list_id: str, state: str, percentage: int) -> None:
        if self._last != (state, percentage):
            self._last = (state, percentage)
            self.say(f"list {short_id(list_id)} {state} {percentage}%")

    def __enter__(self) -> PlainView:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None


class BarView:
    """A live progress bar, left on screen at its last state when the list ends."""

    def __init__(self, out: TextIO) -> None:
        self._console = Console(file=out)
        self._progress = Progress(
            TextColumn("list [bold]{task.fields[short]}"), BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"), TextColumn("{task.fields[state]}"),
            TimeElapsedColumn(), console=self._console,
        )  # fmt: skip
        self._task: TaskID | None = None

    def say(self, line: str) -> None:
        self._console.print(line, highlight=False, markup=False)

    def update(self, list_id: str, state: str, percentage: int) -> None:
        if self._task is None:
            self._task = self._progress.add_task("list", total=100, short=short_id(list_id),
                                                 state=state)  # fmt: skip
        self._progress.update(self._task, completed=percentage, state=state)

    def __enter__(self) -> BarView:
        self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()


def view_for(out: TextIO | None = None) -> ListView:
    """A bar when `out` (stdout by default) is a terminal, plain lines otherwise."""
    stream = out or sys.stdout
    return BarView(stream) if stream.isatty() else PlainView(stream)
