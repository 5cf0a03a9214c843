"""Slow and idle connections are closed on time, by a real gateway process.

Slow-loris heads, stalled bodies and idle keep-alive connections each have
a deadline (GATEWAY_HEADER_TIMEOUT_SECONDS, GATEWAY_BODY_TIMEOUT_SECONDS,
GATEWAY_KEEPALIVE_TIMEOUT_SECONDS); nobody else waits while they are held.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import aiohttp
import pytest

from tests.servers import GatewayProcess

TIMEOUT_ENV = {
    "GATEWAY_SANDBOX": "1",
    "GATEWAY_HEADER_TIMEOUT_SECONDS": "1",
    "GATEWAY_BODY_TIMEOUT_SECONDS": "1",
    "GATEWAY_KEEPALIVE_TIMEOUT_SECONDS": "1.5",
    "GATEWAY_CREDITS_POLL_SECONDS": "0",
    "GATEWAY_QUEUE_POLL_SECONDS": "0",
}
HEAD = (
    b"POST /v2/email_finder/instant HTTP/1.1\r\nHost: gateway\r\n"
    b"Authorization: sandbox-demo-key\r\nContent-Type: application/json\r\n"
)
BODY = b'{"name": "Steven Morris", "domain": "apple.com"}'


@pytest.fixture(scope="module")
def process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    proc = GatewayProcess(TIMEOUT_ENV, tmp_path_factory.mktemp("conn")).start()
    yield proc
    proc.stop()


async def seconds_until_closed(reader: asyncio.StreamReader, limit: float) -> tuple[float, bytes]:
    """How long until the server closes the connection (and what it sent), at most `limit`."""
    started = time.monotonic()
    received = b""
    try:
        async with asyncio.timeout(limit):
            while chunk := await reader.read(65536):
                received += chunk
    except TimeoutError:
        pass
    return time.monotonic() - started, received


async def test_a_slow_loris_head_is_cut_off(process: GatewayProcess) -> None:
    """Headers trickling in a byte every 0.2 s: the connection is closed after ~1 s."""
    reader, writer = await asyncio.open_connection("127.0.0.1", process.port)

    async def trickle() -> None:
        for byte in HEAD:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.2)

    dripping = asyncio.create_task(trickle())
    elapsed, _ = await seconds_until_closed(reader, 5.0)
    dripping.cancel()
    writer.close()
    assert elapsed < 2.5, elapsed


async def test_a_stalled_body_is_answered_408(process: GatewayProcess) -> None:
    """The head is complete, the body stops halfway: 408 in the envelope after ~1 s."""
    reader, writer = await asyncio.open_connection("127.0.0.1", process.port)
    writer.write(HEAD + b"Content-Length: 100\r\n\r\n" + BODY[:10])
    await writer.drain()
    elapsed, received = await seconds_until_closed(reader, 5.0)
    writer.close()
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), received[:200]
    assert json.loads(body)["error"]["code"] == 9103
    assert elapsed < 4.0, elapsed


async def test_an_idle_keep_alive_connection_is_closed(process: GatewayProcess) -> None:
    """After an answer, a connection left idle is closed after the keep-alive timeout."""
    reader, writer = await asyncio.open_connection("127.0.0.1", process.port)
    writer.write(HEAD + f"Content-Length: {len(BODY)}\r\n\r\n".encode() + BODY)
    await writer.drain()
    first = await reader.readuntil(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200")
    elapsed, _ = await seconds_until_closed(reader, 6.0)
    writer.close()
    assert 1.0 < elapsed < 4.0, elapsed


async def test_slow_clients_do_not_delay_others(process: GatewayProcess) -> None:
    """Twenty connections that send nothing (or a partial head) cost others nothing."""
    held = []
    for i in range(20):
        _reader, writer = await asyncio.open_connection("127.0.0.1", process.port)
        if i % 2:
            writer.write(HEAD[:20])
        held.append(writer)
    async with aiohttp.ClientSession() as session:
        started = time.monotonic()
        async with session.post(
            f"{process.url}/v2/email_finder/instant", data=BODY,
            headers={"Authorization": "sandbox-demo-key", "Content-Type": "application/json"},
        ) as resp:  # fmt: skip
            assert resp.status == 200
        assert time.monotonic() - started < 1.0
        await asyncio.sleep(2.0)
        async with session.get(f"{process.url}/metrics") as resp:
            text = await resp.text()
    for writer in held:
        writer.close()
    closed = [line for line in text.splitlines()
              if line.startswith('clearout_gateway_connections_closed_total{reason="header_timeout"}')]  # fmt: skip
    assert closed and float(closed[0].split()[-1]) >= 10

