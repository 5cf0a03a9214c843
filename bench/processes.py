"""The child processes of a benchmark script: free ports, waiting for a listener, pinning.

Shared by bench_bulk.py, soak.py and hostile.py.  Servers go on CPU 0 and
the script's own side (client, in-process upstream) and Redis on CPU 1, as in
bench_cache.py, when `taskset` and two CPUs exist: the scheduler then does
not move them around mid-run, and the gateway's figures are its own core's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PIN = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
# setpriv makes a child die with the script even when it is SIGKILLed, which
# no finally clause can cover.
DEATHSIG = ["setpriv", "--pdeathsig", "TERM"] if shutil.which("setpriv") else []
STOP_SECONDS = 15


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        await asyncio.sleep(0.05)
    raise SystemExit(f"nothing listening on port {port} after {timeout:.0f} s")


class Children:
    """Every process the script started, so one place can stop them all."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, cmd: list[str], cpu: int, **kwargs: Any) -> subprocess.Popen[bytes]:
        # Plain Popen from async code is fine: it returns once exec has happened;
        # all waiting on children is done with polls and asyncio.sleep.
        pinned = ["taskset", "-c", str(cpu)] if PIN else []
        kwargs.setdefault("stdout", subprocess.DEVNULL)
        kwargs.setdefault("stderr", subprocess.DEVNULL)
        # A session of their own: Ctrl-C reaches only the script, which then
        # stops the children in order instead of racing them.
        proc = subprocess.Popen([*DEATHSIG, *pinned, *cmd], cwd=ROOT, start_new_session=True,
                                **kwargs)  # fmt: skip
        self.procs.append(proc)
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen[bytes]) -> int | None:
        """SIGTERM, then SIGKILL after STOP_SECONDS; the exit status (None if killed)."""
        if proc.poll() is None:
            proc.terminate()
        try:
            return proc.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return None

    def stop_all(self) -> None:
        # All told first, then waited for: they stop side by side, not one by one.
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            self.stop(proc)
