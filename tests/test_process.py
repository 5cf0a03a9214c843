"""The gateway as an operator runs it: `clearout-gateway serve` in a child process.

Covers configuration errors (exit 2, one line), key hashing, the sandbox demo
key, graceful drain on SIGTERM, a 40 MiB bulk upload that must not grow the
gateway's memory by the file's size, and Clearout's own documented client
examples (Python `requests`, curl) with only URL and token changed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import requests
from aiohttp.test_utils import TestServer

from gateway.sandbox import Sandbox, SandboxConfig
from tests.conftest import UPSTREAM_TOKEN
from tests.servers import GatewayProcess

KEY = "process-test-key"


def run_cli(
    *args: str, env: dict[str, str] | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True, text=True, input=stdin, timeout=30,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )  # fmt: skip


def test_hash_key_and_new_key() -> None:
    out = run_cli("hash-key", "abc")
    assert out.returncode == 0
    assert out.stdout.strip() == hashlib.sha256(b"abc").hexdigest()
    assert run_cli("hash-key", stdin="abc\n").stdout.strip() == out.stdout.strip()
    fresh = run_cli("new-key").stdout.splitlines()
    key, digest = fresh[0].split()[-1], fresh[1].split()[-1]
    assert hashlib.sha256(key.encode()).hexdigest() == digest


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "CLEAROUT_API_TOKEN"),
        ({"CLEAROUT_API_TOKEN": "t"}, "GATEWAY_TEAMS_FILE"),
        ({"GATEWAY_SANDBOX": "1", "GATEWAY_PORT": "http"}, "GATEWAY_PORT"),
        ({"GATEWAY_SANDBOX": "maybe"}, "GATEWAY_SANDBOX"),
        ({"GATEWAY_SANDBOX": "1", "GATEWAY_TEAMS_FILE": "/nonexistent.yaml"}, "cannot read"),
        ({"CLEAROUT_API_TOKEN_FILE": "/nonexistent"}, "CLEAROUT_API_TOKEN_FILE"),
        ({"GATEWAY_SANDBOX": "1", "GATEWAY_REDIS_MODE": "sentinel"}, "GATEWAY_REDIS_SENTINELS"),
        ({"GATEWAY_SANDBOX": "1", "GATEWAY_LOG_FORMAT": "xml"}, "GATEWAY_LOG_FORMAT"),
    ],
)
def test_misconfiguration_is_one_line_and_exit_2(env: dict[str, str], message: str) -> None:
    out = run_cli("serve", env=env)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.stderr


@pytest.fixture
async def sandbox_upstream(tmp_path: Path) -> AsyncIterator[tuple[Sandbox, str]]:
    sandbox = Sandbox(SandboxConfig(token=UPSTREAM_TOKEN, slow_seconds=1.5, spool_dir=tmp_path))
    server = TestServer(sandbox.make_app(), host="127.0.0.1")
    await server.start_server()
    yield sandbox, f"http://127.0.0.1:{server.port}/v2"
    await server.close()


def teams_file(tmp_path: Path) -> Path:
    path = tmp_path / "teams.yaml"
    path.write_text(
        f"teams:\n  - name: ops\n    key_sha256: [{hashlib.sha256(KEY.encode()).hexdigest()}]\n"
    )
    return path


async def test_sigterm_drains_in_flight_requests(
    tmp_path: Path, sandbox_upstream: tuple[Sandbox, str]
) -> None:
    """Readiness turns false at once; a slow in-flight lookup still completes."""
    _, url = sandbox_upstream
    proc = GatewayProcess(
        {"CLEAROUT_API_TOKEN": UPSTREAM_TOKEN, "GATEWAY_UPSTREAM_URL": url,
         "GATEWAY_TEAMS_FILE": str(teams_file(tmp_path)),
         "GATEWAY_DRAIN_DELAY_SECONDS": "0.6", "GATEWAY_SHUTDOWN_GRACE_SECONDS": "10"},
        tmp_path,
    ).start()  # fmt: skip
    try:
        async with aiohttp.ClientSession() as session:
            slow = asyncio.create_task(
                session.post(f"{proc.url}/v2/email_finder/instant", headers={"Authorization": KEY},
                             json={"name": "Slow Person", "domain": "slow.test"})
            )  # fmt: skip
            await asyncio.sleep(0.3)
            assert proc.proc is not None
            proc.proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.2)
            async with session.get(f"{proc.url}/readyz") as ready:
                assert ready.status == 503
            resp = await slow
            assert resp.status == 200
            assert (await resp.json())["data"]["emails"][0][
                "email_address"
            ] == "slow.person@slow.test"
        # It exits by itself once drained (a second SIGTERM is not needed).
        code = proc.proc.wait(timeout=15)
        assert code == 0, proc.output()
    finally:
        proc.stop()
    log = proc.output()
    events = [json.loads(line)["event"] for line in log.splitlines() if line.startswith("{")]
    assert "draining" in events and "stopped" in events
    assert UPSTREAM_TOKEN not in log and KEY not in log


async def test_40_mib_upload_does_not_grow_gateway_memory(
    tmp_path: Path, sandbox_upstream: tuple[Sandbox, str]
) -> None:
    sandbox, url = sandbox_upstream
    proc = GatewayProcess(
        {"CLEAROUT_API_TOKEN": UPSTREAM_TOKEN, "GATEWAY_UPSTREAM_URL": url,
         "GATEWAY_TEAMS_FILE": str(teams_file(tmp_path)), "GATEWAY_SPOOL_DIR": str(tmp_path)},
        tmp_path,
    ).start()  # fmt: skip
    try:
        async with aiohttp.ClientSession() as session:
            await (await session.get(f"{proc.url}/healthz")).read()
            before = proc.peak_rss_kib()
            big = tmp_path / "big.csv"
            line = b"Steven Morris,apple.com,some padding to make rows wider than usual\n"
            with big.open("wb") as fh:
                fh.write(b"Name,Domain,Notes\n")
                fh.write(line * (40 * 1024 * 1024 // len(line) + 1))
            assert big.stat().st_size >= 40 * 1024 * 1024
            with big.open("rb") as fh:
                form = aiohttp.FormData()
                form.add_field("file", fh, filename="big.csv", content_type="text/csv")
                async with session.post(
                    f"{proc.url}/v2/email_finder/bulk", data=form, headers={"Authorization": KEY}
                ) as resp:
                    body = await resp.json()
            assert resp.status == 200, body
            assert body["status"] == "success"
            growth_mib = (proc.peak_rss_kib() - before) / 1024
        assert growth_mib < 16, f"gateway peak RSS grew {growth_mib:.1f} MiB for a 40 MiB upload"
        assert sandbox.calls_to("bulk") == 1
        assert not list(tmp_path.glob("bulk-*.upload")), "spooled upload left behind"
    finally:
        proc.stop()


async def test_seed_client_examples_work_against_the_sandbox(tmp_path: Path) -> None:
    """Clearout's Python and curl examples, with only URL and token changed."""
    proc = GatewayProcess({"GATEWAY_SANDBOX": "1"}, tmp_path).start()
    try:
        deadline = time.monotonic() + 5
        while "sandbox demo team key" not in proc.output() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        demo_key = proc.output().split("sandbox demo team key:")[1].split()[0]
        base = proc.url

        def python_example() -> dict[str, object]:
            url = f"{base}/v2/email_finder/instant"
            payload = '{ "name": "Steven Morris", "domain": "apple.com", "timeout": 30000 }'
            headers = {"Content-Type": "application/json", "Authorization": demo_key}
            response = requests.request("POST", url, data=payload, headers=headers, timeout=30)
            return response.json()  # type: ignore[no-any-return]

        body = await asyncio.to_thread(python_example)
        assert body["status"] == "success"
        assert body["data"]["emails"][0]["email_address"] == "steven.morris@apple.com"  # type: ignore[index]

        csv_path = tmp_path / "contacts.csv"
        # Someone the lookup above did not cache, so the list is still running
        # upstream when it is cancelled.
        csv_path.write_text("First Name,Last Name,Company Name\nAnn,Lee,Apple\n")

        def bulk_example() -> dict[str, object]:
            with csv_path.open("rb") as fh:
                response = requests.request(
                    "POST", f"{base}/v2/email_finder/bulk", files={"file": fh},
                    headers={"Authorization": demo_key}, timeout=30,
                )  # fmt: skip
            return response.json()  # type: ignore[no-any-return]

        list_id = (await asyncio.to_thread(bulk_example))["data"]["list_id"]  # type: ignore[index]

        def curl(*args: str) -> dict[str, object]:
            out = subprocess.run(["curl", "-sS", *args], capture_output=True, text=True,
                                 timeout=30, check=True)  # fmt: skip
            return json.loads(out.stdout)  # type: ignore[no-any-return]

        auth = ["-H", f"Authorization: {demo_key}"]
        found = curl("-X", "POST", f"{base}/v2/email_finder/instant", *auth,
                     "-H", "Content-Type: application/json",
                     "-d", '{ "name": "Steven Morris", "domain": "apple.com", "timeout": 30000 }')  # fmt: skip
        assert found["status"] == "success"
        progress = curl(
            "-X", "GET", f"{base}/v2/email_finder/bulk/progress_status?list_id={list_id}", *auth
        )
        assert progress["status"] == "success"
        cancel = curl("-X", "POST", f"{base}/v2/email_finder/list/cancel", *auth,
                      "-H", "Content-Type: application/json", "-d", f'{{"list_id": "{list_id}"}}')  # fmt: skip
        assert cancel["status"] == "success"
        download = curl("-X", "POST", f"{base}/v2/email_finder/download/result", *auth,
                        "-H", "Content-Type: application/json", "-d", f'{{"list_id": "{list_id}"}}')  # fmt: skip
        assert "data" in download, download
        link = download["data"]["url"]  # type: ignore[index]
        assert link.startswith(base + "/v2/email_finder/results/")  # served by the gateway
        result = subprocess.run(["curl", "-sS", "-f", link], capture_output=True, text=True,
                                timeout=30, check=True)  # fmt: skip
        assert result.stdout.splitlines()[0].startswith(
            "First Name,Last Name,Company Name,Clearout Finder"
        )
        remove = curl("-X", "POST", f"{base}/v2/email_finder/list/remove", *auth,
                      "-H", "Content-Type: application/json", "-d", f'{{"list_id": "{list_id}"}}')  # fmt: skip
        assert remove["status"] == "success"
        queued = curl("-X", "POST", f"{base}/v2/email_finder/instant", *auth,
                      "-H", "Content-Type: application/json",
                      "-d", '{"name": "Ann Lee", "domain": "queued.test"}')  # fmt: skip
        qid = queued["error"]["additional_info"]["queue_id"]  # type: ignore[index]
        status = curl("-X", "GET", f"{base}/v2/email_finder/instant/queue_status?qid={qid}",
                      *auth, "-H", "Content-Type: application/json")  # fmt: skip
        assert status["status"] == "success"
    finally:
        proc.stop()


