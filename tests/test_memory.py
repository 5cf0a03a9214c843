"""A real gateway process keeps its memory bounded whatever bulk file it is sent.

Peak RSS (`VmHWM`) is read from the process before and after each upload
(and, for a list answered partly from the cache, after its merge); the
growth is the figure the bound is on.  Before bounded reading, the zip bomb
took the process to 1.98 GB and a 2-million-row CSV of a team with a quota
cost +186 MB; before the merge loaded its answers in batches, merging a
200,000-row list with half its people cached cost +403 MiB.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import redis
from aiohttp.test_utils import TestServer

from gateway.lookup.cache import KEY_PREFIX
from gateway.lookup.entries import CachedAnswer, encode
from gateway.lookup.normalize import cache_key
from gateway.sandbox import Sandbox, SandboxConfig
from gateway.sandbox.people import lookup
from tests.conftest import UPSTREAM_TOKEN
from tests.servers import GatewayProcess
from tests.test_tabular import build_bomb

KEY = "memory-test-key"
BOUND_MIB = 40
SAVER_BOUND_MIB = 60
MERGE_ROWS = 200_000
MERGE_BOUND_MIB = 60
SLOW_PROBES = 3


@pytest.fixture
async def upstream(tmp_path: Path) -> AsyncIterator[tuple[Sandbox, str]]:
    sandbox = Sandbox(SandboxConfig(token=UPSTREAM_TOKEN, spool_dir=tmp_path, credits=10**9))
    server = TestServer(sandbox.make_app(), host="127.0.0.1")
    await server.start_server()
    yield sandbox, f"http://127.0.0.1:{server.port}/v2"
    await server.close()


def gateway(tmp_path: Path, url: str, **env: str) -> GatewayProcess:
    teams = tmp_path / "teams.yaml"
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    teams.write_text(
        f"teams:\n  - name: ops\n    key_sha256: [{digest}]\n"
        "    quota: {credits_per_day: 100000000}\n"
    )
    return GatewayProcess({
        "CLEAROUT_API_TOKEN": UPSTREAM_TOKEN, "GATEWAY_UPSTREAM_URL": url,
        "GATEWAY_TEAMS_FILE": str(teams), "GATEWAY_SPOOL_DIR": str(tmp_path),
        "GATEWAY_CREDITS_POLL_SECONDS": "0", "GATEWAY_QUEUE_POLL_SECONDS": "0", **env,
    }, tmp_path).start()  # fmt: skip


async def upload(
    proc: GatewayProcess, path: Path, content_type: str, headers: dict[str, str] | None = None
) -> tuple[int, float]:
    """(HTTP status, peak-RSS growth in MiB) for one upload of `path`."""
    async with aiohttp.ClientSession() as session:
        await (await session.get(f"{proc.url}/healthz")).read()
        before = proc.peak_rss_kib()
        with path.open("rb") as fh:
            form = aiohttp.FormData()
            form.add_field("file", fh, filename=path.name, content_type=content_type)
            async with session.post(
                f"{proc.url}/v2/email_finder/bulk", data=form,
                headers={"Authorization": KEY, **(headers or {})},
            ) as resp:
                await resp.read()
                status = resp.status
    return status, (proc.peak_rss_kib() - before) / 1024


async def test_a_zip_bomb_is_refused_within_the_memory_bound(
    tmp_path: Path, upstream: tuple[Sandbox, str]
) -> None:
    """A ~7 MiB .xlsx inflating to 1 GiB: 413 in the envelope, never sent on, RSS bounded."""
    sandbox, url = upstream
    bomb = build_bomb(tmp_path / "bomb.xlsx", 1024 * 1024 * 1024)
    proc = gateway(tmp_path, url)
    try:
        status, growth = await upload(
            proc, bomb, "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
        )
    finally:
        proc.stop()
    print(f"zip bomb ({bomb.stat().st_size / 2**20:.1f} MiB): peak RSS +{growth:.1f} MiB")
    assert status == 413
    assert growth < BOUND_MIB, f"peak RSS grew {growth:.1f} MiB"
    assert sandbox.calls_to("bulk") == 0


def people_csv(path: Path, rows: int) -> Path:
    with path.open("w") as fh:
        fh.write("Full Name,Domain\n")
        fh.writelines(f"Person {i:07d},domain{i % 1000}.com\n" for i in range(rows))
    return path


async def test_two_million_rows_are_counted_within_the_memory_bound(
    tmp_path: Path, upstream: tuple[Sandbox, str]
) -> None:
    """Distinct rows of a 2,000,000-row CSV sent whole (a team with a quota) are counted on
    disk."""
    sandbox, url = upstream
    big = people_csv(tmp_path / "two-million.csv", 2_000_000)
    proc = gateway(
        tmp_path, url, GATEWAY_MAX_BULK_ROWS="3000000", GATEWAY_MAX_BULK_BYTES=str(200 * 2**20)
    )
    try:
        status, growth = await upload(proc, big, "text/csv", {"X-Gateway-Cache": "bypass"})
    finally:
        proc.stop()
    print(f"2M-row CSV ({big.stat().st_size / 2**20:.1f} MiB): peak RSS +{growth:.1f} MiB")
    assert status == 200
    assert growth < BOUND_MIB, f"peak RSS grew {growth:.1f} MiB"
    assert sandbox.calls_to("bulk") == 1


async def test_a_large_list_is_pre_answered_within_the_memory_bound(
    tmp_path: Path, upstream: tuple[Sandbox, str]
) -> None:
    """The bulk saver keeps its state on disk: 300,000 rows cost a bounded, flat amount."""
    sandbox, url = upstream
    big = people_csv(tmp_path / "list.csv", 300_000)
    proc = gateway(tmp_path, url, GATEWAY_MAX_BULK_BYTES=str(200 * 2**20))
    try:
        status, growth = await upload(proc, big, "text/csv")
    finally:
        proc.stop()
    print(f"300k-row list through the saver: peak RSS +{growth:.1f} MiB")
    assert status == 200
    assert growth < SAVER_BOUND_MIB, f"peak RSS grew {growth:.1f} MiB"
    assert sandbox.calls_to("bulk") == 1


def letters(i: int) -> str:
    """A distinct word of letters per index (the sandbox finds letter-only names)."""
    word = ""
    for _ in range(4):
        i, rest = divmod(i, 26)
        word += chr(ord("a") + rest)
    return word.capitalize()


def mixed_people(rows: int) -> list[tuple[str, str]]:
    return [(f"Pat {letters(i)}", f"corp{i % 300}.example.com") for i in range(rows)]


def prefill(redis_url: str, people: list[tuple[str, str]]) -> None:
    """Cache entries for `people`, as the gateway caches the sandbox's found answers."""
    client = redis.Redis.from_url(redis_url)
    try:
        for start in range(0, len(people), 5000):
            pipe = client.pipeline(transaction=False)
            for name, domain in people[start : start + 5000]:
                data = lookup(name, domain).data
                body = json.dumps({"status": "success", "data": data}).encode()
                pipe.psetex(KEY_PREFIX + cache_key(name, domain), 3_600_000,
                            encode(CachedAnswer(body, 4, True)))  # fmt: skip
            pipe.execute()
    finally:
        client.close()


