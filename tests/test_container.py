"""The image, built from the committed tree with podman and run the way the chart runs it.

No Docker engine here, and Docker Hub is out of reach: the base is a
debootstrapped Debian bookworm (`.ci/base-image.sh`, cached in podman's store),
passed as `--build-arg BASE_IMAGE`, which the Dockerfile supports for exactly
this. Podman uses `.ci/podman/containers.conf` (runc, cgroupfs, a file event
log, ulimits the sandbox allows) through CONTAINERS_CONF; /etc is untouched.

The build context is `git archive HEAD`, so files not committed never reach
the image. The container runs with a read-only root, /tmp on tmpfs, no
capabilities and no-new-privileges, published on 127.0.0.1 only, and must:
run as a non-root uid, pass its own HEALTHCHECK, answer a sandbox lookup
(MISS, then HIT), /metrics and /readyz, drain and exit 0 on SIGTERM within
the chart's terminationGracePeriodSeconds, and carry no compiler or pip.
Build time and image size are printed and written to
`<pytest basetemp>/container-image.json`.
"""

from __future__ import annotations

import contextlib
import faulthandler
import http.client
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CONTAINERS_CONF = ROOT / ".ci" / "podman" / "containers.conf"
BASE_IMAGE_SCRIPT = ROOT / ".ci" / "base-image.sh"
CHART_VALUES = ROOT / "helm" / "clearout-gateway" / "values.yaml"
IMAGE = "localhost/clearout-gateway:ci"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
PROXY_ARGS = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
SANDBOX_KEY = "sandbox-demo-key"
DRAIN_DELAY_SECONDS = 1
# What the gateway adds on top of its base (venv, user): a regression guard.
MAX_ADDED_MB = 80

pytestmark = pytest.mark.container


@dataclass
class Built:
    image: str
    base_image: str
    commit: str
    base_seconds: float
    base_cached: bool
    build_seconds: float
    size_bytes: int
    base_size_bytes: int

    @property
    def size_mb(self) -> float:
        return self.size_bytes / 1e6


# --- podman ------------------------------------------------------------------


def podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def podman(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["podman", *args],
        env=podman_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        pytest.fail(f"podman {' '.join(args[:3])} ... exited {result.returncode}:\n{result.stderr}")
    return result


def is_root() -> bool:
    return os.geteuid() == 0


def podman_unavailable() -> str | None:
    """Why podman cannot run here, or None. As root it is installed (.ci/base-image.sh does)."""
    if shutil.which("podman") is None:
        if is_root() and shutil.which("apt-get"):
            return None
        return (
            "podman is not installed and cannot be installed without root "
            "(sudo apt-get install -y podman runc debootstrap, or run bash .ci/test.sh as root)"
        )
    if not is_root():
        probe = subprocess.run(
            ["podman", "info"], env=podman_env(), capture_output=True, text=True, check=False
        )
        if probe.returncode != 0:
            return f"podman cannot run for this user: {probe.stderr.strip()[-300:]}"
    return None


@contextlib.contextmanager
def long_step(seconds: float) -> Iterator[None]:
    """Re-arm the suite's faulthandler_timeout for a step known to be slow (a build)."""
    faulthandler.cancel_dump_traceback_later()
    if sys.__stderr__ is not None:
        faulthandler.dump_traceback_later(seconds, exit=False, file=sys.__stderr__)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def report(request: pytest.FixtureRequest, line: str) -> None:
    """A line in the CI log even without -s: written past pytest's output capture."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    terminal = request.config.pluginmanager.getplugin("terminalreporter")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        if terminal is not None:
            terminal.write_line(line)
        else:
            print(line, file=sys.stderr)


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def committed_context(target: Path) -> str:
    """`git archive HEAD` unpacked into target; returns the commit."""
    try:
        commit = git("rev-parse", "HEAD")
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        pytest.fail(f"the image is built from the committed tree, but git cannot tell HEAD: {exc}")
    target.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit], cwd=ROOT, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return commit


def image_size(image: str) -> int:
    return int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout.strip())


@pytest.fixture(scope="module")
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Built:
    reason = podman_unavailable()
    if reason:
        pytest.skip(reason)

    with long_step(900):
        started = time.monotonic()
        base = subprocess.run(
            ["bash", str(BASE_IMAGE_SCRIPT)],
            env=podman_env(),
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        base_seconds = time.monotonic() - started
        if base.returncode != 0 and not is_root():
            pytest.skip(f"no base image, and this user cannot make one: {base.stderr[-300:]}")
        if base.returncode != 0:
            pytest.fail(f".ci/base-image.sh failed:\n{base.stderr[-3000:]}")
        base_image = base.stdout.strip().splitlines()[-1]
        base_cached = "debootstrap" not in base.stderr

        context = tmp_path_factory.mktemp("image") / "context"
        commit = committed_context(context)
        changed = git("status", "--porcelain", "--", "Dockerfile", ".dockerignore", "gateway")
        if changed:
            report(request, "image: built from HEAD; uncommitted changes are not in it:")
            for line in changed.splitlines():
                report(request, f"  {line}")

        previous = podman("image", "inspect", "--format", "{{.Id}}", IMAGE, check=False)
        command = ["build", "--format", "docker", "--tag", IMAGE]
        command += ["--build-arg", f"BASE_IMAGE={base_image}"]
        command += [
            f"--build-arg={name}={os.environ[name]}" for name in PROXY_ARGS if name in os.environ
        ]
        if CA_BUNDLE.is_file():
            # pip in RUN trusts the host's CAs (a TLS-inspecting proxy's included).
            command += ["--volume", f"{CA_BUNDLE}:{CA_BUNDLE}:ro"]
        started = time.monotonic()
        build = podman(*command, str(context), timeout=900, check=False)
        build_seconds = time.monotonic() - started
        log = tmp_path_factory.getbasetemp() / "container-build.log"
        log.write_text(build.stdout + build.stderr, encoding="utf-8")
        if build.returncode != 0:
            pytest.fail(
                f"podman build failed (log: {log}):\n{(build.stdout + build.stderr)[-4000:]}"
            )

    current = podman("image", "inspect", "--format", "{{.Id}}", IMAGE).stdout.strip()
    old = previous.stdout.strip()
    if previous.returncode == 0 and old and old != current:
        podman("rmi", old, check=False)  # the last run's image, now untagged

    result = Built(
        image=IMAGE,
        base_image=base_image,
        commit=commit,
        base_seconds=round(base_seconds, 1),
        base_cached=base_cached,
        build_seconds=round(build_seconds, 1),
        size_bytes=image_size(IMAGE),
        base_size_bytes=image_size(base_image),
    )
    record = tmp_path_factory.getbasetemp() / "container-image.json"
    record.write_text(json.dumps({**asdict(result), "size_mb": round(result.size_mb, 1)}, indent=2))
    base_note = "cached" if base_cached else f"debootstrapped in {base_seconds:.0f} s"
    report(
        request,
        f"image: built in {build_seconds:.0f} s, {result.size_mb:.0f} MB "
        f"(base {base_image}, {result.base_size_bytes / 1e6:.0f} MB, {base_note}); "
        f"figures in {record}",
    )
    return result


# --- a running container ---------------------------------------------------------


def shutdown_grace() -> float:
    """The chart's default config.shutdownGraceSeconds (GATEWAY_SHUTDOWN_GRACE_SECONDS)."""
    values = yaml.safe_load(CHART_VALUES.read_text(encoding="utf-8"))
    return float(values["config"]["shutdownGraceSeconds"])


def chart_grace(drain: float) -> int:
    """The chart's terminationGracePeriodSeconds: drain delay + shutdown grace + 5 s."""
    return math.ceil(drain) + math.ceil(shutdown_grace()) + 5


@dataclass
class Container:
    name: str
    port: int

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr


@contextlib.contextmanager
def run_container(image: str, drain: float = DRAIN_DELAY_SECONDS) -> Iterator[Container]:
    """The image as the chart runs it: read-only root, tmpfs /tmp, no capabilities."""
    name = f"clearout-gateway-test-{uuid.uuid4().hex[:8]}"
    podman(
        "run", "--detach", "--name", name,
        "--read-only", "--tmpfs", "/tmp",
        "--cap-drop=ALL", "--security-opt", "no-new-privileges",
        "--env", "GATEWAY_SANDBOX=1",
        "--env", "GATEWAY_HOST=0.0.0.0",
        "--env", f"GATEWAY_DRAIN_DELAY_SECONDS={drain}",
        "--env", f"GATEWAY_SHUTDOWN_GRACE_SECONDS={shutdown_grace()}",
        "--env", "GATEWAY_SPOOL_DIR=/tmp",
        "--publish", "127.0.0.1::8080",
        image,
    )  # fmt: skip
    try:
        mapped = podman("port", name, "8080/tcp").stdout.strip().splitlines()[0]
        host, _, port = mapped.rpartition(":")
        assert host == "127.0.0.1", f"published on {mapped}, not loopback only"
        container = Container(name, int(port))
        deadline = time.monotonic() + 30
        while True:
            try:
                if container.request("GET", "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            state = podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
            if state != "running" or time.monotonic() > deadline:
                pytest.fail(f"the gateway did not come up ({state}):\n{container.logs()[-3000:]}")
            time.sleep(0.2)
        yield container
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)


@pytest.fixture(scope="module")
def served(built: Built) -> Iterator[Container]:
    """One container for the tests that only look (the SIGTERM test runs its own)."""
    with run_container(built.image) as container:
        yield container


# --- the tests -----------------------------------------------------------------


def test_image_metadata(built: Built) -> None:
    """Docker format (so HEALTHCHECK survives), numeric non-root user, `clearout-gateway serve`."""
    inspected: dict[str, Any] = json.loads(podman("image", "inspect", built.image).stdout)[0]
    config = inspected["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["clearout-gateway"] and config["Cmd"] == ["serve"]
    assert "8080/tcp" in config["ExposedPorts"]
    # Podman shows the HEALTHCHECK beside Config; an OCI-format build drops it.
    healthcheck = inspected.get("Healthcheck") or config.get("Healthcheck")
    assert healthcheck and healthcheck["Test"][:2] == ["CMD", "python3"]
    added_mb = (built.size_bytes - built.base_size_bytes) / 1e6
    assert added_mb < MAX_ADDED_MB, f"the gateway adds {added_mb:.0f} MB to its base"


def test_process_runs_as_non_root(served: Container) -> None:
    """The gateway's uid inside the container is the image's 10001, never 0."""
    uid = podman("exec", served.name, "id", "-u").stdout.strip()
    assert uid == "10001"
    # Every process of the container, as the host's ps sees it (no ps in the image).
    users = podman("top", served.name, "user").stdout.split()[1:]
    assert users and "root" not in users, f"processes run as {users}"


def test_healthcheck_reports_healthy(served: Container) -> None:
    """`podman healthcheck run` executes the image's own HEALTHCHECK: healthy."""
    result = podman("healthcheck", "run", served.name, check=False)
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "unhealthy" not in result.stdout


def test_sandbox_lookup_misses_then_hits(served: Container) -> None:
    """The same sandbox lookup twice: 200 MISS from the built-in upstream, then 200 HIT."""
    body = json.dumps({"name": "Steven Morris", "domain": "apple.com"}).encode()
    headers = {"Authorization": SANDBOX_KEY, "Content-Type": "application/json"}
    first = served.request("POST", "/v2/email_finder/instant", body, headers)
    assert first[0] == 200, first[2][:500]
    assert first[1].get("X-Cache") == "MISS"
    assert json.loads(first[2])["data"]["emails"][0]["email_address"] == "steven.morris@apple.com"
    second = served.request("POST", "/v2/email_finder/instant", body, headers)
    assert second[0] == 200
    assert second[1].get("X-Cache") == "HIT"
    assert json.loads(second[2]) == json.loads(first[2])


def test_metrics_and_readiness_answer(served: Container) -> None:
    """/readyz is 200 (no Redis configured) and /metrics serves the gateway's metrics."""
    ready = served.request("GET", "/readyz")
    assert ready[0] == 200, ready[2][:500]
    metrics = served.request("GET", "/metrics")
    assert metrics[0] == 200
    assert b"clearout_gateway_" in metrics[2]


def test_byte_code_is_precompiled(served: Container) -> None:
    """The read-only root cannot cache byte code: the image's own .pyc files are used."""
    result = podman("exec", served.name, "python3", "-v", "-c", "import gateway.cli")
    loaded = re.findall(r"code object from '?(/opt/venv/[^'\s]+)", result.stderr)
    assert loaded, "python -v showed no module of the venv"
    from_source = [path for path in loaded if path.endswith(".py")]
    assert from_source == [], f"compiled at start-up: {from_source[:5]}"


def test_no_compiler_or_pip_in_the_image(served: Container) -> None:
    """No cc, gcc or pip in the final image: nothing can be built or installed at run time."""
    tools = ("cc", "gcc", "x86_64-linux-gnu-gcc", "c++", "make", "pip", "pip3")
    script = "for t in " + " ".join(tools) + '; do command -v "$t" || true; done'
    found = podman("exec", served.name, "/bin/sh", "-c", script).stdout.split()
    assert found == [], f"present in the image: {found}"


def test_sigterm_drains_and_exits_zero_within_the_grace_period(built: Built) -> None:
    """SIGTERM: /readyz turns 503 while serving, then exit 0 before Kubernetes would SIGKILL."""
    drain = 3
    grace = chart_grace(drain)
    with run_container(built.image, drain=drain) as container:
        started = time.monotonic()
        podman("kill", "--signal", "TERM", container.name)
        not_ready = 200
        while not_ready == 200 and time.monotonic() - started < drain:
            not_ready = container.request("GET", "/readyz")[0]
        still_alive = container.request("GET", "/healthz")[0]
        waited = podman("wait", container.name, timeout=grace + 10, check=False)
        elapsed = time.monotonic() - started
        logs = container.logs()
        assert waited.returncode == 0, waited.stderr
        assert waited.stdout.strip() == "0", f"exit code {waited.stdout.strip()}:\n{logs[-2000:]}"
    assert not_ready == 503, "readiness must turn false first thing on SIGTERM"
    assert still_alive == 200, "the listener stays open during the drain delay"
    assert drain <= elapsed < grace, f"stopped after {elapsed:.1f} s, grace {grace} s"
    assert '"event":"draining"' in logs and '"event":"stopped"' in logs
