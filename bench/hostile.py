"""How long the worst inputs hold the gateway's event loop: /healthz latency while each is sent.

    .venv/bin/python bench/hostile.py [--repeat 3] [--json]

A real gateway process (Redis-backed, a team with a quota, so every path that
counts runs) with the sandbox as the upstream on loopback, everything on
127.0.0.1.  A child process probes `GET /healthz` every 50 ms; for each input
below the script sends it `--repeat` times, one after another, and reports the
answers' statuses and the slowest probe meanwhile.  The first row is the
baseline of the same run: the probes with nothing else sent.  No answer may be
a 5xx, and a probe far above the baseline means that input stalls every other
caller.

The inputs are the hardest this project knows how to build for each parser:
the normalization's suffix loop at the body limit and at the field limits,
deep and wide JSON, oversized headers and query strings, malformed multipart,
an XLSX zip bomb (7 MiB inflating to 1 GiB), a body of 20 000 form fields
and a CSV of 2 million rows (limits raised so that it is read to its end).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.test_tabular

from bench_bulk import KEY, Prober, gateway_env, start_gateway, start_redis, start_upstream
from processes import Children

from gateway.sandbox import Sandbox, SandboxConfig
from tests.test_tabular import build_bomb

INSTANT = "/v2/email_finder/instant"
BULK = "/v2/email_finder/bulk"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
BIG_ROWS = 2_000_000

Send = Callable[[aiohttp.ClientSession, str], Awaitable[int]]


def instant(body: bytes, content_type: str = "application/json") -> Send:
    async def send(session: aiohttp.ClientSession, base: str) -> int:
        headers = {"Authorization": KEY, "Content-Type": content_type}
        async with session.post(base + INSTANT, data=body, headers=headers) as resp:
            await resp.read()
            return resp.status

    return send


def raw(request: bytes) -> Send:
    """Bytes written to a fresh connection as they are; the status line of the answer."""

    async def send(_session: aiohttp.ClientSession, base: str) -> int:
        host, port = base.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(request)
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), 30)
            return int(line.split()[1]) if line else 0
        finally:
            writer.close()

    return send


def upload(path: Path, content_type: str, headers: dict[str, str] | None = None) -> Send:
    async def send(session: aiohttp.ClientSession, base: str) -> int:
        with path.open("rb") as fh:
            form = aiohttp.FormData()
            form.add_field("ignore_duplicate_file", "true")
            form.add_field("file", fh, filename=path.name, content_type=content_type)
            sent = {"Authorization": KEY, **(headers or {})}
            async with session.post(base + BULK, data=form, headers=sent) as r:
                await r.read()
                return r.status

    return send


def multipart(body: bytes, boundary: str = "xx") -> bytes:
    head = (f"POST {BULK} HTTP/1.1\r\nHost: x\r\nAuthorization: {KEY}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")  # fmt: skip
    return head.encode() + body


def inputs(work: Path) -> list[tuple[str, Send]]:
    suffixes = ",phd" * 16000
    bomb = build_bomb(work / "bomb.xlsx", 1024**3)
    big = work / "two-million.csv"
    with big.open("w") as fh:
        fh.write("Full Name,Domain\n")
        fh.writelines(f"Person {i:07d},domain{i % 1000}.com\n" for i in range(BIG_ROWS))
    many_parts = b"".join(
        b'--xx\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nv\r\n' % i for i in range(20000)
    )
    return [
        (
            "suffix bomb, 64 KiB name",
            instant(
                json.dumps({"name": "Zed Xqzvbnmw" + suffixes, "domain": "apple.com"}).encode()
            ),
        ),
        (
            "suffix bomb at the 512-char name limit",
            instant(
                json.dumps(
                    {"name": ("Zed Xqzvbnmw" + suffixes)[:512], "domain": "apple.com"}
                ).encode()
            ),
        ),
        (
            "1024-char domain of labels",
            instant(
                json.dumps({"name": "Ann Lee", "domain": ("ab." * 341)[:1020] + "com"}).encode()
            ),
        ),
        ("JSON nested 30,000 deep", instant(b"[" * 30000 + b"]" * 30000)),
        (
            "JSON object of 6,000 keys",
            instant(json.dumps({f"k{i}": i for i in range(6000)}).encode()),
        ),
        (
            "form-encoded body",
            instant(b"name=Ann&domain=x.com", "application/x-www-form-urlencoded"),
        ),
        (
            "100 KiB header",
            raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"),
        ),
        (
            "64 KiB query string",
            raw(
                b"GET /v2/email_finder/instant/queue_status?qid="
                + b"q" * 65536
                + b" HTTP/1.1\r\nHost: x\r\n\r\n"
            ),
        ),
        (
            "multipart without a closing boundary",
            raw(
                multipart(
                    b'--xx\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n\r\n'
                    + b"Name,Domain\r\n" * 20000
                )
            ),
        ),
        ("multipart of 20,000 parts", raw(multipart(many_parts + b"--xx--\r\n"))),
        ("XLSX zip bomb (1 GiB inflated)", upload(bomb, XLSX)),
        # Sent whole (bypass): its distinct rows are counted for the reservation.
        (
            f"CSV of {BIG_ROWS:,} rows, sent whole",
            upload(big, "text/csv", {"X-Gateway-Cache": "bypass"}),
        ),
    ]


async def measure(
    children: Children, port: int, session: aiohttp.ClientSession, base: str,
    send: Send | None, repeat: int,
) -> dict[str, Any]:  # fmt: skip
    prober = Prober(children, port)
    statuses: list[int] = []
    started = time.perf_counter()
    try:
        await asyncio.sleep(0.3)  # a few probes before the input
        for _ in range(repeat):
            if send is None:
                await asyncio.sleep(1.0)
            else:
                statuses.append(await send(session, base))
        await asyncio.sleep(0.2)
    finally:
        prober.stop()
    seconds = round(time.perf_counter() - started, 1)
    return {"statuses": statuses, "healthz_worst_ms": round(prober.worst * 1000, 1),
            "probes": prober.probes, "seconds": seconds}  # fmt: skip


async def run(repeat: int, work: Path, children: Children) -> list[dict[str, Any]]:
    sandbox = Sandbox(SandboxConfig(token="bench-bulk-upstream-token", spool_dir=work))  # noqa: S106 - the private sandbox's
    runner, upstream_port = await start_upstream(sandbox)
    try:
        redis_port = await start_redis(children, work)
        # Limits above the big CSV, so it is read to its end rather than refused by size.
        env = gateway_env(work, redis_port, upstream_port, rows=3 * BIG_ROWS,
                          file_bytes=100 * 2**20)  # fmt: skip
        gateway = await start_gateway(children, work, env, "hostile")
        report = []
        async with aiohttp.ClientSession() as session:
            cases: list[tuple[str, Send | None]] = [("baseline: nothing else sent", None)]
            cases += await asyncio.to_thread(inputs, work)
            for name, send in cases:
                figures = await measure(children, gateway.port, session, gateway.url, send, repeat)
                report.append({"input": name, **figures})
                print(f"hostile: {name}: {figures}", file=sys.stderr)
        children.stop(gateway.proc)
        return report
    finally:
        await runner.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    children = Children()
    try:
        with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
            report = asyncio.run(run(args.repeat, Path(tmp), children))
    finally:
        children.stop_all()
    server_errors = [r["input"] for r in report if any(s >= 500 for s in r["statuses"])]
    if args.json:
        print(json.dumps({"inputs": report, "server_errors": server_errors}, indent=2))
    else:
        width = max(len(r["input"]) for r in report)
        print(f"{'input':<{width}}  statuses          /healthz worst ms  probes")
        for r in report:
            statuses = ",".join(str(s) for s in r["statuses"]) or "-"
            print(f"{r['input']:<{width}}  {statuses:<16}  {r['healthz_worst_ms']:>17}  "
                  f"{r['probes']:>6}")  # fmt: skip
        print("FAIL" if server_errors else "PASS", "no 5xx answer", server_errors or "")
    return 1 if server_errors else 0


if __name__ == "__main__":
    sys.exit(main())
