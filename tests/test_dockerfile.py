"""The Dockerfile and .dockerignore build a small, locked-down, reproducible image.

No Docker engine is needed: the Dockerfile is parsed into stages and
instructions and checked statically, and the HEALTHCHECK command is run
against a loopback HTTP server (tests/test_container.py builds and runs the
real image with podman). What is pinned: an exact base image version behind a
BASE_IMAGE build argument that both stages use (so CI can build on a
debootstrapped Debian), locked wheels only and no compiler anywhere, a numeric
non-root user matching the Helm chart's runAsUser, exec-form ENTRYPOINT/CMD
running `clearout-gateway serve`, nothing that only the official Python image
has, no secret-looking build arguments or environment, and a build context
without history or tests.
"""

from __future__ import annotations

import contextlib
import fnmatch
import http.server
import json
import re
import shlex
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CHART_VALUES = ROOT / "helm" / "clearout-gateway" / "values.yaml"

ARG_REFERENCE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
COMPILERS = re.compile(
    r"(?<![\w-])(gcc|g\+\+|clang|cc|c\+\+|build-essential|make|cmake|[\w.+]+-dev)(?![\w-])"
)
SECRET_NAME = re.compile(r"TOKEN|SECRET|KEY|PASSW(OR)?D|CREDENTIAL", re.IGNORECASE)
EXACT_TAG = re.compile(r"^\d+\.\d+\.\d+(?:-[a-z0-9.-]+)?$")


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    line: int
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


def parse_instructions(text: str) -> list[Instruction]:
    """Instructions with line continuations joined and comments dropped."""
    instructions: list[Instruction] = []
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # comment lines are dropped even inside a continuation
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        pending += line
        keyword, _, args = pending.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
        pending = ""
    assert not pending, "Dockerfile ends inside a line continuation"
    return instructions


def global_args(text: str) -> dict[str, str]:
    """`ARG NAME=default` lines before the first FROM: what FROM lines may refer to."""
    found: dict[str, str] = {}
    for instruction in parse_instructions(text):
        if instruction.keyword == "FROM":
            break
        assert instruction.keyword == "ARG", (
            f"line {instruction.line}: only ARG may come before the first FROM"
        )
        name, _, default = instruction.args.partition("=")
        found[name.strip()] = default.strip().strip('"')
    return found


