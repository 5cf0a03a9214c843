"""Background tasks stop at shutdown, even when a library swallows their cancellation.

redis-py answers None (or raises its own TimeoutError) when its read timeout
and a cancel of the reading task land together; the cancel is then lost to
the loop around the read, which ran on after the app closed and hung the
test run at event-loop close (the single-flight listener, once in ~25 runs).
"""

from __future__ import annotations

import asyncio

from gateway.tasks import Tasks, raise_if_cancelled


async def swallowing_read() -> None:
    """A read that, like redis-py's at its timeout, turns a cancel into a plain answer."""
    try:
        await asyncio.sleep(0.01)
    except asyncio.CancelledError:
        return


async def test_a_periodic_loop_stops_though_its_work_swallowed_the_cancel() -> None:
    tasks = Tasks()
    rounds = 0

    async def work() -> None:
        nonlocal rounds
        rounds += 1
        await swallowing_read()

    tasks.every(0.001, "poller", work)
    await asyncio.sleep(0.05)
    (task,) = asyncio.all_tasks() - {asyncio.current_task()}
    await tasks.aclose(timeout=1.0)
    assert task.done(), "the loop ran on after shutdown"
    assert rounds > 1


async def test_a_read_loop_that_looks_stops_at_its_next_round() -> None:
    async def listen() -> None:
        while True:
            await swallowing_read()
            raise_if_cancelled()

    task = asyncio.create_task(listen())
    await asyncio.sleep(0.03)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=1.0)
    assert done == {task} and task.cancelled()
