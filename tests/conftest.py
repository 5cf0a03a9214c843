"""Shared fixtures: a real Redis, the sandbox as a real upstream, gateway clients.

The upstream in these tests is always a real HTTP server on loopback (the
sandbox app, or a purpose-built fake app), never a patched client.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web_runner import BaseRunner

from gateway import logging as gateway_logging
from gateway.http.app import create_app
from gateway.http.protocol import make_runner
from gateway.sandbox import Sandbox, SandboxConfig
from gateway.settings import Settings
from gateway.teams import Quota, Team, TeamDirectory, TeamRegistry, hash_key
from tests.servers import RedisServer, external_redis_url

UPSTREAM_TOKEN = "upstream-secret-token-3f9a0c"
ADMIN_TOKEN = "admin-secret-token-77b1"
KEYS = {
    "alpha": ("alpha-key-1", "alpha-key-2"),
    "beta": ("beta-key-1",),
}


def team(name: str, quota: Quota | None = None) -> Team:
    return Team(name, tuple(hash_key(k) for k in KEYS[name]), quota or Quota())


def contacts_csv(rows: list[tuple[str, str]]) -> bytes:
    """A bulk input file with a full-name and a domain column."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["Full Name", "Domain"])
    writer.writerows(rows)
    return out.getvalue().encode()


def auth(team_name: str = "alpha") -> dict[str, str]:
    return {"Authorization": KEYS[team_name][0]}


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer | str]:
    """One redis-server for the whole session (or GATEWAY_TEST_REDIS_URL)."""
    url = external_redis_url()
    if url:
        yield url
        return
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer | str) -> Iterator[str]:
    """The session Redis, flushed before each test that uses it."""
    url = redis_server if isinstance(redis_server, str) else redis_server.url
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    yield url


class LogCapture:
    """Everything the gateway logs during a test, as rendered JSON lines."""

    def __init__(self) -> None:
        self._buffer = io.StringIO()
        self._sink = gateway_logging.configure(
            "json", (UPSTREAM_TOKEN, ADMIN_TOKEN), stream=self._buffer, cache_loggers=False
        )

    def text(self) -> str:
        self._sink.flush()  # the app buffers lines while it runs
        return self._buffer.getvalue()


@pytest.fixture
def log_output() -> Iterator[LogCapture]:
    yield LogCapture()
    structlog.reset_defaults()


@pytest.fixture
def sandbox_config(tmp_path: Path) -> SandboxConfig:
    return SandboxConfig(
        token=UPSTREAM_TOKEN,
        queue_seconds=0.3,
        slow_seconds=0.5,
        bulk_seconds=0.6,
        spool_dir=tmp_path,
    )


@pytest.fixture
def sandbox(sandbox_config: SandboxConfig) -> Sandbox:
    return Sandbox(sandbox_config)


@pytest.fixture
async def upstream_url(sandbox: Sandbox) -> AsyncIterator[str]:
    """The sandbox served as the upstream on its own loopback port."""
    server = TestServer(sandbox.make_app(), host="127.0.0.1")
    await server.start_server()
    yield f"http://127.0.0.1:{server.port}/v2"
    await server.close()


@pytest.fixture
def settings(upstream_url: str, tmp_path: Path) -> Settings:
    return Settings(
        upstream_url=upstream_url,
        api_token=UPSTREAM_TOKEN,
        admin_token=ADMIN_TOKEN,
        spool_dir=tmp_path,
        drain_delay=0,
        upstream_timeout=5.0,
        upstream_timeout_margin=2.0,
        # Tests assert exact call counts; a loaded CI machine can be slower
        # than production's Redis timeout, which would turn into pass-through.
        redis_timeout=2.0,
        # Background pollers off unless a test turns them on: they would add
        # upstream calls that tests counting calls do not expect.
        credits_poll_interval=0,
        queue_poll_interval=0,
    )


GatewayFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


class GatewayTestServer(TestServer):
    """aiohttp's TestServer serving through the production runner and protocol.

    TestServer would cancel a handler whose caller hung up; production does
    not (a paid lookup in flight must finish and be cached), so neither do
    the tests.
    """

    def __init__(self, app: web.Application, settings: Settings, **kwargs: Any) -> None:
        super().__init__(app, host="127.0.0.1", **kwargs)
        self._settings = settings

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        kwargs.pop("handler_cancellation", None)
        return make_runner(self.app, self._settings, **kwargs)


@pytest.fixture
async def make_gateway(settings: Settings) -> AsyncIterator[GatewayFactory]:
    """Start gateway instances (same factory as production) on loopback ports."""
    clients: list[TestClient[web.Request, web.Application]] = []

    async def factory(
        teams: list[Team] | None = None, **overrides: Any
    ) -> TestClient[web.Request, web.Application]:
        directory = TeamDirectory(TeamRegistry(teams or [team("alpha"), team("beta")]))
        effective = replace(settings, **overrides)
        app = create_app(effective, teams=directory)
        client = TestClient(GatewayTestServer(app, effective))
        await client.start_server()
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.close()


@pytest.fixture
async def gateway(make_gateway: GatewayFactory) -> TestClient[web.Request, web.Application]:
    return await make_gateway()
