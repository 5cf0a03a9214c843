"""A real gateway process keeps its memory bounded whatever bulk file it is sent.

Peak RSS (`VmHWM`) is read from the process before and after each upload;
the growth is the figure the bound is on.  Before bounded reading, the
zip bomb took the process to 1.98 GB and a 2-million-row CSV of a team with
a quota cost +186 MB.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.sandbox import Sandbox, SandboxConfig
from tests.conftest import UPSTREAM_TOKEN
from tests.servers import GatewayProcess
from tests.test_tabular import build_bomb

KEY = "memory-test-key"
BOUND_MIB = 40
SAVER_BOUND_MIB = 60


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
