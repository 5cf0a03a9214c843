"""What the gateway adds: miss overhead, hit throughput at scale, Redis bytes per person.

    .venv/bin/python bench/bench_perf.py [--rounds 3] [--seconds 5] [--people 1000 1000000]
                                         [--before REF] [--json]

Everything runs on 127.0.0.1 with `wrk` as the load generator (one thread, keep-alive
connections), the gateways, the bare server and the upstream stand-in on CPU 0, wrk and
Redis on CPU 1 (when `taskset` and two CPUs exist).  Each gateway under test is a real process
(`python -m gateway serve`) with its own private redis-server.  `--before REF` also
checks out REF (a commit, e.g. the one before the performance work) into a temporary
git worktree and measures it beside the working tree, interleaved round by round, so
before and after come from the same run.  Every figure is the median over `--rounds`
rounds of `--seconds` each.

1. **Redis bytes per cached person**: `used_memory` (less the clients' buffers, which
   grow with connections, not data) of the gateway's Redis before and after 10 000
   paid lookups of distinct people through the gateway, divided by 10 000 (keys per
   person from `DBSIZE`).  The upstream stand-in's answers are ~315 bytes, the size of
   Clearout's.  Target <= 450 bytes.
2. **Miss overhead**: wrk against the upstream stand-in (`bench/upstream_server.py`,
   answering at once) directly, then through each gateway, with 1, 10 and 50
   connections, every request a person never asked before.  Overhead = gateway p50 -
   direct p50 of the same round.  A team without a quota; at 1 connection also a team
   with a credit quota (its reserve and settle scripts).  Target < 1 ms at 1 connection.
3. **Hit throughput**: wrk with 50 connections against a bare aiohttp server
   (`bench/bare_server.py`, answering the cached body) and against each gateway asking
   1 000 people already cached, uniformly.  Target >= 0.8x the bare server.
4. **Scale**: the cache is filled with `--people` people (entries copied from a real one
   under each person's own key, computed with the gateway's own `cache_key`), and a
   gateway whose in-process layer keeps entries an hour (so that it does reach its cap
   of GATEWAY_LOCAL_CACHE_SIZE) is asked by wrk (50 connections) about the first 1 000
   people ("hot") and about all of them uniformly ("uniform": most answers come from
   Redis).  Target: hot p99 at the largest size within 10 % of the smallest.

5. **The upstream call**: in one process, sequential calls to the upstream stand-in
   through the gateway's seam (`gateway.upstream.client.Upstream.call`: headers, token,
   timeouts, breaker, metrics) and through a plain `session.post` on the same session
   and pool, alternating; CPU microseconds per call (working tree only).

PASS/FAIL lines summarise the targets; the exit status does not depend on them.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
KEYS = {"free": "bench-free-key", "quota": "bench-quota-key"}
PATH = "/v2/email_finder/instant"
MEM_PEOPLE = 10_000
HOT_PEOPLE = 1000
HIT_CONNECTIONS = 50
MISS_CONNECTIONS = (1, 10, 50)
# Consonant-vowel syllables: names made of them are never a title or a suffix the
# gateway's normalization would drop (which could fold two people into one).
SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
PIN = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2

# wrk's side of the people: the same names `person()` makes, built in Lua.
LUA_PEOPLE = """
local syl = {}
for c in ("bdfgklmnprstvz"):gmatch(".") do
  for v in ("aeiou"):gmatch(".") do syl[#syl + 1] = c .. v end
end
local function word(i)
  local s = {}
  for _ = 1, 4 do s[#s + 1] = syl[i % 70 + 1]; i = math.floor(i / 70) end
  return table.concat(s)
end
local function body(first, i)
  return '{"name": "' .. first .. ' ' .. word(i) .. '", "domain": "corp' .. (i % 300)
    .. '.example.com"}'
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
"""


def word(i: int) -> str:
    parts = []
    for _ in range(4):
        parts.append(SYLLABLES[i % 70])
        i //= 70
    return "".join(parts)


def person(first: str, i: int) -> tuple[str, str]:
    return f"{first} {word(i)}", f"corp{i % 300}.example.com"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on port {port}")


def pinned(cmd: list[str], cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu), *cmd] if PIN else cmd


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Procs:
    running: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(
        self, cmd: list[str], *, cpu: int, env: dict[str, str] | None = None,
        cwd: Path = ROOT, log: Path | None = None,
    ) -> subprocess.Popen[bytes]:  # fmt: skip
        out = log.open("wb") if log else subprocess.DEVNULL
        proc = subprocess.Popen(pinned(cmd, cpu), env=env, cwd=cwd, stdout=out, stderr=out)
        self.running.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self.running.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.running)):
            self.stop(proc)


@dataclass
class Redis:
    port: int

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True,
            check=True, timeout=60,
        )  # fmt: skip
        return out.stdout.strip()

    def used_memory(self) -> int:
        """`used_memory` less the clients' buffers (those grow with connections, not data)."""
        info = self.cli("INFO", "memory")
        used = re.search(r"^used_memory:(\d+)", info, re.M)
        clients = re.search(r"^mem_clients_normal:(\d+)", info, re.M)
        assert used and clients, info
        return int(used[1]) - int(clients[1])

    def dbsize(self) -> int:
        return int(self.cli("DBSIZE"))


@dataclass
class Gateway:
    """One code tree under test (the working tree, or `--before`'s worktree)."""

    label: str
    root: Path
    redis: Redis
    base: str = ""
    proc: subprocess.Popen[bytes] | None = None


def gateway_env(gw: Gateway, port: int, teams: Path, upstream: int, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        # The tree under test first, ahead of the editable install of the working tree.
        "PYTHONPATH": str(gw.root),
        "GATEWAY_PORT": str(port), "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_TEAMS_FILE": str(teams),
        "GATEWAY_REDIS_URL": f"redis://127.0.0.1:{gw.redis.port}/0",
        "GATEWAY_UPSTREAM_URL": f"http://127.0.0.1:{upstream}/v2",
        "CLEAROUT_API_TOKEN": "bench-upstream-token",
        "GATEWAY_DRAIN_DELAY_SECONDS": "0",
        "GATEWAY_LOG_FORMAT": "json",
        **extra,
    }  # fmt: skip


def start_gateway(procs: Procs, gw: Gateway, env: dict[str, str], log: Path) -> None:
    if gw.proc is not None:
        procs.stop(gw.proc)
    port = int(env["GATEWAY_PORT"])
    gw.proc = procs.start([sys.executable, "-m", "gateway", "serve"], cpu=0, env=env,
                          cwd=gw.root, log=log)  # fmt: skip
    wait_port(port)
    gw.base = f"http://127.0.0.1:{port}"


# ---- wrk --------------------------------------------------------------------------------


def wrk(url: str, seconds: int, connections: int, script: Path) -> dict[str, float]:
    out = subprocess.run(
        pinned(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
                "-s", str(script), url], 1),
        capture_output=True, text=True, check=True, timeout=seconds + 60,
    ).stdout  # fmt: skip

    def latency(pct: str) -> float:
        match = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert match, out
        value, unit = float(match[1]), match[2]
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: .*", out)
    assert rps, out
    return {
        "rps": float(rps[1]), "p50_ms": latency("50"), "p99_ms": latency("99"),
        "non_2xx": float(bad[1]) if bad else 0.0, "socket_errors": 1.0 if errors else 0.0,
    }  # fmt: skip


def script_new_people(work: Path, first: str, key: str) -> Path:
    """Every request a person never asked before (names `first` + a counter)."""
    path = work / f"new-{first}.lua"
    path.write_text(LUA_PEOPLE + f"""
wrk.headers["Authorization"] = "{key}"
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, body("{first}", n))
end
""")
    return path


def script_known_people(work: Path, name: str, people: int, key: str) -> Path:
    """Uniformly one of the first `people` people of the fill."""
    path = work / f"known-{name}.lua"
    path.write_text(LUA_PEOPLE + f"""
wrk.headers["Authorization"] = "{key}"
math.randomseed(7)
request = function()
  return wrk.format(nil, nil, nil, body("Ann", math.random(0, {people - 1})))
end
""")
    return path


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}