def expand_args(value: str, args: dict[str, str]) -> str:
    """`${NAME}` / `$NAME` replaced by the global ARG's default, as a plain build does."""

    def default(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in args, f"{value}: ${name} is not a global ARG"
        return args[name]

    return ARG_REFERENCE.sub(default, value)


def parse_stages(text: str) -> list[Stage]:
    """Stages, with each FROM's base written as in the file (`${BASE_IMAGE}` unexpanded)."""
    stages: list[Stage] = []
    started = False
    for instruction in parse_instructions(text):
        if instruction.keyword == "FROM":
            started = True
            words = [w for w in instruction.args.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            assert len(words) in (1, 3), f"line {instruction.line}: unexpected FROM form"
            stages.append(Stage(base=words[0], name=name, line=instruction.line))
        elif not started:
            assert instruction.keyword == "ARG", (
                f"line {instruction.line}: {instruction.keyword} before FROM"
            )
        else:
            stages[-1].instructions.append(instruction)
    return stages


def env_pairs(instruction: Instruction) -> dict[str, str]:
    """`ENV A=1 B="x y"` and the legacy `ENV A 1` form."""
    words = shlex.split(instruction.args)
    if words and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    return dict(word.split("=", 1) for word in words)


def exec_form(instruction: Instruction | None) -> list[str]:
    assert instruction is not None
    try:
        value = json.loads(instruction.args)
    except json.JSONDecodeError:
        pytest.fail(f"line {instruction.line}: {instruction.keyword} is not in exec (JSON) form")
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


@pytest.fixture(scope="module")
def build_args() -> dict[str, str]:
    return global_args(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    found = parse_stages(DOCKERFILE.read_text(encoding="utf-8"))
    assert found, "Dockerfile has no FROM"
    return found


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


def stage_names(stages: list[Stage]) -> set[str]:
    return {s.name for s in stages if s.name}


# --- base images and stages -------------------------------------------------


def test_base_images_are_pinned_to_an_exact_version(
    stages: list[Stage], build_args: dict[str, str]
) -> None:
    """Every external base is `python:3.11.<patch>-slim...` by default: no latest, no bare major."""
    earlier: set[str] = set()
    for stage in stages:
        if stage.base in earlier:
            continue  # FROM <earlier stage> is not an external image
        image, _, digest = expand_args(stage.base, build_args).partition("@")
        repository, sep, tag = image.rpartition(":")
        assert sep and repository, f"line {stage.line}: {stage.base} has no tag"
        assert tag != "latest"
        assert EXACT_TAG.match(tag), f"line {stage.line}: {tag!r} is not an exact version"
        assert repository in ("python", "docker.io/library/python")
        assert tag.startswith("3.11."), "the project targets Python 3.11"
        assert "slim" in tag, "use a slim base"
        if digest:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), digest
        if stage.name:
            earlier.add(stage.name)


def test_build_is_multi_stage_and_final_stage_copies_only_the_venv(
    stages: list[Stage], final: Stage
) -> None:
    """A builder installs the package; the final stage only copies artefacts from it."""
    assert len(stages) >= 2
    builders = stages[:-1]
    assert any(
        "pip install" in run.args and re.search(r"(?<![\w/-])\.(?![\w/])", run.args)
        for stage in builders
        for run in stage.all("RUN")
    ), "the builder must `pip install .` from pyproject.toml"
    copies = final.all("COPY") + final.all("ADD")
    assert copies, "the final stage copies nothing"
    for copy in copies:
        assert copy.keyword == "COPY", f"line {copy.line}: use COPY, not ADD"
        origin = re.search(r"--from=(\S+)", copy.args)
        assert origin and origin.group(1) in stage_names(stages), (
            f"line {copy.line}: the final stage must copy only from the builder"
        )
    assert not any("pip install" in run.args for run in final.all("RUN"))


def test_builder_and_final_share_a_base(stages: list[Stage]) -> None:
    """The copied venv's python is a symlink into the base image: bases must match."""
    external = {stage.base for stage in stages if stage.base not in stage_names(stages)}
    assert len(external) == 1, external


def test_base_image_is_a_build_argument(stages: list[Stage], build_args: dict[str, str]) -> None:
    """`ARG BASE_IMAGE=<the official image>`, used by every stage, so CI can swap the base."""
    assert build_args["BASE_IMAGE"].startswith("python:3.11.")
    external = [stage for stage in stages if stage.base not in stage_names(stages)]
    assert {stage.base for stage in external} == {"${BASE_IMAGE}"}


def test_nothing_depends_on_the_official_image_layout(stages: list[Stage]) -> None:
    """Debian's python3 lives in /usr/bin, the official one in /usr/local/bin: name neither.

    `python` (without the 3) exists only in the official image and in the venv.
    """
    for stage in stages:
        for instruction in stage.instructions:
            assert "/usr/local/bin/python" not in instruction.args, f"line {instruction.line}"
    for run in [run for stage in stages for run in stage.all("RUN")]:
        assert not re.search(r"(?<![\w/.-])python(?![\w.-])", run.args), (
            f"line {run.line}: call python3, which every base image has"
        )


def test_no_compilers_or_system_packages_in_any_stage(stages: list[Stage]) -> None:
    """Every dependency is a locked wheel: neither stage installs a compiler or apt packages."""
    for stage in stages:
        for run in stage.all("RUN"):
            found = COMPILERS.findall(run.args)
            assert not found, f"line {run.line}: installs {found}"
            assert "apt-get" not in run.args and "apk " not in run.args, (
                f"line {run.line}: system packages make the build depend on the base's distro"
            )


def test_dependencies_come_from_the_lock_as_wheels(stages: list[Stage]) -> None:
    """requirements.lock with --require-hashes --no-deps, binary only; the package without deps."""
    runs = [run.args for stage in stages[:-1] for run in stage.all("RUN")]
    lock = [r for r in runs if "requirements.lock" in r]
    assert len(lock) == 1, lock
    for flag in ("--require-hashes", "--no-deps", "--only-binary=:all:"):
        assert flag in lock[0], f"the lock install lacks {flag}"
    package = [r for r in runs if re.search(r"pip install [^&]*(?<![\w/-])\.(?![\w/])", r)]
    assert package and "--no-deps" in package[0], "the gateway itself must not resolve again"
    assert any("pip check" in r for r in runs), "the builder proves the dependency set complete"


# --- the running container ----------------------------------------------------


def test_final_stage_runs_as_a_numeric_non_root_user(final: Stage) -> None:
    """USER is a numeric non-zero uid (verifiable by runAsNonRoot) equal to the chart's."""
    user = final.last("USER")
    assert user is not None, "the final stage has no USER"
    uid, _, gid = user.args.partition(":")
    assert uid.isdigit(), f"USER {user.args}: Kubernetes can only verify a numeric uid"
    assert int(uid) != 0
    assert not gid or (gid.isdigit() and int(gid) != 0)
    chart = yaml.safe_load(CHART_VALUES.read_text(encoding="utf-8"))
    assert int(uid) == chart["securityContext"]["runAsUser"]
    assert int(uid) == chart["podSecurityContext"]["runAsUser"]


def test_entrypoint_runs_clearout_gateway_serve(final: Stage) -> None:
    """Exec-form ENTRYPOINT/CMD amount to `clearout-gateway serve`, a declared console script."""
    command = exec_form(final.last("ENTRYPOINT"))
    if final.last("CMD") is not None:
        command += exec_form(final.last("CMD"))
    assert command == ["clearout-gateway", "serve"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]["scripts"]
    assert "clearout-gateway" in scripts


def test_runtime_environment(final: Stage) -> None:
    """No bytecode writes (read-only root), unbuffered logs, port 8080 exposed."""
    env: dict[str, str] = {}
    for instruction in final.all("ENV"):
        env.update(env_pairs(instruction))
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert env.get("PYTHONUNBUFFERED") == "1"
    exposed = {port for e in final.all("EXPOSE") for port in e.args.split()}
    assert "8080" in exposed or "8080/tcp" in exposed


def test_no_secrets_in_build_args_or_environment(stages: list[Stage]) -> None:
    """No ARG or ENV named like a token, secret, key or password, in any stage."""
    for stage in stages:
        for instruction in stage.all("ARG"):
            name = instruction.args.split("=", 1)[0].strip()
            assert not SECRET_NAME.search(name), f"line {instruction.line}: ARG {name}"
        for instruction in stage.all("ENV"):
            for name in env_pairs(instruction):
                assert not SECRET_NAME.search(name), f"line {instruction.line}: ENV {name}"


# --- the health check -------------------------------------------------------


def healthcheck_command(final: Stage) -> list[str]:
    check = final.last("HEALTHCHECK")
    assert check is not None, "the final stage has no HEALTHCHECK"
    _, sep, command = check.args.partition("CMD ")
    assert sep, "HEALTHCHECK has no CMD"
    argv = exec_form(Instruction("HEALTHCHECK CMD", command.strip(), check.line))
    return argv


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        pass


@contextlib.contextmanager
def health_server(status: int) -> Iterator[int]:
    handler = type("Handler", (_Health,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_healthcheck_uses_python_urllib_against_healthz(final: Stage) -> None:
    """Slim images have no curl: the check is python + urllib on 127.0.0.1:8080/healthz."""
    argv = healthcheck_command(final)
    assert argv[0] == "python3", "python3 exists in every base image; python does not"
    script = " ".join(argv)
    assert "urllib" in script and "/healthz" in script and "127.0.0.1" in script
    assert "8080" in script
    assert "curl" not in script and "wget" not in script


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_healthcheck_command_reports_health(final: Stage, status: int, healthy: bool) -> None:
    """Run the HEALTHCHECK command itself: exit 0 on 200 from /healthz, non-zero otherwise."""
    argv = [sys.executable, *healthcheck_command(final)[1:]]
    with health_server(status) as port:
        result = subprocess.run(
            argv,
            # A proxy configured for upstream egress must not catch the loopback check.
            env={"GATEWAY_PORT": str(port), "http_proxy": "http://127.0.0.1:9", "no_proxy": ""},
            capture_output=True,
            timeout=10,
            check=False,
        )
    assert (result.returncode == 0) is healthy, result.stderr.decode()[-500:]


# --- build context ---------------------------------------------------------


def ignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip().rstrip("/") for line in lines if line.strip() and line[0] != "#"]


def ignored(path: str, patterns: list[str]) -> bool:
    for pattern in patterns:
        bare = pattern.removeprefix("**/")
        if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path, bare):
            return True
        if path.startswith(pattern + "/"):
            return True
    return False


def test_dockerignore_keeps_history_tests_and_tooling_out() -> None:
    """.git, tests, bench, .ci, helm, grafana, virtualenvs and caches are not sent."""
    patterns = ignore_patterns()
    for path in (
        ".git",
        "tests",
        "bench",
        ".ci",
        "helm",
        "grafana",
        ".venv",
        ".venv-tools",
        "venv",
    ):
        assert ignored(path, patterns), f"{path} is part of the build context"
    assert ignored("gateway/__pycache__", patterns)
    assert ignored(".pytest_cache", patterns)
    assert ignored(".env", patterns)


def test_dockerignore_keeps_what_the_build_copies(stages: list[Stage]) -> None:
    """Every source a COPY takes from the context survives .dockerignore."""
    patterns = ignore_patterns()
    sources = [
        source
        for stage in stages
        for copy in stage.all("COPY")
        if "--from=" not in copy.args
        for source in [w for w in copy.args.split() if not w.startswith("--")][:-1]
    ]
    assert "pyproject.toml" in sources
    for source in sources:
        assert not ignored(source.rstrip("/"), patterns), f"{source} is excluded by .dockerignore"
