"""Cache benchmark: hit throughput against a bare aiohttp server, and paid calls per person.

    python bench/bench_cache.py [--duration 10] [--connections 50] [--rounds 3]

Part 1 runs `wrk` (same connection count, same duration, one thread) against
a bare aiohttp server answering the gateway's cached JSON body, then against
the gateway serving that body as a cache hit (Redis-backed, structlog JSON
access log on), alternating, `--rounds` times each; it reports the median
requests/s, p50 and p99 latency of each and the ratio.

Part 2 sends 10 000 instant lookups over 1 000 distinct people, each asked
in randomly varied spellings (titles, case, `Last, First`, URLs for the
domain), 50 at a time, to a gateway with an empty cache, and reports how many
upstream calls it made (read from its own metrics).  The target is exactly
one call per distinct person.

Everything runs on 127.0.0.1: a private redis-server, the gateway in sandbox
mode (its built-in upstream), the baseline server.  Needs `wrk` and
`redis-server` on PATH (apt-get install wrk redis-server).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp

KEY = "bench-team-key"
BODY = '{"name": "Steven Morris", "domain": "apple.com"}'
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on port {port}")


# Servers on CPU 0, the load generator and Redis on CPU 1 (when there are two):
# keeps the scheduler from moving them around, which made runs noisy.
PIN = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


def pinned(cmd: list[str], cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu), *cmd] if PIN else cmd


def start(
    cmd: list[str], env: dict[str, str] | None = None, cpu: int = 0
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        pinned(cmd, cpu), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT
    )


def wrk(url: str, duration: int, connections: int, script: Path) -> dict[str, float]:
    out = subprocess.run(
        pinned(["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s",
                str(script), url], 1),
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip

    def latency(pct: str) -> float:
        match = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert match, out
        value, unit = float(match[1]), match[2]
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    assert rps, out
    return {
        "rps": float(rps[1]),
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "non_2xx": float(bad[1]) if bad else 0.0,
    }


def spellings(first: str, last: str, domain: str) -> list[dict[str, str]]:
    return [
        {"name": f"{first} {last}", "domain": domain},
        {"name": f"Dr. {first} {last}", "domain": f"https://www.{domain}/team"},
        {"name": f"{last}, {first}", "domain": domain.upper()},
        {"name": f"{first.lower()}  {last.upper()}", "domain": f"http://{domain}:443/?ref=x"},
        {"name": f"Mr {first} {last}, PhD", "domain": f"{domain}."},
    ]


async def distinct_people(base: str, people: int, requests: int, concurrency: int) -> int:
    rng = random.Random(7)

    # Letters only: the sandbox refuses digits in names (code 1088).
    def word(i: int) -> str:
        return "".join(chr(97 + int(d)) for d in f"{i:04d}").capitalize()

    population = [(f"Ann{word(i).lower()}", f"Lee{word(i).lower()}", f"corp{i}.example.com")
                  for i in range(people)]  # fmt: skip
    asks = [rng.choice(spellings(*rng.choice(population))) for _ in range(requests)]
    # Every person at least once, so "distinct people" is exactly `people`.
    asks[:people] = [spellings(*p)[0] for p in population]
    rng.shuffle(asks)
    queue: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    for item in asks:
        queue.put_nowait(item)
    failures = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal failures
        while not queue.empty():
            body = queue.get_nowait()
            async with session.post(f"{base}/v2/email_finder/instant", json=body,
                                    headers={"Authorization": KEY}) as resp:  # fmt: skip
                await resp.read()
                failures += resp.status != 200

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return failures


def upstream_instant_calls(base: str) -> int:
    text = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()  # noqa: S310
    total = 0.0
    for line in text.splitlines():
        if line.startswith('clearout_gateway_upstream_requests_total{route="instant"'):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--people", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=10_000)
    args = parser.parse_args()
    for tool in ("wrk", "redis-server"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed: apt-get install {tool}")

    work = Path(tempfile.mkdtemp(prefix="bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        redis_port = free_port()
        redis_cmd = ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                     "--save", "", "--appendonly", "no", "--dir", str(work)]  # fmt: skip
        procs.append(start(redis_cmd, cpu=1))
        wait_port(redis_port)
        teams = work / "teams.yaml"
        digest = hashlib.sha256(KEY.encode()).hexdigest()
        teams.write_text(f"teams:\n  - name: bench\n    key_sha256: [{digest}]\n")

        def gateway(db: int) -> tuple[str, subprocess.Popen[bytes]]:
            port = free_port()
            env = {**os.environ, "GATEWAY_SANDBOX": "1", "GATEWAY_PORT": str(port),
                   "GATEWAY_HOST": "127.0.0.1", "GATEWAY_TEAMS_FILE": str(teams),
                   "GATEWAY_REDIS_URL": f"redis://127.0.0.1:{redis_port}/{db}",
                   "GATEWAY_DRAIN_DELAY_SECONDS": "0"}  # fmt: skip
            proc = start([sys.executable, "-m", "gateway", "serve"], env)
            procs.append(proc)
            wait_port(port)
            return f"http://127.0.0.1:{port}", proc

        base, _ = gateway(0)
        request = urllib.request.Request(  # noqa: S310 - loopback only
            f"{base}/v2/email_finder/instant", data=BODY.encode(), method="POST",
            headers={"Authorization": KEY, "Content-Type": "application/json"},
        )  # fmt: skip
        cached_body = urllib.request.urlopen(request, timeout=10).read()  # noqa: S310
        body_file = work / "body.json"
        body_file.write_bytes(cached_body)
        bare_port = free_port()
        procs.append(start([sys.executable, str(ROOT / "bench" / "bare_server.py"),
                            str(bare_port), str(body_file)]))  # fmt: skip
        wait_port(bare_port)
        script = work / "post.lua"
        script.write_text(
            'wrk.method = "POST"\n'
            f"wrk.body = '{BODY}'\n"
            'wrk.headers["Content-Type"] = "application/json"\n'
            f'wrk.headers["Authorization"] = "{KEY}"\n'
        )
        path = "/v2/email_finder/instant"
        wrk(f"{base}{path}", 2, args.connections, script)  # warm-up
        wrk(f"http://127.0.0.1:{bare_port}{path}", 2, args.connections, script)
        runs: dict[str, list[dict[str, float]]] = {"bare": [], "gateway": []}
        for _ in range(args.rounds):
            runs["bare"].append(wrk(f"http://127.0.0.1:{bare_port}{path}", args.duration,
                                    args.connections, script))  # fmt: skip
            runs["gateway"].append(wrk(f"{base}{path}", args.duration, args.connections, script))
        summary = {
            name: {k: statistics.median(r[k] for r in results) for k in results[0]}
            for name, results in runs.items()
        }
        ratio = summary["gateway"]["rps"] / summary["bare"]["rps"]
        print(f"cache-hit throughput, wrk -t1 -c{args.connections} -d{args.duration}s, "
              f"median of {args.rounds} rounds")  # fmt: skip
        for name in ("bare", "gateway"):
            rounds = " ".join(f"{r['rps']:.0f}" for r in runs[name])
            print(f"  {name:8} rounds: {rounds} req/s")
        for name in ("bare", "gateway"):
            s = summary[name]
            print(f"  {name:8} {s['rps']:9.0f} req/s   p50 {s['p50_ms']:6.2f} ms   "
                  f"p99 {s['p99_ms']:6.2f} ms   non-2xx {s['non_2xx']:.0f}")  # fmt: skip
        print(f"  ratio    {ratio:.2f}x of the bare server (target >= 0.5)")

        fresh, _ = gateway(1)
        started = time.monotonic()
        failures = asyncio.run(distinct_people(fresh, args.people, args.requests, 50))
        calls = upstream_instant_calls(fresh)
        elapsed = time.monotonic() - started
        print(f"paid lookups: {args.requests} requests over {args.people} distinct people, "
              f"varied spellings, 50 concurrent ({elapsed:.1f} s)")  # fmt: skip
        print(f"  upstream calls {calls} (target = {args.people}), failed requests {failures}")
        print(json.dumps({"hit": summary, "ratio": round(ratio, 3), "upstream_calls": calls,
                          "distinct_people": args.people, "failures": failures}))  # fmt: skip
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=15)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
