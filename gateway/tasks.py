"""Background work of one app: periodic loops and one-shot jobs, stopped together at shutdown.

The pollers (queued lookups, pending lists, the credit balance, the teams
file), the log flusher, the single-flight listener and jobs a request hands
off (a list settlement, sharing an upstream block) all run as tasks started
here.  A round of a periodic loop that fails with an unexpected error is
logged with its traceback and the loop goes on at its interval; a one-shot
job's failure is logged once.  `aclose` cancels everything and waits (with
a bound) so shutdown never hangs on a task stuck in I/O.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog

log = structlog.get_logger("gateway.tasks")

Work = Callable[[], Awaitable[object]]


class Tasks:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def every(self, seconds: float, name: str, work: Work, *, first_after: float = 0.0) -> None:
        """Run `work` now (or after `first_after`) and then every `seconds`; 0 means never."""
        if seconds > 0:
            self.spawn(self._loop(seconds, name, work, first_after), name)

    def spawn(self, job: Coroutine[Any, Any, object], name: str | None = None) -> asyncio.Task[Any]:
        """Run `job` in the background; it is cancelled at shutdown if still running."""
        if self._closed:
            job.close()
            raise RuntimeError("the app is shutting down")
        task = asyncio.get_running_loop().create_task(self._logged(job, name), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def aclose(self, timeout: float = 3.0) -> None:
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            # Bounded: a task cancelled mid-I/O (a pub/sub read, say) can take
            # its time to unwind, and shutdown must not wait on it for good.
            await asyncio.wait(tasks, timeout=timeout)

    @staticmethod
    async def _logged(job: Coroutine[Any, Any, object], name: str | None) -> object:
        try:
            return await job
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background_job_failed", task=name)
            return None

    @staticmethod
    async def _loop(seconds: float, name: str, work: Work, first_after: float) -> None:
        if first_after:
            await asyncio.sleep(first_after)
        while True:
            try:
                await work()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background_round_failed", task=name)
            raise_if_cancelled()
            await asyncio.sleep(seconds)


def raise_if_cancelled() -> None:
    """Re-raise a cancellation of the current task that a library lost.

    redis-py turns its read timeout into a plain answer (None, or its own
    TimeoutError) even when this task was cancelled at the same moment, so a
    loop around Redis reads can miss its cancel and run on after shutdown
    (seen as a test run hanging at event-loop close).  The request stays
    counted on the task (`cancelling()`); loops look at it each round.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
