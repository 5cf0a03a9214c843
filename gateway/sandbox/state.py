"""What the sandbox remembers between calls: its settings, credits, queued lookups and lists.

`SandboxState` is the one mutable thing every route family of the sandbox shares (the
credits it charges, the lookups parked in a queue, the bulk lists it holds, the calls it
counted, for tests to read back), together with the clock a bulk list runs on: `running`
with a growing percentage for `bulk_seconds`, then `completed`, when its rows are charged,
or `cancelled` part way, when only the rows answered so far are.
"""

from __future__ import annotations

import secrets
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.sandbox.bulk_list import BulkList
from gateway.sandbox.people import Outcome


@dataclass
class SandboxConfig:
    token: str
    credits: int = 1_000_000
    queue_seconds: float = 5.0
    slow_seconds: float = 2.0
    bulk_seconds: float = 3.0
    latency: float = 0.0
    rate_limit_per_minute: int | None = None
    max_running_lists: int = 5
    spool_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))


@dataclass
class QueuedLookup:
    outcome: Outcome
    ready_at: float
    charged: bool = False


def object_id() -> str:
    # Clearout's ids are 24-hex MongoDB ObjectIds: 4-byte time + 8 random bytes.
    return f"{int(time.time()):08x}" + secrets.token_hex(8)


FAIL_AT = 50  # where a failing list stops, in percent


class SandboxState:
    """Credits, queued lookups, bulk lists and call counts, and the clock lists run on."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.credits = config.credits
        self.queues: dict[str, QueuedLookup] = {}
        self.lists: dict[str, BulkList] = {}
        self.calls: dict[str, int] = {}
        self.instant_times: list[float] = []  # monotonic time of each instant call

    def percentage(self, item: BulkList) -> int:
        if item.state in ("cancelled", "failed"):
            return item.progress_at_cancel
        elapsed = time.monotonic() - item.created
        duration = max(self.config.bulk_seconds, 1e-9)
        return min(100, int(100 * elapsed / duration))

    def state_of(self, item: BulkList) -> str:
        """The list's state now; a running list whose time is up completes, and is charged."""
        if item.state == "running" and item.fails and self.percentage(item) >= FAIL_AT:
            item.progress_at_cancel, item.state = FAIL_AT, "failed"
            item.finished_at = datetime.now(UTC)
            self._charge(item)
        if item.state == "running" and self.percentage(item) >= 100:
            item.state = "completed"
            item.finished_at = item.created_at + timedelta(seconds=self.config.bulk_seconds)
            self._charge(item)
        return item.state

    def cancel(self, item: BulkList) -> None:
        """Stop a running list where its clock is; the rows answered so far are charged."""
        item.progress_at_cancel = self.percentage(item)
        item.state = "cancelled"
        item.finished_at = datetime.now(UTC)
        self._charge(item)

    def _charge(self, item: BulkList) -> None:
        self.credits -= sum(outcome.credits for _, outcome in item.answers())
