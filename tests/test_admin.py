"""Admin API: team usage, teams-file reload (route, file change), audit lines."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.http import teams_reload as teamfile
from gateway.http.app import create_app, load_teams
from gateway.settings import Settings
from gateway.teams import hash_key
from tests.conftest import ADMIN_TOKEN, LogCapture

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
STEVEN = {"name": "Steven Morris", "domain": "apple.com"}


def write_teams(path: Path, teams: dict[str, tuple[str, int | None]]) -> None:
    lines = ["teams:"]
    for name, (key, per_day) in teams.items():
        lines.append(f"  - name: {name}\n    key_sha256: [{hash_key(key)}]")
        if per_day is not None:
            lines.append(f"    quota: {{credits_per_day: {per_day}}}")
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
async def served(
    settings: Settings, tmp_path: Path, redis_url: str
) -> Any:
    path = tmp_path / "teams.yaml"
    write_teams(path, {"growth": ("growth-key", 100), "ops": ("ops-key", None)})
    app_settings = replace(settings, teams_file=path, redis_url=redis_url)
    client = TestClient(TestServer(create_app(app_settings, teams=load_teams(app_settings))))
    await client.start_server()
    yield client, path
    await client.close()


async def test_teams_route_reports_usage_and_remaining(
    served: tuple[TestClient[Any, Any], Path], log_output: LogCapture
) -> None:
    client, _ = served
    resp = await client.post("/v2/email_finder/instant", json=STEVEN,
                             headers={"Authorization": "growth-key"})  # fmt: skip
    assert resp.status == 200
    assert resp.headers["X-Gateway-Credits-Remaining-Day"] == "96"
    resp = await client.get("/admin/teams", headers=ADMIN)
    assert resp.status == 200
    rows = {row["name"]: row for row in (await resp.json())["data"]["teams"]}
    assert rows["growth"]["used"] == {"day": 4, "month": 4}
    assert rows["growth"]["remaining"]["day"] == 96
    assert rows["ops"]["used"] is None and rows["ops"]["remaining"]["day"] is None
    assert "key_sha256" not in json.dumps(rows)
    events = [json.loads(line) for line in log_output.text().splitlines()]
    assert any(e["event"] == "admin_teams_viewed" for e in events)


async def test_reload_route_applies_new_teams_and_keeps_old_on_error(
    served: tuple[TestClient[Any, Any], Path], log_output: LogCapture
) -> None:
    client, path = served
    write_teams(path, {"growth": ("growth-key-2", 100)})
    resp = await client.post("/admin/teams/reload", headers=ADMIN)
    assert resp.status == 200 and (await resp.json())["data"]["teams"] == ["growth"]
    old = await client.post("/v2/email_finder/instant", json=STEVEN,
                            headers={"Authorization": "growth-key"})  # fmt: skip
    assert old.status == 401
    new = await client.post("/v2/email_finder/instant", json=STEVEN,
                            headers={"Authorization": "growth-key-2"})  # fmt: skip
    assert new.status == 200
    path.write_text("teams: [oops")
    resp = await client.post("/admin/teams/reload", headers=ADMIN)
    assert resp.status == 400
    still = await client.post("/v2/email_finder/instant", json=STEVEN,
                              headers={"Authorization": "growth-key-2"})  # fmt: skip
    assert still.status == 200, "a bad file must not lock callers out"
    events = [json.loads(line)["event"] for line in log_output.text().splitlines()]
    assert events.count("admin_teams_reload") == 2 and "teams_reload_failed" in events


async def test_teams_file_change_is_picked_up(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(teamfile, "TEAMS_WATCH_SECONDS", 0.1)
    path = tmp_path / "teams.yaml"
    write_teams(path, {"growth": ("growth-key", None)})
    app_settings = replace(settings, teams_file=path)
    client = TestClient(TestServer(create_app(app_settings, teams=load_teams(app_settings))))
    await client.start_server()
    try:
        write_teams(path, {"growth": ("rotated-key", None)})
        for _ in range(30):
            await asyncio.sleep(0.1)
            resp = await client.post("/v2/email_finder/instant", json=STEVEN,
                                     headers={"Authorization": "rotated-key"})  # fmt: skip
            if resp.status == 200:
                break
        assert resp.status == 200
    finally:
        await client.close()


async def test_admin_routes_refuse_team_keys(served: tuple[TestClient[Any, Any], Path]) -> None:
    client, _ = served
    for method, path in (("GET", "/admin/teams"), ("POST", "/admin/teams/reload")):
        resp = await client.request(method, path, headers={"Authorization": "growth-key"})
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == 9001
