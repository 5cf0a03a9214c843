"""Soak run: the gateway under mixed traffic for a while, with Redis and upstream faults mid-run.

    .venv/bin/python bench/soak.py [--duration 60] [--fault-at 25] [--fault-seconds 10]
                                   [--concurrency 16] [--rate 1000] [--json] [--keep-log F]

`--json` prints the report as JSON instead of text; `--keep-log F` keeps a copy
of the gateway's log (the temp dir holding it is removed at the end).  Progress
goes to stderr, the report to stdout.

What runs, all on 127.0.0.1 (needs `redis-server` on PATH):

- a private redis-server on a free port (never 6379), no persistence;
- the upstream: the built-in sandbox app (`gateway.sandbox`), served by this
  script behind a switch, so it can fail on cue;
- the gateway as a real process (`python -m gateway serve`), JSON log to a file
  in the temp dir, two teams (one unlimited, one with a large credit quota and
  request rate, so the quota and rate paths run too).

Traffic, `--concurrency` aiohttp workers paced to `--rate` requests/s in total
(0: as fast as they can; a worker that falls behind catches up by at most 1 s
of requests) for `--duration` seconds, each request one of: `hit`
(one of 200 people asked during warm-up, again and again), `miss` (a new person
every time), `bad_json` / `bad_name` (a 400 is the right answer),
`queue_status` / `progress_status` (bogus ids: the gateway answers "unknown id"
without an upstream call).  Every request is recorded: start, latency, status
or exception, kind and the gateway's `X-Cache`.  Lookups ask `timeout: 10000`
(the gateway then waits up to 15 s upstream); a request with no answer in 16 s
counts as a timeout.  Slow clients run beside it (not counted as
requests): `slow_body` (headers, then one body byte a second), `slow_headers`
(one header byte a second), `idle` (connects, sends nothing); one wave at the
start and one after the fault, each watched for up to `--slow-watch` seconds
(default 40, long enough to see a 30 s keep-alive close; watching may run up
to 10 s past the traffic).

The fault, at `--fault-at` for `--fault-seconds`: Redis is stopped, restarted
2 s later on the same port (empty: the warm set is gone, so `hit` requests miss
again until re-cached); the upstream answers 503 with an empty body for the
first half of the window and refuses connections (port closed, open
connections dropped) for the second half, then comes back.

Reading the report:

- **error** = connection failure, timeout, or any 5xx.  4xx answers are not errors.
- **outside the fault window** = requests that *started* before the fault or
  more than the recovery allowance (breaker open time 2 s + 1 s) after it ended.
  The target is an error rate under 1 % there (printed PASS/FAIL; the script
  does not fail on it).  Requests already in flight when the fault starts count
  as outside: at most `--concurrency` of them.
- **inside the window** is informational: a well-behaved gateway answers there
  with *fast* 503s (under 0.5 s) rather than slow ones or timeouts.
- latency percentiles are for requests outside the window, measured by this
  client (so they include its own scheduling; compare runs, not absolutes).
- RSS is the gateway's `VmRSS` after warm-up, just before the fault and at the
  end; peak is `VmHWM` (includes start-up).
- slow clients: whether the gateway closed each connection, after how long,
  and the first line it sent (e.g. a 408) if any.
- gateway: its exit on SIGTERM, warnings and errors in its log by event, and
  the 5xx its own access log recorded (these include answers to clients that
  had already gone, such as the slow clients, which this client never saw).

Bounded: at most `--max-requests` requests (default 200 000) and a hard wall
time of duration + 30 s, after which the run is abandoned (exit 3).  Every
child process and the temp dir are removed on exit, Ctrl-C or error.  Exit
status 0 whenever the run completed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from hashlib import sha256
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import aiohttp
from aiohttp import web
from processes import PIN, Children, free_port, wait_port

from gateway.sandbox.server import Sandbox, SandboxConfig

TOKEN = "soak-upstream-token"  # noqa: S105 - the private sandbox's token, not a secret
# team name -> key; the first is unlimited, the second has (generous) limits.
TEAMS = {"soak-open": "soak-open-key", "soak-metered": "soak-metered-key"}
WARM_PEOPLE = 200
LOOKUP_TIMEOUT_MS = 10_000  # the smallest Clearout allows: the gateway waits this + 5 s
# Longer than the gateway's own wait for such a lookup (10 s + its 5 s margin),
# so what is seen is the gateway's answer, not this client giving up first.
CLIENT_TIMEOUT = 16.0
WALL_SLACK = 30.0
MAX_REQUESTS = 200_000  # the hard cap; --max-requests may only lower it
REDIS_DOWN_SECONDS = 2.0
BREAKER_OPEN_SECONDS = 2.0
RECOVERY_ALLOWANCE = BREAKER_OPEN_SECONDS + 1.0
FAST_SECONDS = 0.5
TARGET_ERROR_RATE = 0.01

KINDS = ("hit", "miss", "bad_json", "bad_name", "queue_status", "progress_status")
WEIGHTS = (55, 25, 5, 5, 5, 5)
SLOW_KINDS = ("slow_body", "slow_headers", "idle")
SLOW_PER_KIND = 2
SLOW_OVERTIME = 10.0

# Settings that exist today plus the hardening ones landing in parallel; the
# gateway ignores variables it does not know, so passing them all is safe.
GATEWAY_TUNING = {
    "GATEWAY_LOG_FORMAT": "json",
    "GATEWAY_QUEUE_POLL_SECONDS": "0",
    "GATEWAY_CREDITS_POLL_SECONDS": "0",
    "GATEWAY_DRAIN_DELAY_SECONDS": "0",
    "GATEWAY_SHUTDOWN_GRACE_SECONDS": "5",
    "GATEWAY_BREAKER_FAILURES": "5",
    "GATEWAY_BREAKER_OPEN_SECONDS": str(BREAKER_OPEN_SECONDS),
    "GATEWAY_HEADER_TIMEOUT_SECONDS": "5",
    "GATEWAY_BODY_TIMEOUT_SECONDS": "5",
    "GATEWAY_KEEPALIVE_TIMEOUT_SECONDS": "30",
}


class WallClockExceeded(BaseException):
    """The hard wall-time cap fired (a BaseException so asyncio does not swallow it)."""


STARTED = time.monotonic()


def say(message: str) -> None:
    print(f"soak [{time.monotonic() - STARTED:5.1f} s]: {message}", file=sys.stderr, flush=True)


class Redis:
    """A private redis-server that can be stopped and started again on its port."""

    def __init__(self, children: Children, workdir: Path) -> None:
        self.children = children
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", str(self.workdir)]  # fmt: skip
        self.proc = self.children.spawn(cmd, cpu=1)
        await wait_port(self.port)

    async def stop(self) -> None:
        assert self.proc is not None
        self.proc.terminate()
        deadline = time.monotonic() + 10
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.proc.kill()
            await asyncio.sleep(0.05)
        self.proc = None


@dataclass
class Gateway:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def write_teams(path: Path) -> None:
    open_team, metered = TEAMS
    lines = [
        "teams:",
        f"  - name: {open_team}",
        f"    key_sha256: [{sha256(TEAMS[open_team].encode()).hexdigest()}]",
        f"  - name: {metered}",
        f"    key_sha256: [{sha256(TEAMS[metered].encode()).hexdigest()}]",
        "    quota:",
        "      credits_per_day: 1000000000",
        "      requests_per_second: 100000",
    ]
    path.write_text("\n".join(lines) + "\n")


def start_gateway(children: Children, work: Path, redis_port: int, upstream_port: int) -> Gateway:
    teams = work / "teams.yaml"
    write_teams(teams)
    port = free_port()
    # The caller's own GATEWAY_*/CLEAROUT_* variables must not leak into the run.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "CLEAROUT_"))}
    env.update(GATEWAY_TUNING)
    env.update({
        "CLEAROUT_API_TOKEN": TOKEN,
        "GATEWAY_UPSTREAM_URL": f"http://127.0.0.1:{upstream_port}/v2",
        "GATEWAY_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "GATEWAY_TEAMS_FILE": str(teams),
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(port),
    })  # fmt: skip
    log = work / "gateway.log"
    with log.open("wb") as out:
        proc = children.spawn([sys.executable, "-m", "gateway", "serve"], cpu=0, env=env,
                              stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    return Gateway(proc, port, log)


def memory_mib(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a process, in MiB (empty when it is gone)."""
    found: dict[str, float] = {}
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return found
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = round(int(value.split()[0]) / 1024, 1)
    return found


