"""hadolint and checkov find nothing in the Dockerfile and the chart, beyond the exceptions below.

Both run from their own virtualenv, `.venv-tools` (made by `.ci/tools.sh`,
which `.ci/test.sh` calls, from the pinned `.ci/tools.lock`): checkov's
hundred dependencies would clash with the project's. checkov reads the chart
as Kubernetes manifests, rendered offline for the default values and every
`ci/*-values.yaml` exactly as tests/test_helm.py renders them.

Every exception is written down here with its reason, and must still be
needed: a rule listed below that no longer fires fails the test, so the list
cannot outlive its reasons.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_helm import CHART, CI_VALUES, MONITORING_APIS, helm, load_values, render

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
TOOLS_VENV = ROOT / os.environ.get("GATEWAY_TOOLS_VENV", ".venv-tools")
DEPLOYMENT = "Deployment.email.gw-clearout-gateway"

pytestmark = pytest.mark.platform


@dataclass(frozen=True)
class Exception_:
    """A finding accepted on purpose: why, and in which values sets it must not appear."""

    reason: str
    not_in: frozenset[str] = field(default_factory=frozenset)


# hadolint rule -> reason. Empty: the Dockerfile is clean.
HADOLINT_EXCEPTIONS: dict[str, Exception_] = {}

CHECKOV_DOCKERFILE_EXCEPTIONS: dict[str, Exception_] = {
    "CKV_DOCKER_7": Exception_(
        "checkov does not expand build arguments: it reads `FROM ${BASE_IMAGE}` as an image "
        "without a tag. BASE_IMAGE defaults to python:3.11.14-slim-bookworm, an exact "
        "version, which tests/test_dockerfile.py::test_base_images_are_pinned_to_an_exact_version "
        "holds; the argument exists so CI can build on a debootstrapped Debian."
    ),
}

CHECKOV_CHART_EXCEPTIONS: dict[str, Exception_] = {
    "CKV_K8S_43": Exception_(
        "Image should use digest: the chart cannot know the digest of the image an operator "
        "builds and pushes, so its default names the appVersion tag. `image.digest` pins the "
        "image (and wins over the tag); values.yaml recommends it for production, and "
        "ci/image-digest-values.yaml shows the check passing with it.",
        not_in=frozenset({"image-digest"}),
    ),
}


def tool(name: str) -> Path:
    path = TOOLS_VENV / "bin" / name
    if not path.exists():
        pytest.skip(
            f"{name} is not installed in {TOOLS_VENV.name}/: run `bash .ci/tools.sh` "
            "(bash .ci/test.sh does it)"
        )
    return path


def unexpected(
    found: dict[str, set[str]], exceptions: dict[str, Exception_]
) -> tuple[dict[str, set[str]], list[str]]:
    """Findings (rule -> where) not excused, and excused rules that did not fire."""
    failing = {
        rule: {
            where for where in places if rule not in exceptions or where in exceptions[rule].not_in
        }
        for rule, places in found.items()
    }
    stale = [rule for rule in exceptions if not found.get(rule)]
    return {rule: places for rule, places in failing.items() if places}, stale


# --- hadolint ------------------------------------------------------------------


def test_hadolint_finds_nothing(tmp_path: Path) -> None:
    """hadolint (every level, style included) on the Dockerfile: no finding but the listed ones."""
    config = tmp_path / "hadolint.yaml"
    config.write_text("ignored: []\n", encoding="utf-8")  # no user or repository config applies
    result = subprocess.run(
        [str(tool("hadolint")), "--config", str(config), "--format", "json", "--no-fail",
         str(DOCKERFILE)],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    found: dict[str, set[str]] = {}
    for item in json.loads(result.stdout or "[]"):
        found.setdefault(item["code"], set()).add(f"line {item['line']}: {item['message']}")
    failing, stale = unexpected(found, HADOLINT_EXCEPTIONS)
    assert failing == {}
    assert stale == [], f"no longer needed, remove from HADOLINT_EXCEPTIONS: {stale}"


# --- checkov -------------------------------------------------------------------


def checkov(target: list[str], framework: str) -> dict[str, Any]:
    result = subprocess.run(
        [str(tool("checkov")), *target, "--framework", framework, "--output", "json",
         "--compact", "--skip-download"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    # Exit 1 means findings, which are judged below; anything else is checkov failing.
    assert result.returncode in (0, 1), result.stderr[-3000:]
    report = json.loads(result.stdout)
    if isinstance(report, list):  # one report per framework; only one was asked for
        (report,) = [r for r in report if r.get("check_type") == framework]
    assert isinstance(report, dict)
    assert report["summary"]["parsing_errors"] == 0, report["summary"]
    return report


def failed_checks(report: dict[str, Any]) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = report["results"]["failed_checks"]
    return checks


def test_checkov_dockerfile(tmp_path: Path) -> None:
    """checkov's Dockerfile checks: none fails but the listed ones."""
    report = checkov(["--file", str(DOCKERFILE)], "dockerfile")
    assert report["summary"]["passed"] > 0, "checkov read no Dockerfile"
    found: dict[str, set[str]] = {}
    for check in failed_checks(report):
        found.setdefault(check["check_id"], set()).add(
            f"{check['check_name']} ({check['resource']})"
        )
    failing, stale = unexpected(found, CHECKOV_DOCKERFILE_EXCEPTIONS)
    assert failing == {}
    assert stale == [], f"no longer needed, remove from CHECKOV_DOCKERFILE_EXCEPTIONS: {stale}"


@pytest.fixture(scope="module")
def rendered_chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One multi-document manifest file per values set: default.yaml, hpa.yaml, ..."""
    out = tmp_path_factory.mktemp("rendered-chart")
    with helm.Chart.load(CHART) as chart:
        for path in [None, *CI_VALUES]:
            name = "default" if path is None else path.name.removesuffix("-values.yaml")
            docs = render(chart, load_values(path), api_versions=MONITORING_APIS)
            (out / f"{name}.yaml").write_text(yaml.safe_dump_all(docs), encoding="utf-8")
    return out


def test_checkov_every_rendered_values_set(rendered_chart: Path) -> None:
    """checkov's Kubernetes checks on every values set: none fails but the listed ones."""
    report = checkov(["--directory", str(rendered_chart)], "kubernetes")
    values_sets = {path.stem for path in rendered_chart.glob("*.yaml")}
    scanned = {
        Path(check["file_path"]).stem
        for check in report["results"]["passed_checks"]
        if check["resource"] == DEPLOYMENT
    }
    assert scanned == values_sets, f"checkov did not read the Deployment of {values_sets - scanned}"
    found: dict[str, set[str]] = {}
    for check in failed_checks(report):
        where = f"{Path(check['file_path']).stem}"
        found.setdefault(check["check_id"], set()).add(where)
    failing, stale = unexpected(found, CHECKOV_CHART_EXCEPTIONS)
    details = {
        rule: sorted(
            f"{Path(c['file_path']).stem}: {c['check_name']} ({c['resource']})"
            for c in failed_checks(report)
            if c["check_id"] == rule
        )
        for rule in failing
    }
    assert failing == {}, details
    assert stale == [], f"no longer needed, remove from CHECKOV_CHART_EXCEPTIONS: {stale}"


def test_every_exception_has_a_reason() -> None:
    """A reason a reviewer can weigh: more than a few words."""
    for table in (HADOLINT_EXCEPTIONS, CHECKOV_DOCKERFILE_EXCEPTIONS, CHECKOV_CHART_EXCEPTIONS):
        for rule, exception in table.items():
            assert len(exception.reason.split()) >= 12, rule