# ---- filling the cache ------------------------------------------------------------------

FILLER = r"""
import sys
root, port, count, start, template_name, template_domain = sys.argv[1:7]
sys.path.insert(0, root)
import redis
try:
    from gateway.lookup.normalize import cache_key
except ImportError:  # the tree before the restructure
    from gateway.normalize import cache_key
key_of = getattr(cache_key, "__wrapped__", cache_key)
SYL = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
def word(i):
    out = []
    for _ in range(4):
        out.append(SYL[i % 70]); i //= 70
    return "".join(out)
r = redis.Redis(port=int(port))
template = "cgw:c:" + key_of(template_name, template_domain)
raw, ttl = r.get(template), r.pttl(template)
if raw is None:
    sys.exit(f"no cache entry under {template}: {r.keys('cgw:c:*')[:5]}")
pipe = r.pipeline(transaction=False)
for i in range(int(start), int(count)):
    pipe.set("cgw:c:" + key_of(f"Ann {word(i)}", f"corp{i % 300}.example.com"), raw, px=ttl)
    if i % 5000 == 4999:
        pipe.execute()
pipe.execute()
print(len(raw))
"""


def fill(gw: Gateway, start: int, count: int) -> int:
    """Cache people [start, count) under their own keys, copying person 0's entry."""
    out = subprocess.run(
        [sys.executable, "-c", FILLER, str(gw.root), str(gw.redis.port), str(count), str(start),
         *person("Ann", 0)],
        capture_output=True, text=True, check=True, timeout=1800,
    )  # fmt: skip
    return int(out.stdout.strip())