def stop_gateway(gateway: Gateway) -> dict[str, Any]:
    """SIGTERM the gateway and time its shutdown (drain delay is 0 in this run)."""
    if gateway.proc.poll() is not None:
        return {"alive_at_end": False, "exit_code": gateway.proc.returncode, "stop_seconds": None}
    started = time.monotonic()
    gateway.proc.terminate()
    try:
        code: int | None = gateway.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        gateway.proc.kill()
        gateway.proc.wait()
        code = None  # did not stop on its own
    return {"alive_at_end": True, "exit_code": code,
            "stop_seconds": round(time.monotonic() - started, 2)}  # fmt: skip


# ---- the upstream ------------------------------------------------------------


class FlakyUpstream:
    """The sandbox app behind a switch: `ok`, `503` (empty body) or `refuse` (port closed)."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.app = sandbox.make_app()
        # Before auth and everything else, so a failing upstream costs nothing.
        self.app.middlewares.insert(0, self._switch)
        self.runner = web.AppRunner(self.app, access_log=None)
        self.port = free_port()
        self.mode = "ok"
        self.site: web.TCPSite | None = None

    async def start(self) -> None:
        await self.runner.setup()
        await self._listen()

    async def close(self) -> None:
        await self.runner.cleanup()

    async def _listen(self) -> None:
        # The freed port may be briefly taken by an outgoing connection's
        # ephemeral port; retry rather than fail the run.
        for _ in range(100):
            site = web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True)
            try:
                await site.start()
            except OSError:
                await asyncio.sleep(0.05)
                continue
            self.site = site
            return
        raise SystemExit(f"upstream could not listen on {self.port} again")

    async def set_mode(self, mode: str) -> None:
        if mode == "refuse" and self.site is not None:
            await self.site.stop()
            self.site = None
            # Closing the listener leaves pooled keep-alive connections alive;
            # drop them too, or the gateway would not notice the outage.
            for handler in self.runner.server.connections if self.runner.server else ():
                handler.force_close()
        elif mode != "refuse" and self.site is None:
            await self._listen()
        self.mode = mode

    @web.middleware
    async def _switch(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        if self.mode == "503":
            return web.Response(status=503)
        if self.mode == "refuse" and request.transport is not None:
            request.transport.abort()  # a connection that slipped in as the port closed
            raise web.HTTPServiceUnavailable()
        response: web.StreamResponse = await handler(request)
        return response


# ---- traffic -----------------------------------------------------------------


@dataclass(slots=True)
class Sample:
    start: float  # seconds since traffic start
    latency: float  # seconds
    kind: str
    status: int | None  # None: no answer came back
    error: str | None  # exception name, "timeout", or "abandoned" (cut off at the end)
    cache: str | None  # X-Cache
    reason: str | None  # X-Gateway-Error: the gateway's own refusals, e.g. upstream_timeout

    @property
    def failed(self) -> bool:
        return self.status is None or self.status >= 500

    @property
    def label(self) -> str:
        """`503` for a relayed upstream 503, `503/upstream_timeout` for the gateway's own."""
        if self.status is None:
            return str(self.error)
        return f"{self.status}/{self.reason}" if self.reason else str(self.status)