async def until_completed(proc: GatewayProcess, list_id: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            async with session.get(
                f"{proc.url}/v2/email_finder/bulk/progress_status",
                params={"list_id": list_id}, headers={"Authorization": KEY},
            ) as resp:  # fmt: skip
                state = (await resp.json())["data"]["progress_status"]
            if state == "completed":
                return
            assert state == "running", state
            await asyncio.sleep(0.5)
    raise AssertionError(f"list {list_id} not merged after {timeout:.0f} s")


# Probes /healthz every 50 ms until its stdin closes, then prints each answer's time in
# ms.  A process of its own: a thread of this one would time this process's event loop
# (the sandbox answering the gateway) as much as the gateway's.
PROBE = """
import http.client, select, sys, time
conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=60)
while not select.select([sys.stdin], [], [], 0.05)[0]:
    started = time.perf_counter()
    conn.request("GET", "/healthz")
    conn.getresponse().read()
    print((time.perf_counter() - started) * 1000)
"""


class Prober:
    """How long a gateway took to answer /healthz, every 50 ms between `start` and `stop`."""

    def __init__(self, port: int) -> None:
        self.port = port

    def start(self) -> Prober:
        self.proc = subprocess.Popen([sys.executable, "-c", PROBE, str(self.port)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
        return self

    def stop(self) -> list[float]:
        out, _ = self.proc.communicate(timeout=60)
        return [float(line) for line in out.split()]


async def test_merging_a_large_half_cached_list_stays_within_the_memory_bound(
    tmp_path: Path, upstream: tuple[Sandbox, str], redis_url: str
) -> None:
    """200,000 rows, half of them people the cache knows: the merge (known answers, upstream's
    result, the harvest) holds its state on disk, so its peak RSS growth is bounded; and it
    runs off the event loop, so /healthz stays quick meanwhile (a rare slow probe is this
    shared machine's; before, one probe in 25 took over 50 ms while merging)."""
    _, url = upstream
    people = mixed_people(MERGE_ROWS)
    prefill(redis_url, people[::2])
    path = tmp_path / "half-known.csv"
    with path.open("w") as fh:
        fh.write("Full Name,Domain\n")
        fh.writelines(f"{name},{domain}\n" for name, domain in people)
    proc = gateway(tmp_path, url, GATEWAY_REDIS_URL=redis_url,
                   GATEWAY_MAX_BULK_BYTES=str(200 * 2**20))  # fmt: skip
    try:
        prober = Prober(proc.port).start()
        async with aiohttp.ClientSession() as session:
            with path.open("rb") as fh:
                form = aiohttp.FormData()
                form.add_field("file", fh, filename=path.name, content_type="text/csv")
                async with session.post(f"{proc.url}/v2/email_finder/bulk", data=form,
                                        headers={"Authorization": KEY}) as resp:  # fmt: skip
                    assert resp.status == 200, await resp.text()
                    list_id = (await resp.json())["data"]["list_id"]
        after_upload = proc.peak_rss_kib()
        upload_probes, prober = prober.stop(), Prober(proc.port).start()
        await until_completed(proc, list_id, timeout=600)
        growth = (proc.peak_rss_kib() - after_upload) / 1024
        merge_probes = prober.stop()
    finally:
        proc.stop()
    slow = [sum(t > 50 for t in p) for p in (upload_probes, merge_probes)]
    print(f"merge of a {MERGE_ROWS:,}-row half-cached list: peak RSS +{growth:.1f} MiB; "
          f"/healthz worst {max(upload_probes):.0f} ms uploading ({slow[0]}/{len(upload_probes)} "
          f"over 50), {max(merge_probes):.0f} ms merging ({slow[1]}/{len(merge_probes)} over 50)")
    assert growth < MERGE_BOUND_MIB, f"peak RSS grew {growth:.1f} MiB while merging"
    assert slow[1] <= SLOW_PROBES, f"{slow[1]} /healthz probes over 50 ms while merging"
