"""Bulk credit-saver benchmark: pre-answer throughput, memory, and credits saved per upload.

    .venv/bin/python bench/bench_bulk.py [--rows 100000 1000000] [--known 0.5] [--json]
                                         [--seed 1] [--max-minutes 15]

For each size N in `--rows` the script writes a CSV of N rows (`Full Name,Domain,Company
Notes`): people named `Person Abcd Efgh` (letters only: the sandbox answers names with
digits as unsupported) at 300 domains, where about 10 % of the rows repeat an earlier person
in another spelling (`Efgh, Person Abcd`, upper case, a title, the domain as a URL, ...) and
about 1 % repeat an earlier row exactly.  It fills a private Redis with cache entries for
`--known` of the distinct people, written directly with the gateway's own `cache_key` and
`encode` (bodies shaped like the sandbox's found answers), starts a fresh gateway process
(so each size's peak memory is its own), uploads the file to `POST /v2/email_finder/bulk`
as a team with a large daily quota (so the reservation path runs), and then lets the list
finish: the sandbox's upstream part takes `BULK_SECONDS`, then `progress_status` is polled
until the gateway has merged the result, which is downloaded and counted.

Reading the report, one column per size:

- **pre-answer rows/s** = rows / `plan_ms` of the gateway's `bulk_list_started` log line:
  the three passes of `gateway.bulk.plan` (key every row, ask the cache, write the reduced
  file).  The upload's wall time is end to end as the caller sees it: spooling, inspecting
  the file, the plan, reserving, sending the reduced file (the sandbox reads it in this
  process) and storing the list's blobs in Redis.
- **/healthz worst** is the slowest of the `/healthz` probes a child process sends every
  50 ms during the upload (and, apart, during the merge): how long the gateway's event loop
  was unavailable to other callers.
- **peak RSS** is the gateway's `VmHWM` before and after the upload (and after the merge);
  *growth* is the difference.  The memory target compares the growth of the largest size
  with that of the smallest: it must stay within `RSS_SLACK_MIB`.
- **upstream rows** are the data rows of the file the sandbox received; they must equal the
  unknown distinct people exactly (computed here from the generated rows with the
  gateway's `cache_key`).  The gateway's own counts from its log line are shown beside.
- **credits**: Clearout skips only exact duplicate rows, so sending the file whole costs
  distinct rows x 4 (every generated person is found); the saver pays unknown people x 4.
- **merge** is the time from the first `progress_status` after upstream completed until
  the gateway answers `completed`; the result must have N rows.

Targets (PASS/FAIL lines, the exit status does not depend on them): pre-answer at least
20 000 rows/s at every size; peak-RSS growth independent of file size; upstream rows =
unknown distinct people at every size.

Everything runs on 127.0.0.1: a private redis-server on a free port (never 6379), the
sandbox upstream served by this script, the gateway as `python -m gateway serve`.  The
gateway is pinned to CPU 0, this script and Redis to CPU 1 (when there are two).  The run
is capped at `--max-minutes` of wall time (exit 3); children and the temp dir are removed
on exit, error or Ctrl-C.  Progress goes to stderr, the report to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import hashlib
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import aiohttp
import redis
from aiohttp import web
from processes import PIN, Children, free_port, wait_port

from gateway.bulk import tables
from gateway.lookup.cache import KEY_PREFIX
from gateway.lookup.entries import CachedAnswer, encode
from gateway.lookup.normalize import cache_key
from gateway.sandbox import Sandbox, SandboxConfig
from gateway.sandbox.people import lookup

TOKEN = "bench-bulk-upstream-token"  # noqa: S105 - the private sandbox's token, not a secret
TEAM, KEY = "bulk-bench", "bench-bulk-key"
HEADER = ["Full Name", "Domain", "Company Notes"]
DOMAINS = 300
RESPELL_SHARE = 0.10  # rows that repeat an earlier person in another spelling
EXACT_SHARE = 0.01  # rows that repeat an earlier row exactly
SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]  # 70: words of 4 letters
WORDS = len(SYLLABLES) ** 2
PRICE_FOUND = 4
FOUND_TTL_MS = 30 * 24 * 3600 * 1000  # the gateway's default found TTL
PREFILL_BATCH = 5000
BULK_SECONDS = 1.0  # the sandbox's upstream part of a list
TARGET_ROWS_PER_S = 20_000
RSS_SLACK_MIB = 50.0
PROBE_EVERY = 0.05
LOG_WAIT_SECONDS = 10.0
MERGE_LIMIT_SECONDS = 600.0  # 1M rows merged in ~210 s here; the wall-clock cap bounds it anyway

STARTED = time.monotonic()


class WallClockExceeded(BaseException):
    """The wall-time cap fired (a BaseException so asyncio does not swallow it)."""


class Stopped(Exception):
    """The run is ending: work in a thread gives up (asyncio.run waits for its threads)."""


STOP = threading.Event()


def check_stop() -> None:
    if STOP.is_set():
        raise Stopped


def say(message: str) -> None:
    print(f"bench_bulk [{time.monotonic() - STARTED:6.1f} s]: {message}", file=sys.stderr,
          flush=True)  # fmt: skip


# ---- the file ----------------------------------------------------------------


def word(i: int) -> str:
    """A 4-letter word per index below WORDS: consonant-vowel pairs, never a title or suffix."""
    return (SYLLABLES[i // len(SYLLABLES)] + SYLLABLES[i % len(SYLLABLES)]).capitalize()


def person(p: int) -> tuple[str, str, str]:
    """Person `p`'s canonical name, domain and notes; distinct (name, domain) per index."""
    domain = f"corp{p % DOMAINS}.example.com"
    q = p // DOMAINS
    middle, last = (q // WORDS + q) % WORDS, q % WORDS  # a bijection of q, for variety
    return f"Person {word(middle)} {word(last)}", domain, f"tier {p % 5}, renewal Q{p % 4 + 1}"


def respell(rng: random.Random, name: str, domain: str) -> tuple[str, str]:
    """Another spelling of the same person, one the gateway's normalization folds together."""
    first, middle, last = name.split()
    kind = rng.randrange(5)
    if kind == 0:
        return f"{last}, {first} {middle}", domain
    if kind == 1:
        return name.upper(), domain.upper()
    if kind == 2:
        return f"Dr. {first.lower()}  {middle} {last}", f"https://www.{domain}/team"
    if kind == 3:
        return name.lower(), f"{domain}."
    return f"{last.upper()}, {first} {middle.lower()}", f"http://{domain}:443/?ref=crm"


@dataclass
class Population:
    """What was generated, as the gateway will key it."""

    person_keys: list[str] = field(default_factory=list)  # canonical key per person index
    row_keys: set[str] = field(default_factory=set)  # every distinct key among the rows
    row_digests: set[int] = field(default_factory=set)  # every distinct row
    respelled: int = 0
    exact: int = 0
    respelled_apart: int = 0  # respellings the gateway keys apart from their person

    def next_row(self, rng: random.Random) -> list[str]:
        draw = rng.random()
        if self.person_keys and draw < EXACT_SHARE + RESPELL_SHARE:
            p = rng.randrange(len(self.person_keys))
            name, domain, notes = person(p)
            key = self.person_keys[p]
            if draw < EXACT_SHARE:
                self.exact += 1
            else:
                self.respelled += 1
                name, domain = respell(rng, name, domain)
                key = KEY_PREFIX + cache_key(name, domain)
                self.respelled_apart += key != self.person_keys[p]
        else:
            name, domain, notes = person(len(self.person_keys))
            key = KEY_PREFIX + cache_key(name, domain)
            self.person_keys.append(key)
        self.row_keys.add(key)
        self.row_digests.add(hash((name, domain, notes)))
        return [name, domain, notes]


def generate(path: Path, rows: int, seed: int) -> Population:
    rng = random.Random(seed)
    population = Population()
    with path.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(HEADER)
        for i in range(rows):
            if i % 10_000 == 0:
                check_stop()
            out.writerow(population.next_row(rng))
    return population


def count_rows(path: Path) -> int:
    """Data rows with content, read as the gateway reads them (caps raised: results are wide)."""
    limits = replace(tables.DEFAULT_LIMITS, max_rows=10**8, max_file_bytes=4 * 1024**3)
    rows = tables.iter_rows(path, "csv", limits=limits)
    next(rows, None)
    return sum(1 for row in rows if any(row))


# ---- the cache -----------------------------------------------------------------


def found_answer(name: str, domain: str) -> CachedAnswer:
    """What the gateway would have cached from the sandbox's instant answer for this person."""
    outcome = lookup(name, domain)
    assert outcome.kind == "found", (name, domain, outcome.kind)
    # aiohttp's json_response renders with json.dumps' defaults: the same bytes.
    body = json.dumps({"status": "success", "data": outcome.data}).encode()
    return CachedAnswer(body, outcome.credits, True)


def prefill(redis_port: int, population: Population, people: list[int]) -> None:
    """Cache entries for `people` (person indexes), pipelined, in the gateway's format."""
    client = redis.Redis(host="127.0.0.1", port=redis_port)
    try:
        client.flushall()  # the previous size's entries and harvest must not count
        for start in range(0, len(people), PREFILL_BATCH):
            check_stop()
            pipe = client.pipeline(transaction=False)
            for p in people[start : start + PREFILL_BATCH]:
                name, domain, _ = person(p)
                pipe.psetex(population.person_keys[p], FOUND_TTL_MS,
                            encode(found_answer(name, domain)))  # fmt: skip
            pipe.execute()
    finally:
        client.close()


async def start_redis(children: Children, work: Path) -> int:
    port = free_port()
    children.spawn(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no", "--dir", str(work)], cpu=1)  # fmt: skip
    await wait_port(port)
    return port


@dataclass
class Gateway:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def peak_mib(self) -> float:
        """VmHWM: the most resident memory the process ever had."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM in /proc status")


def gateway_env(
    work: Path, redis_port: int, upstream_port: int, rows: int, file_bytes: int
) -> dict[str, str]:
    teams = work / "teams.yaml"
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    # A quota far above any list, so the reservation path runs and never refuses.
    teams.write_text(f"teams:\n  - name: {TEAM}\n    key_sha256: [{digest}]\n"
                     "    quota: {credits_per_day: 1000000000}\n")  # fmt: skip
    spool = work / "spool"
    spool.mkdir(exist_ok=True)
    # The caller's own GATEWAY_*/CLEAROUT_* variables must not leak into the run.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "CLEAROUT_"))}
    env.update({
        "CLEAROUT_API_TOKEN": TOKEN,
        "GATEWAY_UPSTREAM_URL": f"http://127.0.0.1:{upstream_port}/v2",
        "GATEWAY_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "GATEWAY_TEAMS_FILE": str(teams), "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_LOG_FORMAT": "json", "GATEWAY_SPOOL_DIR": str(spool),
        # The defaults (1M rows, 50 MiB) are raised to fit the file with room to spare.
        "GATEWAY_MAX_BULK_ROWS": str(max(1_000_000, rows + 1000)),
        "GATEWAY_MAX_BULK_BYTES": str(max(50 * 1024 * 1024, 2 * file_bytes)),
        "GATEWAY_UPSTREAM_BULK_TIMEOUT_SECONDS": "600",
        # Nothing in the background: the merge starts when this script asks for progress.
        "GATEWAY_QUEUE_POLL_SECONDS": "0", "GATEWAY_CREDITS_POLL_SECONDS": "0",
        "GATEWAY_DRAIN_DELAY_SECONDS": "0", "GATEWAY_SHUTDOWN_GRACE_SECONDS": "5",
    })  # fmt: skip
    return env


async def start_gateway(children: Children, work: Path, env: dict[str, str], tag: str) -> Gateway:
    port = free_port()
    log = work / f"gateway-{tag}.log"
    with log.open("wb") as out:
        proc = children.spawn([sys.executable, "-m", "gateway", "serve"], cpu=0,
                              env={**env, "GATEWAY_PORT": str(port)}, stdout=out,
                              stderr=subprocess.STDOUT)  # fmt: skip
    await wait_port(port)
    return Gateway(proc, port, log)


async def start_upstream(sandbox: Sandbox) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(sandbox.make_app(), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


# ---- the gateway's side ----------------------------------------------------------


# The prober: GET /healthz every PROBE_EVERY s until stdin closes, then print the
# slowest answer and the number of probes.
PROBE_SCRIPT = """
import http.client, select, sys, time
port, every = int(sys.argv[1]), float(sys.argv[2])
conn, worst, probes = http.client.HTTPConnection("127.0.0.1", port, timeout=60), 0.0, 0
while not select.select([sys.stdin], [], [], every)[0]:
    started = time.perf_counter()
    try:
        conn.request("GET", "/healthz")
        conn.getresponse().read()
    except (OSError, http.client.HTTPException):
        conn.close()
        continue
    worst, probes = max(worst, time.perf_counter() - started), probes + 1
print(worst, probes)
"""


class Prober:
    """GET /healthz every PROBE_EVERY s from a process of its own; the slowest answer.

    A process, not a thread or a task of this script: the sandbox answers the gateway on
    this script's event loop (reading the reduced upload, writing result files), and a
    thread here waits for this process's GIL as well, so it timed this script's stalls
    as the gateway's (65 ms against 7 ms from a separate process, for the same upload)."""

    def __init__(self, children: Children, port: int) -> None:
        self.proc = children.spawn([sys.executable, "-c", PROBE_SCRIPT, str(port),
                                    str(PROBE_EVERY)], cpu=1, stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE)  # fmt: skip
        self.worst = 0.0
        self.probes = 0

    def stop(self) -> None:
        out, _ = self.proc.communicate(timeout=60)
        worst, probes = out.split()
        self.worst, self.probes = float(worst), int(probes)


def read_log(path: Path) -> tuple[dict[str, Any] | None, Counter[str]]:
    """The `bulk_list_started` line, and warnings and errors by event."""
    started: dict[str, Any] | None = None
    noisy: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            noisy["not json"] += 1
            continue
        if not isinstance(entry, dict):
            continue
        if entry.get("event") == "bulk_list_started":
            started = entry
        if entry.get("level") in ("warning", "error", "critical"):
            noisy[f"{entry.get('level')}: {entry.get('event')}"] += 1
    return started, noisy


async def started_line(path: Path) -> dict[str, Any]:
    """Wait for the log line (the gateway flushes its log every 0.2 s)."""
    deadline = time.monotonic() + LOG_WAIT_SECONDS
    while (line := read_log(path)[0]) is None:
        if time.monotonic() > deadline:
            raise SystemExit(f"no bulk_list_started line in {path}")
        await asyncio.sleep(0.2)
    return line


async def upload(session: aiohttp.ClientSession, base: str, path: Path) -> tuple[str, float]:
    """Upload `path` as the bench team; (the gateway's list id, wall seconds)."""
    started = time.perf_counter()
    with path.open("rb") as fh:
        form = aiohttp.FormData()
        form.add_field("file", fh, filename=path.name, content_type="text/csv")
        async with session.post(f"{base}/v2/email_finder/bulk", data=form,
                                headers={"Authorization": KEY}) as resp:  # fmt: skip
            body = await resp.json(content_type=None)
            status = resp.status
    elapsed = time.perf_counter() - started
    list_id = (body.get("data") or {}).get("list_id") if isinstance(body, dict) else None
    if status != 200 or not isinstance(list_id, str):
        raise SystemExit(f"upload refused: HTTP {status} {body}")
    return list_id, elapsed


async def merge(session: aiohttp.ClientSession, base: str, list_id: str) -> float:
    """Poll progress_status until `completed`; seconds from the first poll."""
    started = time.perf_counter()
    headers = {"Authorization": KEY}
    while time.perf_counter() - started < MERGE_LIMIT_SECONDS:
        async with session.get(f"{base}/v2/email_finder/bulk/progress_status",
                               params={"list_id": list_id}, headers=headers) as resp:  # fmt: skip
            body = await resp.json(content_type=None)
        state = (body.get("data") or {}).get("progress_status")
        if state == "completed":
            return time.perf_counter() - started
        if state != "running":
            raise SystemExit(f"list {list_id} ended {state}: {body}")
        await asyncio.sleep(0.25)
    raise SystemExit(f"list {list_id} not merged after {MERGE_LIMIT_SECONDS:.0f} s")


async def download(session: aiohttp.ClientSession, base: str, list_id: str, out: Path) -> None:
    headers = {"Authorization": KEY}
    async with session.post(f"{base}/v2/email_finder/download/result",
                            json={"list_id": list_id}, headers=headers) as resp:  # fmt: skip
        body = await resp.json(content_type=None)
    url = (body.get("data") or {}).get("url")
    if not isinstance(url, str):
        raise SystemExit(f"no result link: {body}")
    async with session.get(url) as resp:
        resp.raise_for_status()
        with out.open("wb") as fh:
            async for chunk in resp.content.iter_chunked(1024 * 1024):
                fh.write(chunk)


# ---- one size ------------------------------------------------------------------


@dataclass
class Run:
    """Everything one size needs: where things are, and what is running."""

    args: argparse.Namespace
    work: Path
    children: Children
    redis_port: int
    upstream_port: int
    sandbox: Sandbox


def prepare(run: Run, rows: int) -> tuple[Path, Population, dict[str, Any]]:
    """Write the file and pre-fill the cache; the file, its people and the figures so far."""
    path = run.work / f"people-{rows}.csv"
    t0 = time.perf_counter()
    population = generate(path, rows, run.args.seed)
    t1 = time.perf_counter()
    people = len(population.person_keys)
    rng = random.Random(run.args.seed + 1)
    known = sorted(rng.sample(range(people), round(run.args.known * people)))
    prefill(run.redis_port, population, known)
    known_keys = {population.person_keys[p] for p in known}
    figures = {
        "rows": rows, "file_mib": round(path.stat().st_size / 2**20, 1),
        "distinct_people": len(population.row_keys), "distinct_rows": len(population.row_digests),
        "respelled_rows": population.respelled, "exact_repeat_rows": population.exact,
        "respellings_keyed_apart": population.respelled_apart,
        "known_people": len(population.row_keys & known_keys),
        "unknown_people": len(population.row_keys - known_keys),
        "generate_s": round(t1 - t0, 1), "prefill_s": round(time.perf_counter() - t1, 1),
    }  # fmt: skip
    return path, population, figures


async def upload_and_watch(
    run: Run, gateway: Gateway, session: aiohttp.ClientSession, path: Path
) -> tuple[str, dict[str, Any]]:
    """The upload with its memory and stall figures; the gateway's list id."""
    before = gateway.peak_mib()
    before_lists = set(run.sandbox.lists)
    prober = Prober(run.children, gateway.port)
    try:
        list_id, wall = await upload(session, gateway.url, path)
    finally:
        prober.stop()
    after = gateway.peak_mib()
    sent = [run.sandbox.lists[i].path for i in set(run.sandbox.lists) - before_lists]
    upstream_rows = sum(count_rows(p) for p in sent)
    line = await started_line(gateway.log)
    return list_id, {
        "log": {k: line.get(k) for k in ("rows", "cache", "upstream", "duplicate",
                                         "saved_credits", "plan_ms")},
        "plan_rows_per_s": round(line["rows"] / (line["plan_ms"] / 1000)),
        "upload_wall_s": round(wall, 2), "healthz_worst_ms": round(prober.worst * 1000, 1),
        "healthz_probes": prober.probes, "upstream_lists": len(sent),
        "upstream_rows_sent": upstream_rows, "hwm_before_mib": round(before, 1),
        "hwm_after_upload_mib": round(after, 1), "upload_growth_mib": round(after - before, 1),
    }  # fmt: skip


async def finish_list(
    run: Run, gateway: Gateway, session: aiohttp.ClientSession, list_id: str, rows: int
) -> dict[str, Any]:
    """Let upstream's part end, time the merge, count the result's rows."""
    await asyncio.sleep(BULK_SECONDS + 0.1)  # the sandbox's clock started before we got the id
    prober = Prober(run.children, gateway.port)
    try:
        merge_s = await merge(session, gateway.url, list_id)
    finally:
        prober.stop()
    result = run.work / f"result-{rows}.csv"
    await download(session, gateway.url, list_id, result)
    result_rows = await asyncio.to_thread(count_rows, result)
    result.unlink()
    return {"merge_s": round(merge_s, 2), "result_rows": result_rows,
            "hwm_after_merge_mib": round(gateway.peak_mib(), 1),
            "healthz_merge_worst_ms": round(prober.worst * 1000, 1)}  # fmt: skip


def derived(figures: dict[str, Any]) -> dict[str, Any]:
    """Figures read off the others: credits, and what the plan and the upload left over."""
    whole = figures["distinct_rows"] * PRICE_FOUND
    saver = figures["unknown_people"] * PRICE_FOUND
    return {
        "credits": {"whole_file": whole, "saver": saver, "saved": whole - saver,
                    "saved_share": round((whole - saver) / whole, 4) if whole else 0.0},
        "upload_minus_plan_s": round(figures["upload_wall_s"] - figures["log"]["plan_ms"] / 1000,
                                     2),
        "merge_growth_mib": round(figures["hwm_after_merge_mib"]
                                  - figures["hwm_after_upload_mib"], 1),
    }  # fmt: skip


async def one_size(run: Run, rows: int) -> dict[str, Any]:
    say(f"{rows:,} rows: writing the file and pre-filling the cache")
    try:
        path, _, figures = await asyncio.to_thread(prepare, run, rows)
    except asyncio.CancelledError:  # Ctrl-C: stop the thread, or asyncio.run waits for it
        STOP.set()
        raise
    say(f"{rows:,} rows: {figures['distinct_people']:,} people, {figures['known_people']:,} "
        f"cached; file {figures['file_mib']} MiB in {figures['generate_s']} s, cache "
        f"{figures['prefill_s']} s")  # fmt: skip
    env = gateway_env(run.work, run.redis_port, run.upstream_port, rows, path.stat().st_size)
    gateway = await start_gateway(run.children, run.work, env, str(rows))
    timeout = aiohttp.ClientTimeout(total=run.args.max_minutes * 60)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await (await session.get(f"{gateway.url}/healthz")).read()
            say(f"{rows:,} rows: gateway pid {gateway.proc.pid} up; uploading")
            list_id, watched = await upload_and_watch(run, gateway, session, path)
            say(f"{rows:,} rows: uploaded in {watched['upload_wall_s']} s "
                f"(plan {watched['log']['plan_ms']} ms); merging")  # fmt: skip
            figures.update(watched)
            figures.update(await finish_list(run, gateway, session, list_id, rows))
    finally:
        figures["gateway_exit"] = run.children.stop(gateway.proc)
        figures["log_warnings"] = dict(read_log(gateway.log)[1])
        path.unlink(missing_ok=True)
        for item in list(run.sandbox.lists.values()):
            item.path.unlink(missing_ok=True)  # the reduced file: the disk back
    figures.update(derived(figures))
    say(f"{rows:,} rows: merged in {figures['merge_s']} s, {figures['result_rows']:,} rows")
    return figures


# ---- the report ------------------------------------------------------------------


def verdicts(sizes: list[dict[str, Any]]) -> list[tuple[str, bool | None, str]]:
    """(target, passed or None when not measurable, detail)."""
    rates = [s["plan_rows_per_s"] for s in sizes]
    small, large = min(sizes, key=lambda s: s["rows"]), max(sizes, key=lambda s: s["rows"])
    delta = large["upload_growth_mib"] - small["upload_growth_mib"]
    memory_ok = None if len(sizes) < 2 else delta <= RSS_SLACK_MIB
    exact = [s["upstream_rows_sent"] == s["unknown_people"] for s in sizes]
    results = [s["result_rows"] == s["rows"] for s in sizes]
    return [
        (f"pre-answer >= {TARGET_ROWS_PER_S:,} rows/s at every size",
         min(rates) >= TARGET_ROWS_PER_S, "slowest " + f"{min(rates):,} rows/s"),
        (f"peak-RSS growth at {large['rows']:,} rows within {RSS_SLACK_MIB:.0f} MiB of "
         f"{small['rows']:,} rows", memory_ok, f"difference {delta:+.1f} MiB"),
        ("upstream rows = unknown distinct people", all(exact),
         ", ".join(f"{s['upstream_rows_sent']:,}/{s['unknown_people']:,}" for s in sizes)),
        ("merged result rows = uploaded rows", all(results),
         ", ".join(f"{s['result_rows']:,}/{s['rows']:,}" for s in sizes)),
    ]  # fmt: skip


TABLE: list[tuple[str, Any]] = [
    ("rows", "rows"), ("file MiB", "file_mib"), ("distinct people", "distinct_people"),
    ("distinct rows", "distinct_rows"), ("cached people (pre-filled)", "known_people"),
    ("unknown people (expected upstream)", "unknown_people"),
    ("respellings keyed apart (want 0)", "respellings_keyed_apart"),
    ("log: rows / cache / upstream / duplicate",
     lambda s: "{rows:,} / {cache:,} / {upstream:,} / {duplicate:,}".format(**s["log"])),
    ("log: plan_ms", lambda s: s["log"]["plan_ms"]),
    ("pre-answer rows/s", "plan_rows_per_s"), ("upload wall s (end to end)", "upload_wall_s"),
    ("upload wall s outside the plan", "upload_minus_plan_s"),
    ("/healthz worst ms during upload", "healthz_worst_ms"),
    ("peak RSS before upload MiB", "hwm_before_mib"),
    ("peak RSS after upload MiB", "hwm_after_upload_mib"),
    ("peak RSS growth, upload MiB", "upload_growth_mib"),
    ("peak RSS after merge MiB", "hwm_after_merge_mib"),
    ("peak RSS growth, merge MiB (informational)", "merge_growth_mib"),
    ("upstream rows sent", "upstream_rows_sent"),
    ("credits, file sent whole", lambda s: s["credits"]["whole_file"]),
    ("credits, saver", lambda s: s["credits"]["saver"]),
    ("credits saved", lambda s: f"{s['credits']['saved']:,} "
                                f"({s['credits']['saved_share']:.1%})"),
    ("log: saved_credits (cache hits' worth)", lambda s: s["log"]["saved_credits"]),
    ("merge s", "merge_s"), ("/healthz worst ms during merge", "healthz_merge_worst_ms"),
    ("result rows", "result_rows"),
]  # fmt: skip


def cell(size: dict[str, Any], how: Any) -> str:
    value = how(size) if callable(how) else size[how]
    return f"{value:,}" if isinstance(value, int) else str(value)


def print_report(report: dict[str, Any]) -> None:
    sizes = report["sizes"]
    print(f"bulk credit saver: known share {report['known']:.0%}, seed {report['seed']}, "
          f"sandbox list time {BULK_SECONDS:.0f} s, wall {report['wall_s']} s")  # fmt: skip
    width = max(len(label) for label, _ in TABLE) + 2
    column = max(len(cell(s, how)) for s in sizes for _, how in TABLE) + 3
    print(" " * width + "".join(f"{cell(s, 'rows') + ' rows':>{column}}" for s in sizes))
    for label, how in TABLE[1:]:
        print(f"{label:<{width}}" + "".join(f"{cell(s, how):>{column}}" for s in sizes))
    for s in sizes:
        if s["log_warnings"]:
            print(f"gateway log warnings at {s['rows']:,} rows: {s['log_warnings']}")
    for line, passed, detail in report["targets"]:
        verdict = "n/a " if passed is None else "PASS" if passed else "FAIL"
        print(f"{verdict}  {line} ({detail})")


# ---- main ------------------------------------------------------------------------


async def run_all(args: argparse.Namespace, work: Path, children: Children) -> dict[str, Any]:
    redis_port = await start_redis(children, work)
    spool = work / "sandbox"
    spool.mkdir()
    sandbox = Sandbox(SandboxConfig(token=TOKEN, credits=10**9, bulk_seconds=BULK_SECONDS,
                                    spool_dir=spool))  # fmt: skip
    runner, upstream_port = await start_upstream(sandbox)
    try:
        run = Run(args, work, children, redis_port, upstream_port, sandbox)
        sizes = [await one_size(run, rows) for rows in args.rows]
    finally:
        await runner.cleanup()
    return {"known": args.known, "seed": args.seed, "sizes": sizes,
            "wall_s": round(time.monotonic() - STARTED, 1),
            "targets": verdicts(sizes)}  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--known", type=float, default=0.5, help="share of people cached")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-minutes", type=float, default=15.0, help="wall-clock cap")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    if not 0 <= args.known <= 1 or min(args.rows) < 1 or args.max_minutes <= 0:
        parser.error("--known must be in [0, 1], --rows and --max-minutes positive")
    return args


def _interrupted(_signum: int, _frame: FrameType | None) -> NoReturn:
    STOP.set()
    raise KeyboardInterrupt


def _wall_clock(_signum: int, _frame: FrameType | None) -> NoReturn:
    STOP.set()
    raise WallClockExceeded


def main() -> int:
    args = parse_args()
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed: apt-get install redis-server")
    if PIN:
        os.sched_setaffinity(0, {1})
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGALRM, _wall_clock)
    signal.alarm(math.ceil(args.max_minutes * 60))
    work = Path(tempfile.mkdtemp(prefix="bench-bulk-"))
    children = Children()
    try:
        report = asyncio.run(run_all(args, work, children))
    except KeyboardInterrupt:
        say("interrupted; children stopped, temp dir removed")
        return 130
    except WallClockExceeded:
        say(f"wall-clock cap of {args.max_minutes:g} min hit; run abandoned")
        return 3
    finally:
        signal.alarm(0)
        children.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps({**report, "targets": [
            {"target": line, "pass": passed, "detail": detail}
            for line, passed, detail in report["targets"]]}, indent=2))  # fmt: skip
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
