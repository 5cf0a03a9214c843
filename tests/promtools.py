"""A throwaway Prometheus server for tests, and readers for our rule files.

``start_prometheus`` runs the real ``prometheus`` binary (Debian's
``prometheus`` package) on a free loopback port with its storage under the
test's ``tmp_path``, scraping the given targets; it yields a small client
(``query``, ``targets``, ``wait_target_up``) and stops the server on exit.
``rule_expressions`` lists the alerts of a Prometheus rules file so a test can
evaluate each expression against that server. Only the standard library and
PyYAML are used; nothing here runs at import time.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

_HTTP_TIMEOUT = 5.0
# A cold TSDB on a loaded CI machine takes a few seconds; 30 s is a hang.
_STARTUP_TIMEOUT = 30.0


def load_dashboard_module() -> ModuleType:
    """The ``clearout_dashboard`` package from grafana/, imported as a package.

    grafana/ is a script directory, not on ``sys.path``; loading the package
    from its ``__init__.py`` (with its directory as the submodule search path)
    lets its relative imports work without touching ``sys.path``. Registered
    under its own name, so every test module shares the same import.
    """
    name = "clearout_dashboard"
    if name in sys.modules:
        return sys.modules[name]
    package = Path(__file__).resolve().parent.parent / "grafana" / name
    spec = importlib.util.spec_from_file_location(
        name, package / "__init__.py", submodule_search_locations=[str(package)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


class PrometheusError(RuntimeError):
    """Prometheus answered, but not with ``"status": "success"``."""


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _get(url: str) -> tuple[int, bytes]:
    # Only ever called with http://127.0.0.1 URLs built in this module.
    try:
        with urllib.request.urlopen(url, timeout=_HTTP_TIMEOUT) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        # The API reports bad queries as 400/422 with a JSON error body.
        try:
            return exc.code, exc.read()
        finally:
            exc.close()


@dataclass
class PrometheusServer:
    """A running Prometheus: its base URL and a few HTTP API calls."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>`` and return ``data``; raise unless it succeeded."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        status, body = _get(f"{self.url}/api/v1/{path}{query}")
        try:
            payload = json.loads(body)
        except ValueError as exc:
            raise PrometheusError(f"{path}: HTTP {status}, not JSON: {body[:200]!r}") from exc
        if payload.get("status") != "success":
            raise PrometheusError(
                f"{path} {params}: {payload.get('errorType')}: {payload.get('error')}"
            )
        return payload["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Evaluate ``expr`` now; return the result series (``metric``, ``value``).

        A scalar or string result comes back as one series without labels.
        """
        data = self.api("query", query=expr)
        if data["resultType"] in ("vector", "matrix"):
            result: list[dict[str, Any]] = data["result"]
            return result
        return [{"metric": {}, "value": data["result"]}]

    def targets(self) -> list[dict[str, Any]]:
        """The active scrape targets with their health and last error."""
        active: list[dict[str, Any]] = self.api("targets", state="active")["activeTargets"]
        return active

    def wait_target_up(self, timeout: float = 30.0, job: str | None = None) -> list[dict[str, Any]]:
        """Wait until every active target (of ``job``, if given) was scraped OK."""
        deadline = time.monotonic() + timeout
        while True:
            targets = [
                target
                for target in self.targets()
                if job is None or target["labels"].get("job") == job
            ]
            if targets and all(target["health"] == "up" for target in targets):
                return targets
            if time.monotonic() > deadline:
                states = [(t["scrapeUrl"], t["health"], t.get("lastError", "")) for t in targets]
                raise TimeoutError(f"targets not up after {timeout}s: {states}")
            time.sleep(0.2)

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def _config(
    targets: Sequence[str], job: str, scrape_interval: str, rule_files: Sequence[Path]
) -> dict[str, Any]:
    return {
        "global": {
            "scrape_interval": scrape_interval,
            # Must not exceed the interval; Prometheus' default (10s) would.
            "scrape_timeout": scrape_interval,
            "evaluation_interval": scrape_interval,
        },
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": list(targets)}]}],
    }


def _wait_ready(server: PrometheusServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"prometheus exited with {server.process.returncode}:\n{server.log_tail()}"
            )
        try:
            status, _ = _get(f"{server.url}/-/ready")
        except OSError:
            status = 0
        if status == 200:
            return
        time.sleep(0.1)
    raise TimeoutError(f"prometheus not ready after {timeout}s:\n{server.log_tail()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def start_prometheus(
    tmp_path: Path,
    targets: list[str],
    scrape_interval: str = "1s",
    *,
    job: str = "gateway",
    port: int | None = None,
    rule_files: Sequence[Path] = (),
) -> Iterator[PrometheusServer]:
    """Run ``prometheus`` scraping ``targets`` (``host:port``) as job ``job``.

    Listens on 127.0.0.1:``port`` (a free port when None; pass one to let the
    server scrape itself), keeps its TSDB in ``tmp_path``, loads
    ``rule_files`` (evaluated every ``scrape_interval``), and is stopped —
    terminate, then kill — when the block exits.
    """
    binary = shutil.which("prometheus")
    if binary is None:
        raise RuntimeError(
            "`prometheus` is not on PATH: install it (Debian: apt-get install prometheus)"
        )
    port = free_port() if port is None else port
    workdir = tmp_path / "prometheus"
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "prometheus.yml"
    config_path.write_text(
        yaml.safe_dump(_config(targets, job, scrape_interval, rule_files), sort_keys=False),
        encoding="utf-8",
    )
    log_path = workdir / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
        try:
            server = PrometheusServer(f"http://127.0.0.1:{port}", process, log_path)
            _wait_ready(server, _STARTUP_TIMEOUT)
            yield server
        finally:
            _stop(process)


def rule_expressions(path: Path | str) -> list[tuple[str, str]]:
    """``(alert name, expr)`` for every alerting rule in a Prometheus rules file."""
    document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    return [
        (rule["alert"], rule["expr"])
        for group in document["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]