SEAM = r"""
import asyncio, statistics, sys, time
sys.path.insert(0, sys.argv[1])
import orjson
from gateway.metrics import Metrics
from gateway.upstream.client import Upstream, open_session
BODY = {"name": "Ann Babababa", "domain": "corp1.example.com", "timeout": 10000, "queue": False}
async def main():
    base = f"http://127.0.0.1:{sys.argv[2]}/v2"
    session = await open_session()
    seam = Upstream(session, base, "bench-upstream-token", Metrics())
    headers = {"Authorization": "bench-upstream-token", "Content-Type": "application/json"}
    async def plain():
        async with session.post(base + "/email_finder/instant", data=orjson.dumps(BODY),
                                headers=headers) as resp:
            await resp.read()
    async def gateway():
        await seam.call("instant", "POST", "/email_finder/instant", json_body=BODY,
                        caller_headers={}, timeout=15)
    runs = {"plain": [], "seam": []}
    for _ in range(300):
        await plain(); await gateway()
    for _ in range(int(sys.argv[3])):
        for name, call in (("plain", plain), ("seam", gateway)):
            started = time.process_time()
            for _ in range(1000):
                await call()
            runs[name].append((time.process_time() - started) / 1000 * 1e6)
    await session.close()
    print(orjson.dumps({k: round(statistics.median(v), 1) for k, v in runs.items()}).decode())
asyncio.run(main())
"""


