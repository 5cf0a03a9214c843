"""Real servers the tests run: a private redis-server on a free loopback port.

Never the machine's own Redis on 6379 (a user's machine has none, and tests
must not disturb it), never fakeredis.  `GATEWAY_TEST_REDIS_URL` points the
suite at an existing server instead, for machines that cannot spawn one.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0, *, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s")


class RedisServer:
    """A redis-server child process that tests can stop and start again."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed; run the README test command, which installs it"
            )
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.workdir),
                "--protected-mode", "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None


def external_redis_url() -> str | None:
    return os.environ.get("GATEWAY_TEST_REDIS_URL") or None


class GatewayProcess:
    """`python -m gateway serve` as a child process, for signal and memory tests."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.port = free_port()
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(self.port),
            "GATEWAY_DRAIN_DELAY_SECONDS": "0",
            **env,
        }
        self.log_path = workdir / f"gateway-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> GatewayProcess:
        import sys

        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve"],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_port(self.port, timeout=20)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"gateway did not start:\n{self.output()}") from None
        return self

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def peak_rss_kib(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise RuntimeError("no VmHWM in /proc status")

    def stop(self, timeout: float = 15) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.terminate()
        code = self.proc.wait(timeout=timeout)
        self.proc = None
        self._log.close()
        return code


class TcpProxy:
    """A loopback TCP relay that a test can cut, to lose one client's Redis at will.

    Cutting closes the listener and every relayed connection: the client on
    the near side sees its server vanish while everyone else's connections
    to the real server carry on, which is what a replica cut off by a
    network fault (or pointed at a master that just died) experiences.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: Any = None
        self._writers: set[Any] = set()

    async def start(self) -> TcpProxy:
        import asyncio

        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def _relay(self, reader: Any, writer: Any) -> None:
        import asyncio

        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: Any, dst: Any) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, RuntimeError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()


def _redis_node(binary: str, port: int, workdir: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _cli(port: int, *args: str) -> str:
    return subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=10,
        check=False,
    ).stdout  # fmt: skip


def _cluster_port() -> int:
    """A free port whose cluster-bus twin (port + 10000) is free and still a port."""
    import random

    for _ in range(200):
        port = random.randint(20000, 50000)  # noqa: S311 - picking a port
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


class RedisClusterServers:
    """Three redis-server masters joined into a Redis Cluster (no replicas)."""

    def __init__(self, workdir: Path, nodes: int = 3) -> None:
        binary = shutil.which("redis-server")
        if binary is None or shutil.which("redis-cli") is None:
            raise RuntimeError("redis-server and redis-cli are needed; run the README test command")
        self.binary = binary
        self.workdir = workdir
        self.ports = [_cluster_port() for _ in range(nodes)]
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self) -> None:
        for port in self.ports:
            node_dir = self.workdir / str(port)
            node_dir.mkdir(parents=True, exist_ok=True)
            self.procs.append(_redis_node(
                self.binary, port, node_dir, "--cluster-enabled", "yes",
                "--cluster-config-file", str(node_dir / "nodes.conf"),
            ))  # fmt: skip
        for port in self.ports:
            wait_port(port)
        addresses = [f"127.0.0.1:{p}" for p in self.ports]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-yes"],
            capture_output=True, timeout=30, check=True,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if all("cluster_state:ok" in _cli(p, "cluster", "info") for p in self.ports):
                return
            time.sleep(0.1)
        raise TimeoutError("the Redis Cluster did not become ready")

    def flush(self) -> None:
        for port in self.ports:
            _cli(port, "flushall")

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(timeout=10)
        self.procs.clear()


class RedisSentinelServers:
    """A master, one replica and one Sentinel watching them as `mymaster`.

    Failover is quick on purpose (the master is judged down after 500 ms),
    so a test can kill the master and see the replica promoted in seconds.
    """

    MASTER_NAME = "mymaster"

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is needed; run the README test command")
        self.binary = binary
        self.workdir = workdir
        self.master_port, self.replica_port, self.sentinel_port = (free_port() for _ in range(3))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        for role, port, extra in (
            ("master", self.master_port, ()),
            ("replica", self.replica_port, ("--replicaof", "127.0.0.1", str(self.master_port))),
        ):
            node_dir = self.workdir / role
            node_dir.mkdir(parents=True, exist_ok=True)
            self.procs[role] = _redis_node(self.binary, port, node_dir, *extra)
            wait_port(port)
        conf = self.workdir / "sentinel.conf"
        conf.write_text(
            f"port {self.sentinel_port}\nbind 127.0.0.1\ndir {self.workdir}\n"
            f"sentinel monitor {self.MASTER_NAME} 127.0.0.1 {self.master_port} 1\n"
            f"sentinel down-after-milliseconds {self.MASTER_NAME} 500\n"
            f"sentinel failover-timeout {self.MASTER_NAME} 2000\n"
        )
        self.procs["sentinel"] = subprocess.Popen(
            [self.binary, str(conf), "--sentinel"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_port(self.sentinel_port)
        self._wait(lambda: "master_link_status:up" in _cli(self.replica_port, "info", "replication"))

    @property
    def sentinels(self) -> tuple[tuple[str, int], ...]:
        return (("127.0.0.1", self.sentinel_port),)

    def master_address(self) -> str:
        return _cli(self.sentinel_port, "sentinel", "get-master-addr-by-name", self.MASTER_NAME)

    def kill_master(self) -> None:
        proc = self.procs.pop("master")
        proc.kill()
        proc.wait(timeout=10)

    def wait_promoted(self, timeout: float = 20.0) -> None:
        self._wait(lambda: str(self.replica_port) in self.master_address(), timeout)

    @staticmethod
    def _wait(done: Any, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done():
                return
            time.sleep(0.1)
        raise TimeoutError("Redis Sentinel setup did not reach the expected state")

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            proc.wait(timeout=10)
        self.procs.clear()