def letters(i: int) -> str:
    """`i` in base 26 as letters: the sandbox refuses digits in names (code 1088)."""
    out = ""
    while True:
        i, digit = divmod(i, 26)
        out = chr(97 + digit) + out
        if i == 0:
            return out.capitalize()


def person(name: str, domain: str) -> bytes:
    return json.dumps({"name": name, "domain": domain, "timeout": LOOKUP_TIMEOUT_MS}).encode()


def warm_person(i: int) -> bytes:
    return person(f"Warm {letters(i)}", "warmcorp.example.com")


class Traffic:
    """Paced workers sending the mix of request kinds; every request becomes a Sample."""

    def __init__(self, args: argparse.Namespace, base: str, t0: float) -> None:
        self.base = base
        self.t0 = t0
        self.end = t0 + args.duration
        self.interval = 1 / args.rate if args.rate > 0 else 0.0
        self.max_requests: int = args.max_requests
        self.rng = random.Random(args.seed)
        self.samples: list[Sample] = []
        self.issued = 0
        self.misses = 0
        self.next_at = t0
        self.elapsed = 0.0

    def _slot(self) -> float | None:
        """When the next request may start, or None when the run is over."""
        now = time.monotonic()
        if self.issued >= self.max_requests or now >= self.end:
            return None
        # A worker that fell behind catches up by at most one second's worth,
        # so a stall is not followed by a burst far above the rate.
        self.next_at = max(self.next_at + self.interval, now - 1.0)
        if self.next_at >= self.end:
            return None
        self.issued += 1
        return self.next_at

    def _build(self, kind: str) -> tuple[str, str, bytes | None]:
        path = "/v2/email_finder/instant"
        if kind == "hit":
            return "POST", path, warm_person(self.rng.randrange(WARM_PEOPLE))
        if kind == "miss":
            self.misses += 1
            return "POST", path, person(f"Fresh {letters(self.misses)}", "newcorp.example.com")
        if kind == "bad_json":
            return "POST", path, b'{"name": "Broken Json", "domain": '
        if kind == "bad_name":
            return "POST", path, person("", "example.com")
        bogus = f"{self.rng.getrandbits(96):024x}"  # shaped like Clearout's ids
        if kind == "queue_status":
            return "GET", f"{path}/queue_status?qid={bogus}", None
        return "GET", f"/v2/email_finder/bulk/progress_status?list_id={bogus}", None

    async def _one(self, session: aiohttp.ClientSession) -> None:
        kind = self.rng.choices(KINDS, WEIGHTS)[0]
        method, path, body = self._build(kind)
        headers = {"Authorization": self.rng.choice(list(TEAMS.values()))}
        if body is not None:
            headers["Content-Type"] = "application/json"
        started = time.monotonic()
        status: int | None = None
        cache: str | None = None
        reason: str | None = None
        error: str | None = None
        try:
            async with session.request(method, self.base + path, data=body,
                                       headers=headers) as resp:  # fmt: skip
                await resp.read()
                status, cache = resp.status, resp.headers.get("X-Cache")
                reason = resp.headers.get("X-Gateway-Error")
        except TimeoutError:
            error = "timeout"
        except (aiohttp.ClientError, OSError) as exc:
            error = type(exc).__name__
        except asyncio.CancelledError:
            error = "abandoned"
            raise
        finally:
            self.samples.append(Sample(started - self.t0, time.monotonic() - started, kind,
                                       status, error, cache, reason))  # fmt: skip

    async def worker(self, session: aiohttp.ClientSession) -> None:
        while (slot := self._slot()) is not None:
            await asyncio.sleep(max(0.0, slot - time.monotonic()))
            await self._one(session)

    async def run(self, session: aiohttp.ClientSession, concurrency: int) -> None:
        workers = [asyncio.create_task(self.worker(session)) for _ in range(concurrency)]
        try:
            # Stop issuing at the end; what is still in flight gets its timeout, then is cut.
            await asyncio.wait(workers, timeout=self.end - time.monotonic() + CLIENT_TIMEOUT + 2)
        finally:
            # Also on Ctrl-C: asyncio.wait leaves its tasks running when cancelled,
            # and they would outlive the session.
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        self.elapsed = time.monotonic() - self.t0