async def test_sighup_reloads_the_teams_file(
    tmp_path: Path, sandbox_upstream: tuple[Sandbox, str]
) -> None:
    _, url = sandbox_upstream
    path = teams_file(tmp_path)
    proc = GatewayProcess(
        {"CLEAROUT_API_TOKEN": UPSTREAM_TOKEN, "GATEWAY_UPSTREAM_URL": url,
         "GATEWAY_TEAMS_FILE": str(path)},
        tmp_path,
    ).start()  # fmt: skip
    try:
        digest = hashlib.sha256(b"rotated-key").hexdigest()
        path.write_text(f"teams:\n  - name: ops\n    key_sha256: [{digest}]\n")
        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGHUP)
        async with aiohttp.ClientSession() as session:
            for _ in range(50):
                await asyncio.sleep(0.1)
                async with session.post(
                    f"{proc.url}/v2/email_finder/instant", headers={"Authorization": "rotated-key"},
                    json={"name": "Ann Lee", "domain": "apple.com"},
                ) as resp:  # fmt: skip
                    if resp.status == 200:
                        break
            assert resp.status == 200
            async with session.post(
                f"{proc.url}/v2/email_finder/instant", headers={"Authorization": KEY},
                json={"name": "Ann Lee", "domain": "apple.com"},
            ) as old:  # fmt: skip
                assert old.status == 401
    finally:
        proc.stop()
    assert '"teams_reloaded"' in proc.output()


async def test_metrics_also_on_a_separate_port(tmp_path: Path) -> None:
    """GATEWAY_METRICS_PORT serves /metrics there too (the main port keeps it)."""
    from tests.servers import free_port

    metrics_port = free_port()
    proc = GatewayProcess(
        {"GATEWAY_SANDBOX": "1", "GATEWAY_METRICS_PORT": str(metrics_port)}, tmp_path
    ).start()
    try:
        async with aiohttp.ClientSession() as session:
            for base in (f"http://127.0.0.1:{metrics_port}", proc.url):
                async with session.get(f"{base}/metrics") as resp:
                    assert resp.status == 200
                    assert "clearout_gateway_requests_total" in await resp.text()
    finally:
        proc.stop()