def upstream_seam(upstream: int, rounds: int) -> dict[str, float]:
    out = subprocess.run(
        pinned([sys.executable, "-c", SEAM, str(ROOT), str(upstream), str(rounds)], 0),
        capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    result: dict[str, float] = json.loads(out.stdout)
    return result


# ---- the phases -------------------------------------------------------------------------


async def ask_many(base: str, people: list[tuple[str, str]], key: str, concurrency: int) -> int:
    """Ask each person once; the number of non-200 answers."""
    queue = list(people)
    failures = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal failures
        while queue:
            name, domain = queue.pop()
            body = {"name": name, "domain": domain}
            async with session.post(base + PATH, json=body, headers={"Authorization": key}) as r:
                await r.read()
                failures += r.status != 200

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return failures


def bytes_per_person(gw: Gateway) -> dict[str, float]:
    before_memory, before_keys = gw.redis.used_memory(), gw.redis.dbsize()
    people = [person("Mem", i) for i in range(MEM_PEOPLE)]
    failures = asyncio.run(ask_many(gw.base, people, KEYS["free"], 10))  # ~10 s
    time.sleep(0.5)  # leases and markers released, background settles done
    grown = gw.redis.used_memory() - before_memory
    return {
        "bytes_per_person": round(grown / MEM_PEOPLE, 1),
        "keys_per_person": round((gw.redis.dbsize() - before_keys) / MEM_PEOPLE, 2),
        "failures": failures,
    }


def misses(
    gateways: list[Gateway], upstream: int, work: Path, rounds: int, seconds: int,
) -> dict[str, Any]:  # fmt: skip
    report: dict[str, Any] = {}
    labels = [g.label for g in gateways]
    cases = [(c, "free") for c in MISS_CONNECTIONS] + [(1, "quota")]
    for connections, team in cases:
        name = f"c{connections}-{team}"
        runs: dict[str, list[dict[str, float]]] = {k: [] for k in ["direct", *labels]}
        for r in range(rounds):
            tag = f"{SYLLABLES[connections % 70]}{SYLLABLES[r]}{team[:2]}"
            script = script_new_people(work, f"Dir{tag}", "upstream-token")
            runs["direct"].append(wrk(f"http://127.0.0.1:{upstream}{PATH}", seconds,
                                      connections, script))  # fmt: skip
            for gw in gateways:
                first = f"Mi{gw.label[:2]}{tag}"
                script = script_new_people(work, first, KEYS[team])
                runs[gw.label].append(wrk(gw.base + PATH, seconds, connections, script))
            progress(f"  misses {name} round {r + 1}: " + ", ".join(
                f"{k} p50 {v[-1]['p50_ms']:.2f} ms" for k, v in runs.items()))
        summary = {k: median_of(v) for k, v in runs.items()}
        for gw in gateways:
            over = [g["p50_ms"] - d["p50_ms"] for g, d in zip(runs[gw.label], runs["direct"],
                                                             strict=True)]  # fmt: skip
            summary[gw.label]["overhead_p50_ms"] = round(statistics.median(over), 3)
        report[name] = summary
    return report


def hits(
    gateways: list[Gateway], bare: int, script: Path, rounds: int, seconds: int,
) -> dict[str, Any]:  # fmt: skip
    names = ["bare", *(g.label for g in gateways)]
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in names}
    for r in range(rounds):
        runs["bare"].append(wrk(f"http://127.0.0.1:{bare}{PATH}", seconds, HIT_CONNECTIONS,
                                script))  # fmt: skip
        for gw in gateways:
            runs[gw.label].append(wrk(gw.base + PATH, seconds, HIT_CONNECTIONS, script))
        progress(f"  hits round {r + 1}: " + ", ".join(
            f"{k} {v[-1]['rps']:.0f}/s" for k, v in runs.items()))
    summary: dict[str, Any] = {k: median_of(v) for k, v in runs.items()}
    for gw in gateways:
        ratios = [g["rps"] / b["rps"] for g, b in zip(runs[gw.label], runs["bare"], strict=True)]
        summary[gw.label]["ratio"] = round(statistics.median(ratios), 3)
    return summary


def scale(
    gateways: list[Gateway], env_of: Callable[[Gateway], dict[str, str]], procs: Procs,
    work: Path, args: argparse.Namespace,
) -> dict[str, Any]:  # fmt: skip
    report: dict[str, Any] = {}
    sizes, rounds, seconds = sorted(args.people), args.rounds, args.seconds
    hot = script_known_people(work, "hot", HOT_PEOPLE, KEYS["free"])
    filled = dict.fromkeys((g.label for g in gateways), HOT_PEOPLE)
    for size in sizes:
        for gw in gateways:
            if size > filled[gw.label]:
                started = time.monotonic()
                fill(gw, filled[gw.label], size)
                filled[gw.label] = size
                progress(f"  filled {gw.label} to {size} people in "
                         f"{time.monotonic() - started:.0f} s")  # fmt: skip
            # A fresh process per size: its in-process layer holds only this size's asks.
            start_gateway(procs, gw, env_of(gw), work / f"scale-{gw.label}.log")
        uniform = script_known_people(work, f"uniform{size}", size, KEYS["free"])
        runs: dict[str, list[dict[str, float]]] = {}
        for gw in gateways:
            # Warm-up: the uniform mix until the in-process layer is as full as it gets.
            wrk(gw.base + PATH, max(seconds, 10), HIT_CONNECTIONS, uniform)
        for r in range(rounds):
            for gw in gateways:
                runs.setdefault(f"{gw.label} hot", []).append(
                    wrk(gw.base + PATH, seconds, HIT_CONNECTIONS, hot))
                if size > HOT_PEOPLE:
                    runs.setdefault(f"{gw.label} uniform", []).append(
                        wrk(gw.base + PATH, seconds, HIT_CONNECTIONS, uniform))
            progress(f"  scale {size} round {r + 1}: " + ", ".join(
                f"{k} p99 {v[-1]['p99_ms']:.2f} ms" for k, v in runs.items()))
        report[str(size)] = {k: median_of(v) for k, v in runs.items()}
        for gw in gateways:
            report[str(size)][f"{gw.label} redis"] = {
                "people": gw.redis.dbsize(), "used_memory": gw.redis.used_memory()}
    return report