async def warm_up(session: aiohttp.ClientSession, base: str, concurrency: int) -> None:
    """Wait for /readyz, then ask each warm person once so later asks are hits."""
    deadline = time.monotonic() + 20
    while True:
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(f"{base}/readyz") as resp:
                if resp.status == 200:
                    break
        if time.monotonic() > deadline:
            raise SystemExit("gateway never became ready (see its log)")
        await asyncio.sleep(0.1)
    gate = asyncio.Semaphore(concurrency)
    key = next(iter(TEAMS.values()))

    async def ask(i: int) -> int:
        async with (
            gate,
            session.post(
                f"{base}/v2/email_finder/instant",
                data=warm_person(i),
                headers={"Authorization": key, "Content-Type": "application/json"},
            ) as resp,
        ):
            await resp.read()
            return resp.status

    statuses = Counter(await asyncio.gather(*(ask(i) for i in range(WARM_PEOPLE))))
    if statuses != Counter({200: WARM_PEOPLE}):
        raise SystemExit(f"warm-up failed: statuses {dict(statuses)}")


# ---- slow clients ------------------------------------------------------------


@dataclass
class SlowResult:
    kind: str
    wave: str
    opened_at: float  # seconds since traffic start
    closed_after: float | None  # None: still open when we stopped watching
    watched: float
    answer: str | None = None  # first line the gateway sent, if any
    note: str | None = None


def slow_request(kind: str) -> tuple[bytes, bytes]:
    """What a slow client sends at once, and what it then drips a byte a second."""
    key = TEAMS["soak-open"]
    if kind == "slow_body":
        head = ("POST /v2/email_finder/instant HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: {key}\r\nContent-Type: application/json\r\n"
                "Content-Length: 4096\r\n\r\n")  # fmt: skip
        return head.encode(), b" " * 4096
    if kind == "slow_headers":
        head = "POST /v2/email_finder/instant HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        return head.encode(), b"X-Slow: " + b"a" * 4096
    return b"", b""


async def drip(writer: asyncio.StreamWriter, head: bytes, tail: bytes) -> None:
    with contextlib.suppress(OSError):  # the gateway closing on us is the expected end
        if head:
            writer.write(head)
            await writer.drain()
        for i in range(len(tail)):
            await asyncio.sleep(1.0)
            writer.write(tail[i : i + 1])
            await writer.drain()


async def first_line_until_closed(reader: asyncio.StreamReader) -> str | None:
    """Read until the gateway closes; return the first line it sent, if any."""
    first: str | None = None
    with contextlib.suppress(OSError):
        while chunk := await reader.read(4096):
            if first is None:
                first = chunk.split(b"\r\n", 1)[0].decode(errors="replace")
    return first


async def slow_client(kind: str, wave: str, port: int, t0: float, watch: float) -> SlowResult:
    opened = time.monotonic()
    result = SlowResult(kind, wave, round(opened - t0, 2), None, round(watch, 1))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as exc:
        result.note = f"connect failed: {type(exc).__name__}"
        return result
    dripping = asyncio.create_task(drip(writer, *slow_request(kind)))
    try:
        result.answer = await asyncio.wait_for(first_line_until_closed(reader), watch)
        result.closed_after = round(time.monotonic() - opened, 2)
    except TimeoutError:
        pass  # still open: that is the finding
    finally:
        dripping.cancel()
        writer.close()
    return result


async def slow_wave(wave: str, port: int, t0: float, until: float, watch: float
                    ) -> list[SlowResult]:  # fmt: skip
    watch = min(watch, until - time.monotonic())
    if watch < 1:
        return []
    clients = [slow_client(kind, wave, port, t0, watch)
               for kind in SLOW_KINDS for _ in range(SLOW_PER_KIND)]  # fmt: skip
    return list(await asyncio.gather(*clients))


# ---- faults ------------------------------------------------------------------


@dataclass
class Timeline:
    t0: float
    events: list[tuple[float, str]] = field(default_factory=list)
    fault_start: float | None = None
    fault_end: float | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def note(self, what: str) -> float:
        at = round(time.monotonic() - self.t0, 2)
        self.events.append((at, what))
        say(f"+{at:.1f} s {what}")
        return at


async def restart_redis(redis: Redis, timeline: Timeline) -> None:
    await redis.stop()
    timeline.note("redis stopped")
    await asyncio.sleep(REDIS_DOWN_SECONDS)
    await redis.start()
    timeline.note("redis started again (empty)")


async def fail_upstream(upstream: FlakyUpstream, seconds: float, timeline: Timeline) -> None:
    await upstream.set_mode("503")
    timeline.note("upstream answers 503")
    await asyncio.sleep(seconds / 2)
    await upstream.set_mode("refuse")
    timeline.note("upstream refuses connections")
    await asyncio.sleep(seconds / 2)
    await upstream.set_mode("ok")
    timeline.note("upstream back")


async def inject_faults(args: argparse.Namespace, timeline: Timeline, redis: Redis,
                        upstream: FlakyUpstream, before: Callable[[], None]) -> None:  # fmt: skip
    if args.fault_at >= args.duration:
        return  # no fault in this run
    await asyncio.sleep(max(0.0, timeline.t0 + args.fault_at - time.monotonic()))
    before()
    timeline.fault_start = timeline.note("fault starts")
    await asyncio.gather(restart_redis(redis, timeline),
                         fail_upstream(upstream, args.fault_seconds, timeline))  # fmt: skip
    timeline.fault_end = timeline.note("fault over")
    timeline.ended.set()


async def slow_clients(args: argparse.Namespace, port: int, timeline: Timeline
                       ) -> list[SlowResult]:  # fmt: skip
    t0 = timeline.t0
    # Watching may run a little past the traffic, so the after-fault wave
    # still sees timeouts of several seconds in a short run.
    until = t0 + args.duration + SLOW_OVERTIME

    async def after_fault() -> list[SlowResult]:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(timeline.ended.wait(), until - time.monotonic())
            await asyncio.sleep(RECOVERY_ALLOWANCE)
            return await slow_wave("after fault", port, t0, until, args.slow_watch)
        return []

    await asyncio.sleep(0.5)
    waves = await asyncio.gather(slow_wave("start", port, t0, until, args.slow_watch),
                                 after_fault())  # fmt: skip
    return [r for wave in waves for r in wave]


# ---- the run -----------------------------------------------------------------


@dataclass
class RunData:
    samples: list[Sample]
    timeline: Timeline
    slow: list[SlowResult]
    rss: dict[str, float | None]
    elapsed: float  # of the traffic, from its start until the last request ended
    upstream_calls: int


async def drive(args: argparse.Namespace, gateway: Gateway, redis: Redis,
                upstream: FlakyUpstream, sandbox: Sandbox) -> RunData:  # fmt: skip
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await warm_up(session, gateway.url, args.concurrency)
        say(f"warm: {WARM_PEOPLE} people cached; traffic for {args.duration:.0f} s")
        pid = gateway.proc.pid
        rss: dict[str, float | None] = {"start": memory_mib(pid).get("VmRSS")}
        t0 = time.monotonic()
        timeline = Timeline(t0)
        traffic = Traffic(args, gateway.url, t0)

        def sample_middle() -> None:
            rss["middle"] = memory_mib(pid).get("VmRSS")

        _, _, slow = await asyncio.gather(
            traffic.run(session, args.concurrency),
            inject_faults(args, timeline, redis, upstream, sample_middle),
            slow_clients(args, gateway.port, timeline),
        )
    end = memory_mib(pid)
    rss.update(end=end.get("VmRSS"), peak=end.get("VmHWM"))
    calls = sandbox.calls_to("instant")
    return RunData(traffic.samples, timeline, slow, rss, traffic.elapsed, calls)


async def soak(args: argparse.Namespace, work: Path, children: Children) -> tuple[RunData, Gateway]:
    redis = Redis(children, work)
    await redis.start()
    # Credits enough that the sandbox never answers 402 however long the run.
    sandbox = Sandbox(SandboxConfig(token=TOKEN, credits=10**12))
    upstream = FlakyUpstream(sandbox)
    await upstream.start()
    try:
        gateway = start_gateway(children, work, redis.port, upstream.port)
        await wait_port(gateway.port)
        say(f"redis :{redis.port}, upstream :{upstream.port}, gateway :{gateway.port} "
            f"(pid {gateway.proc.pid}, log {gateway.log})")  # fmt: skip
        return await drive(args, gateway, redis, upstream, sandbox), gateway
    finally:
        await upstream.close()