# ---- the run ----------------------------------------------------------------------------


@contextmanager
def worktree(ref: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bench-before-"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), ref],
                   check=True, capture_output=True)  # fmt: skip
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)],
                       check=False, capture_output=True)  # fmt: skip


def write_teams(work: Path) -> Path:
    def digest(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    teams = work / "teams.yaml"
    teams.write_text(
        "teams:\n"
        f"  - name: free\n    key_sha256: [{digest(KEYS['free'])}]\n"
        f"  - name: quota\n    key_sha256: [{digest(KEYS['quota'])}]\n"
        "    quota:\n      credits_per_day: 1000000000\n      credits_per_month: 1000000000\n"
    )
    return teams


def run(args: argparse.Namespace, roots: list[tuple[str, Path]], work: Path) -> dict[str, Any]:
    procs = Procs()
    try:
        upstream = free_port()
        # On the gateways' CPU: called directly, it is one hop across CPUs from wrk, as
        # the gateway is (two processes on one CPU talk without waking the other CPU).
        procs.start([sys.executable, str(ROOT / "bench" / "upstream_server.py"), str(upstream)],
                    cpu=0)  # fmt: skip
        wait_port(upstream)
        teams = write_teams(work)
        gateways = []
        for label, root in roots:
            port = free_port()
            procs.start(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save",
                         "", "--appendonly", "no", "--dir", str(work)], cpu=1)  # fmt: skip
            wait_port(port)
            gateways.append(Gateway(label, root, Redis(port)))

        def env_of(gw: Gateway, **extra: str) -> dict[str, str]:
            return gateway_env(gw, free_port(), teams, upstream, **extra)

        for gw in gateways:
            start_gateway(procs, gw, env_of(gw), work / f"{gw.label}.log")
        report: dict[str, Any] = {"rounds": args.rounds, "seconds": args.seconds}

        progress("redis bytes per person")
        report["redis"] = {gw.label: bytes_per_person(gw) for gw in gateways}

        progress("miss overhead")
        report["miss"] = misses(gateways, upstream, work, args.rounds, args.seconds)

        progress("hits")
        for gw in gateways:
            if asyncio.run(ask_many(gw.base, [person("Ann", i) for i in range(HOT_PEOPLE)],
                                    KEYS["free"], 10)):  # fmt: skip
                raise SystemExit(f"{gw.label}: caching the first people failed")
        with urllib.request.urlopen(urllib.request.Request(  # noqa: S310 - loopback only
            gateways[0].base + PATH, method="POST",
            data=json.dumps(dict(zip(("name", "domain"), person("Ann", 0), strict=True))).encode(),
            headers={"Authorization": KEYS["free"], "Content-Type": "application/json"},
        ), timeout=10) as answer:  # fmt: skip
            body = work / "body.json"
            body.write_bytes(answer.read())
        bare = free_port()
        procs.start([sys.executable, str(ROOT / "bench" / "bare_server.py"), str(bare),
                     str(body)], cpu=0)  # fmt: skip
        wait_port(bare)
        script = script_known_people(work, "hits", HOT_PEOPLE, KEYS["free"])
        for gw in gateways:  # warm-up: connections, caches, the interpreter's own
            wrk(gw.base + PATH, 2, HIT_CONNECTIONS, script)
        wrk(f"http://127.0.0.1:{bare}{PATH}", 2, HIT_CONNECTIONS, script)
        report["hit"] = hits(gateways, bare, script, args.rounds, args.seconds)

        progress("upstream call")
        report["seam"] = upstream_seam(upstream, args.rounds)

        progress("scale")
        report["scale"] = scale(
            gateways, lambda gw: env_of(gw, GATEWAY_LOCAL_CACHE_TTL_SECONDS="3600"), procs,
            work, args,
        )  # fmt: skip
        return report
    finally:
        procs.stop_all()


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def print_report(report: dict[str, Any], labels: list[str]) -> None:
    rounds, seconds = report["rounds"], report["seconds"]
    print(f"medians of {rounds} rounds of {seconds} s; wrk -t1; gateways on CPU 0")
    print("\nRedis bytes per cached person (used_memory over 10 000 paid lookups)")
    for label in labels:
        r = report["redis"][label]
        print(f"  {label:8} {r['bytes_per_person']:8.0f} B/person   "
              f"{r['keys_per_person']:.2f} keys/person")  # fmt: skip
    print("\nmiss: every request a new person; upstream answers at once")
    print(f"  {'case':10} {'path':8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'+p50 ms':>8}")
    for case, rows in report["miss"].items():
        for path, s in rows.items():
            extra = f"{s['overhead_p50_ms']:8.2f}" if "overhead_p50_ms" in s else ""
            print(f"  {case:10} {path:8} {s['rps']:8.0f} {s['p50_ms']:8.2f} {s['p99_ms']:8.2f} "
                  f"{extra}")  # fmt: skip
    print(f"\nhit: 1 000 cached people, uniformly, {HIT_CONNECTIONS} connections")
    for path, s in report["hit"].items():
        ratio = f"  {s['ratio']:.2f}x bare" if "ratio" in s else ""
        print(f"  {path:8} {s['rps']:8.0f} req/s   p50 {s['p50_ms']:6.2f} ms   "
              f"p99 {s['p99_ms']:6.2f} ms{ratio}")  # fmt: skip
    seam = report["seam"]
    print("\nupstream call, CPU per call: the gateway's seam vs a plain aiohttp client, same pool")
    print(f"  plain {seam['plain']:.0f} us   seam {seam['seam']:.0f} us   "
          f"(+{seam['seam'] - seam['plain']:.0f} us)")  # fmt: skip
    print("\nscale: people in Redis; in-process layer at its cap (entries kept an hour)")
    for size, rows in report["scale"].items():
        for name, s in rows.items():
            if name.endswith("redis"):
                continue
            print(f"  {size:>8} {name:16} {s['rps']:8.0f} req/s   p50 {s['p50_ms']:6.2f} ms   "
                  f"p99 {s['p99_ms']:6.2f} ms")  # fmt: skip
    print("\ntargets")
    sizes = list(report["scale"])
    for label in labels:
        r = report["redis"][label]["bytes_per_person"]
        over = report["miss"]["c1-free"][label]["overhead_p50_ms"]
        ratio = report["hit"][label]["ratio"]
        small = report["scale"][sizes[0]][f"{label} hot"]["p99_ms"]
        large = report["scale"][sizes[-1]][f"{label} hot"]["p99_ms"]
        growth = large / small - 1
        print(f"  {label}: {verdict(r <= 450)} Redis {r:.0f} B/person (<= 450); "
              f"{verdict(over < 1)} miss +{over:.2f} ms p50 at 1 connection (< 1); "
              f"{verdict(ratio >= 0.8)} hits {ratio:.2f}x bare (>= 0.8); "
              f"{verdict(growth <= 0.10)} hot p99 {sizes[0]} -> {sizes[-1]} people "
              f"{growth:+.0%} (<= +10%)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--people", type=int, nargs="+", default=[1000, 1_000_000])
    parser.add_argument("--before", help="also measure this git ref, in a temporary worktree")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args()
    if min(args.people) < HOT_PEOPLE:
        parser.error(f"--people sizes start at {HOT_PEOPLE}")
    for tool in ("wrk", "redis-server", "redis-cli", "git"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (apt-get install wrk redis-server git)")
    work = Path(tempfile.mkdtemp(prefix="bench-perf-"))
    try:
        if args.before:
            with worktree(args.before) as before:
                roots = [("before", before), ("after", ROOT)]
                report = run(args, roots, work)
        else:
            roots = [("after", ROOT)]
            report = run(args, roots, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    labels = [label for label, _ in roots]
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print_report(report, labels)


if __name__ == "__main__":
    main()