# ---- the report --------------------------------------------------------------


def percentiles(latencies: Iterable[float]) -> dict[str, float | int]:
    ordered = sorted(latencies)
    if not ordered:
        return {"n": 0}
    out: dict[str, float | int] = {"n": len(ordered)}
    for p in (50, 95, 99):
        rank = max(0, math.ceil(p / 100 * len(ordered)) - 1)  # nearest rank
        out[f"p{p}_ms"] = round(ordered[rank] * 1000, 2)
    return out


def window_of(timeline: Timeline) -> tuple[float, float] | None:
    if timeline.fault_start is None or timeline.fault_end is None:
        return None
    return timeline.fault_start, timeline.fault_end + RECOVERY_ALLOWANCE


def by_kind(samples: list[Sample]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for kind in KINDS:
        mine = [s for s in samples if s.kind == kind]
        statuses = Counter(s.label for s in mine)
        caches = Counter(s.cache for s in mine if s.cache)
        table[kind] = {"total": len(mine), "statuses": dict(statuses.most_common()),
                       "x_cache": dict(caches.most_common())}  # fmt: skip
    return table


def error_rate(samples: list[Sample]) -> dict[str, Any]:
    errors = [s for s in samples if s.failed]
    rate = len(errors) / len(samples) if samples else 0.0
    return {"requests": len(samples), "errors": len(errors), "error_rate": round(rate, 5),
            "error_kinds": dict(Counter(s.label for s in errors).most_common())}  # fmt: skip


def outside_report(samples: list[Sample], window: tuple[float, float] | None) -> dict[str, Any]:
    report = error_rate(samples)
    if window is not None:
        # Counted as outside by definition, but these were caught by the fault.
        report["errors_in_flight_at_fault_start"] = sum(
            s.failed and s.start < window[0] <= s.start + s.latency for s in samples
        )
        report["errors_after_window"] = sum(s.failed and s.start > window[1] for s in samples)
    report["first_errors"] = [
        {"t": round(s.start, 2), "kind": s.kind, "result": s.label,
         "latency_ms": round(s.latency * 1000, 1)}
        for s in samples if s.failed
    ][:10]  # fmt: skip
    report["latency"] = {"all": percentiles(s.latency for s in samples)}
    for kind in KINDS:
        report["latency"][kind] = percentiles(s.latency for s in samples if s.kind == kind)
    return report


def inside_report(inside: list[Sample], everything: list[Sample], fault_end: float
                  ) -> dict[str, Any]:  # fmt: skip
    report = error_rate(inside)
    errors = [s for s in inside if s.failed]
    fast = [s for s in errors if s.status == 503 and s.latency < FAST_SECONDS]
    report["fast_503"] = len(fast)
    report["slow_or_other"] = len(errors) - len(fast)
    report["max_error_latency_ms"] = round(max((s.latency for s in errors), default=0) * 1000, 1)
    spans: dict[str, list[float]] = {}
    for s in errors:  # when each kind of failure was seen: how long each phase lasted
        span = spans.setdefault(s.label, [s.start, s.start])
        span[0], span[1] = min(span[0], s.start), max(span[1], s.start)
    report["error_spans"] = {k: [round(a, 1), round(b, 1)] for k, (a, b) in spans.items()}
    # How long recovery took: the latest failed request started after the fault,
    # inside the allowance or beyond it.
    late = [s.start - fault_end for s in everything if s.failed and s.start >= fault_end]
    report["last_error_after_fault_end_s"] = round(max(late), 2) if late else None
    return report


def slow_report(results: list[SlowResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in sorted(results, key=lambda r: (r.wave != "start", r.kind))]


def log_report(path: Path) -> dict[str, Any]:
    """Line count, lines that are not JSON (tracebacks), warnings and errors by event, and
    the 5xx the gateway logged (it also logs answers to clients that had gone away)."""
    lines = non_json = 0
    noisy: Counter[str] = Counter()
    server_errors: Counter[str] = Counter()
    with path.open(errors="replace") as log:
        for line in log:
            lines += 1
            try:
                entry = json.loads(line)
            except ValueError:
                non_json += 1
                continue
            if not isinstance(entry, dict):
                continue
            if entry.get("level") in ("warning", "error", "critical"):
                noisy[f"{entry.get('level')}: {entry.get('event')}"] += 1
            status = entry.get("status")
            if entry.get("event") == "request" and isinstance(status, int) and status >= 500:
                server_errors[str(status)] += 1
    return {"lines": lines, "non_json_lines": non_json,
            "warnings_and_errors": dict(noisy.most_common(8)),
            "access_log_5xx": dict(server_errors.most_common())}  # fmt: skip


def build_report(args: argparse.Namespace, run: RunData, gateway: dict[str, Any]
                 ) -> dict[str, Any]:  # fmt: skip
    window = window_of(run.timeline)
    outside = [s for s in run.samples if window is None or not window[0] <= s.start <= window[1]]
    inside = [s for s in run.samples if window is not None and window[0] <= s.start <= window[1]]
    out = outside_report(outside, window)
    passed = out["error_rate"] < TARGET_ERROR_RATE
    return {
        "config": {k: getattr(args, k) for k in ("duration", "fault_at", "fault_seconds",
                                                 "concurrency", "rate", "seed")},
        "timeline": [{"t": t, "event": e} for t, e in run.timeline.events],
        "window": None if window is None else {"start": window[0], "end": window[1],
                                               "recovery_allowance_s": RECOVERY_ALLOWANCE},
        "requests": len(run.samples),
        "achieved_rps": round(len(run.samples) / run.elapsed, 1),
        "upstream_instant_calls": run.upstream_calls,
        "by_kind": by_kind(run.samples),
        "outside_window": out,
        "inside_window": (inside_report(inside, run.samples, run.timeline.fault_end or 0.0)
                          if window else None),
        "rss_mib": run.rss,
        "slow_clients": slow_report(run.slow),
        "gateway": gateway,
        "wall_seconds": round(time.monotonic() - STARTED, 1),
        "target": {"line": "error rate outside fault window < 1%", "pass": passed},
    }  # fmt: skip


# ---- printing ----------------------------------------------------------------


def pct(rate: float) -> str:
    return f"{rate * 100:.3f} %"


def counts(mapping: dict[str, int]) -> str:
    return " ".join(f"{k}:{v}" for k, v in mapping.items()) or "-"


def print_traffic(report: dict[str, Any]) -> None:
    cfg = report["config"]
    print(f"soak: {cfg['duration']:.0f} s, concurrency {cfg['concurrency']}, rate "
          f"{cfg['rate'] or 'unpaced'} req/s, fault at +{cfg['fault_at']:.0f} s for "
          f"{cfg['fault_seconds']:.0f} s, seed {cfg['seed']}")  # fmt: skip
    print("timeline: " + " | ".join(f"+{e['t']:.1f} {e['event']}" for e in report["timeline"]))
    if report["window"]:
        w = report["window"]
        print(f"fault window: +{w['start']:.1f} .. +{w['end']:.1f} s (fault end + "
              f"{w['recovery_allowance_s']:.0f} s recovery allowance)")  # fmt: skip
    print(f"requests: {report['requests']} ({report['achieved_rps']:.0f}/s), "
          f"upstream instant calls {report['upstream_instant_calls']}, "
          f"wall time {report['wall_seconds']} s")  # fmt: skip
    print(f"  {'kind':<16}{'total':>7}  statuses / X-Cache")
    for kind, row in report["by_kind"].items():
        cache = f"   [{counts(row['x_cache'])}]" if row["x_cache"] else ""
        print(f"  {kind:<16}{row['total']:>7}  {counts(row['statuses'])}{cache}")


def print_windows(report: dict[str, Any]) -> None:
    out = report["outside_window"]
    split = ""
    if "errors_in_flight_at_fault_start" in out:
        split = (f"; {out['errors_in_flight_at_fault_start']} of them in flight when the fault "
                 f"began, {out['errors_after_window']} after the window")  # fmt: skip
    print(f"outside fault window: {out['requests']} requests, {out['errors']} errors = "
          f"{pct(out['error_rate'])} [{counts(out['error_kinds'])}]{split}")  # fmt: skip
    if out["first_errors"]:
        print("  first errors: " + ", ".join(f"+{e['t']} {e['kind']} {e['result']} "
                                            f"({e['latency_ms']} ms)"
                                            for e in out["first_errors"][:5]))  # fmt: skip
    print(f"  {'latency ms':<16}{'n':>7}{'p50':>9}{'p95':>9}{'p99':>9}")
    for kind, lat in out["latency"].items():
        if lat["n"]:
            print(f"  {kind:<16}{lat['n']:>7}{lat['p50_ms']:>9.2f}{lat['p95_ms']:>9.2f}"
                  f"{lat['p99_ms']:>9.2f}")  # fmt: skip


def print_inside(inside: dict[str, Any]) -> None:
    last = inside["last_error_after_fault_end_s"]
    print(f"inside fault window (informational): {inside['requests']} requests, "
          f"{inside['errors']} errors = {pct(inside['error_rate'])}: {inside['fast_503']} fast "
          f"503 (< {FAST_SECONDS} s), {inside['slow_or_other']} slow or other, slowest "
          f"{inside['max_error_latency_ms']} ms; last error "
          f"{'none' if last is None else f'+{last} s'} after the fault ended")  # fmt: skip
    for label, n in inside["error_kinds"].items():
        first, final = inside["error_spans"][label]
        print(f"  {label:<28}{n:>7}  started +{first} .. +{final} s")


def slow_lines(results: list[dict[str, Any]]) -> dict[tuple[str, str, float], list[str]]:
    """Outcomes per wave and kind, identical ones merged ("2x ...")."""
    grouped: dict[tuple[str, str, float], Counter[str]] = {}
    for r in results:
        if r["note"]:
            outcome = r["note"]
        elif r["closed_after"] is None:
            outcome = f"still open after {r['watched']:.0f} s (stopped watching)"
        else:
            sent = repr(r["answer"]) if r["answer"] else "nothing"
            outcome = f"closed by gateway after {r['closed_after']:.1f} s, sent {sent}"
        grouped.setdefault((r["wave"], r["kind"], round(r["opened_at"], 1)), Counter())[
            outcome
        ] += 1
    return {k: [f"{n}x {o}" for o, n in c.items()] for k, c in grouped.items()}


def print_process(report: dict[str, Any]) -> None:
    rss = report["rss_mib"]
    print(f"gateway RSS MiB: start {rss['start']}  middle {rss.get('middle', '-')}  "
          f"end {rss['end']}  peak {rss['peak']}")  # fmt: skip
    print("slow clients (not counted as requests):")
    for (wave, kind, opened), outcomes in slow_lines(report["slow_clients"]).items():
        print(f"  {wave:<12}{kind:<14}+{opened:<6} " + "; ".join(outcomes))
    gw = report["gateway"]
    log = gw["log"]
    print(f"gateway: alive at end {gw['alive_at_end']}, SIGTERM -> exit {gw['exit_code']} in "
          f"{gw['stop_seconds']} s; log {log['lines']} lines, {log['non_json_lines']} not JSON, "
          f"warnings/errors [{counts(log['warnings_and_errors'])}], "
          f"5xx in its access log [{counts(log['access_log_5xx'])}]")  # fmt: skip
    target = report["target"]
    rate = pct(report["outside_window"]["error_rate"])
    print(f"target: {target['line']}: {'PASS' if target['pass'] else 'FAIL'} ({rate})")


# ---- main --------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of traffic")
    parser.add_argument("--fault-at", type=float, default=25.0, help="seconds into the traffic")
    parser.add_argument("--fault-seconds", type=float, default=10.0, help="upstream outage")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rate", type=float, default=1000.0, help="req/s in total; 0: unpaced")
    parser.add_argument("--max-requests", type=int, default=MAX_REQUESTS)
    parser.add_argument("--slow-watch", type=float, default=40.0, help="max s per slow client")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--keep-log", type=Path, help="copy the gateway's log here")
    args = parser.parse_args()
    if args.duration <= 0 or args.concurrency < 1 or args.fault_seconds < 0:
        parser.error("--duration and --concurrency must be positive, --fault-seconds >= 0")
    if not 0 < args.max_requests <= MAX_REQUESTS:
        parser.error(f"--max-requests must be between 1 and {MAX_REQUESTS}")
    if args.fault_at + args.fault_seconds + RECOVERY_ALLOWANCE >= args.duration:
        say("warning: the fault window runs to the end; little traffic is left outside it")
    return args


def _interrupted(_signum: int, _frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt


def _wall_clock(_signum: int, _frame: FrameType | None) -> NoReturn:
    raise WallClockExceeded


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    children = Children()
    try:
        data, gateway = asyncio.run(soak(args, work, children))
        status = stop_gateway(gateway)
        status["log"] = log_report(gateway.log)
        if args.keep_log:
            shutil.copyfile(gateway.log, args.keep_log)
        return build_report(args, data, status)
    finally:
        signal.alarm(0)
        children.stop_all()
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    args = parse_args()
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed: apt-get install redis-server")
    if PIN:
        os.sched_setaffinity(0, {1})
    logging.getLogger("aiohttp").setLevel(logging.CRITICAL)  # the upstream's dropped requests
    # Restore Ctrl-C even when started in the background (a shell then ignores
    # SIGINT, and Python would keep ignoring it); SIGTERM takes the same path.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGALRM, _wall_clock)
    signal.alarm(math.ceil(args.duration + WALL_SLACK))
    try:
        report = run(args)
    except KeyboardInterrupt:
        say("interrupted; children stopped, temp dir removed")
        return 130
    except WallClockExceeded:
        say(f"wall-time cap ({args.duration:.0f} + {WALL_SLACK:.0f} s) hit; run abandoned")
        return 3
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_traffic(report)
        print_windows(report)
        if report["inside_window"]:
            print_inside(report["inside_window"])
        print_process(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
