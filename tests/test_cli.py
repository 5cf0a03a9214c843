"""The commands people run, as they run them: the real CLI in a child process.

One gateway per module, `clearout-gateway serve` in sandbox mode in its own
process (its lists run for 3 s), with a teams file of two teams (one
without a quota, one with 4 credits a day) and an admin token.  Each test
runs `python -m gateway bulk|import-results|serve …` as a child process
against it and checks the exit status, what it printed, and the files it
wrote.  Output goes to pipes, so `bulk` prints plain progress lines; one
test gives it a pseudo-terminal and sees the bar instead.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import pty
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import openpyxl
import pytest
import requests

from gateway.bulk.results import RESULT_COLUMNS
from gateway.settings import documented
from tests.servers import GatewayProcess, free_port

KEY = "cli-people-key"
TIGHT_KEY = "cli-tight-key"
ADMIN = "cli-admin-token"
INSTANT = "/v2/email_finder/instant"
CACHED_ROWS = 'clearout_gateway_bulk_rows_total{source="cache",team="people"}'
PLAIN_LINE = re.compile(r"^list [0-9a-f]{8}… (running|completed|failed|cancelled) \d{1,3}%$")


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("cli-gateway")
    teams = workdir / "teams.yaml"
    teams.write_text(
        "teams:\n"
        f"  - name: people\n    key_sha256: [{hashlib.sha256(KEY.encode()).hexdigest()}]\n"
        f"  - name: tight\n    key_sha256: [{hashlib.sha256(TIGHT_KEY.encode()).hexdigest()}]\n"
        "    quota:\n      credits_per_day: 4\n"
    )
    proc = GatewayProcess(
        {"GATEWAY_SANDBOX": "1", "GATEWAY_TEAMS_FILE": str(teams), "GATEWAY_ADMIN_TOKEN": ADMIN,
         "GATEWAY_SPOOL_DIR": str(workdir)},
        workdir,
    ).start()  # fmt: skip
    try:
        yield proc.url
    finally:
        proc.stop()


def cli(
    *args: str, url: str | None = None, key: str | None = KEY, cwd: Path | None = None,
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:  # fmt: skip
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **(extra_env or {})}
    if url is not None:
        env["CLEAROUT_GATEWAY_URL"] = url
    if key is not None:
        env["CLEAROUT_GATEWAY_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=90,
        env=env, cwd=cwd, check=False,
    )  # fmt: skip


def one_line(out: subprocess.CompletedProcess[str]) -> str:
    """The command failed with exactly one line on stderr; that line."""
    assert out.returncode != 0, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    return lines[0]


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return path


def read_csv(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"))))


def column(rows: list[list[str]], name: str) -> list[str]:
    index = rows[0].index(name)
    return [row[index] for row in rows[1:]]


def lookup(url: str, name: str, domain: str) -> requests.Response:
    response = requests.post(
        url + INSTANT, json={"name": name, "domain": domain}, headers={"Authorization": KEY},
        timeout=30,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    return response


def metric(url: str, line_start: str) -> float:
    text = requests.get(url + "/metrics", timeout=30).text
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith(line_start)]  # fmt: skip
    return sum(values)


# ---- bulk: a list end to end ----------------------------------------------------------


def test_a_mixed_list_end_to_end_writes_the_merged_result_beside_the_file(
    gateway_url: str, tmp_path: Path
) -> None:
    """Known, unknown, duplicate, not-found and role rows: exit 0, `<stem>_clearout_results.csv`
    beside FILE with every row in order and Clearout's result columns, plain progress lines
    on stdout (not a terminal), nothing on stderr, the key printed nowhere."""
    lookup(gateway_url, "Kim Known", "apple.com")  # in the cache before the upload
    cached_before = metric(gateway_url, CACHED_ROWS)
    rows = [["Full Name", "Domain", "Notes"],
            ["Kim Known", "apple.com", "cached"],
            ["Una Unseen", "apple.com", "new"],
            ["Kim Known", "apple.com", "again"],
            ["nobody atall", "apple.com", "not found"],
            ["sales", "apple.com", "role"]]  # fmt: skip
    source = write_csv(tmp_path / "contacts.csv", rows)
    out = cli("bulk", str(source), url=gateway_url)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    result = read_csv(tmp_path / "contacts_clearout_results.csv")
    assert result[0] == [*rows[0], *RESULT_COLUMNS]
    assert [row[:3] for row in result[1:]] == rows[1:]
    assert column(result, "Clearout Finder Email Address") == [
        "kim.known@apple.com", "una.unseen@apple.com", "kim.known@apple.com", "", "sales@apple.com",
    ]  # fmt: skip
    statuses = column(result, "Clearout Finder Status")
    assert statuses == ["Found", "Found", "Found", "Not Found", "Found"]
    lines = out.stdout.strip().splitlines()
    assert lines[0] == f"uploading contacts.csv to {gateway_url}"
    assert re.fullmatch(r"list [0-9a-f]{24} created", lines[1])
    progress = lines[2:-1]
    assert progress and all(PLAIN_LINE.match(line) for line in progress), lines
    assert progress[-1].endswith(" completed 100%")
    assert lines[-1].startswith(f"wrote {tmp_path / 'contacts_clearout_results.csv'} (")
    assert KEY not in out.stdout + out.stderr
    cached_after = metric(gateway_url, CACHED_ROWS)
    assert cached_after - cached_before == 1  # Kim, answered from the cache


def test_output_path_and_xlsx_in_xlsx_out(gateway_url: str, tmp_path: Path) -> None:
    """`-o PATH` writes the result there (and nothing beside FILE); an XLSX list gives an
    XLSX result.  Every person is known, so the list completes at once."""
    lookup(gateway_url, "Xena Sheet", "apple.com")
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["Name", "Domain"])
    sheet.append(["Xena Sheet", "apple.com"])
    source = tmp_path / "leads.xlsx"
    book.save(source)
    target = tmp_path / "out" / "found.xlsx"
    target.parent.mkdir()
    out = cli("bulk", str(source), "-o", str(target), "--url", gateway_url, "--key", KEY, key=None)
    assert out.returncode == 0, out.stderr
    assert not (tmp_path / "leads_clearout_results.xlsx").exists()
    written = openpyxl.load_workbook(target, read_only=True).active
    assert written is not None
    values = [[cell or "" for cell in row] for row in written.iter_rows(values_only=True)]
    assert values[0] == ["Name", "Domain", *RESULT_COLUMNS]
    assert values[1][:2] == ["Xena Sheet", "apple.com"]
    assert "xena.sheet@apple.com" in values[1]
    assert not list(target.parent.glob(".*.partial"))


def test_a_failed_list_writes_what_it_answered_and_exits_non_zero(
    gateway_url: str, tmp_path: Path
) -> None:
    """The sandbox fails a list with a `listfail.test` row half-way: the rows answered so
    far are written, one line on stderr says the list failed, exit 3."""
    source = write_csv(tmp_path / "fails.csv", [["Full Name", "Domain"],
                                                ["Fay Lure", "listfail.test"],
                                                ["Gus Later", "apple.com"]])  # fmt: skip
    out = cli("bulk", str(source), url=gateway_url)
    assert out.returncode == 3
    line = one_line(out)
    assert "failed at 50%" in line and "fails_clearout_results.csv" in line
    result = read_csv(tmp_path / "fails_clearout_results.csv")
    assert column(result, "Clearout Finder Email Address") == ["fay.lure@listfail.test", ""]


def test_progress_is_a_bar_on_a_terminal(gateway_url: str, tmp_path: Path) -> None:
    """With a terminal as stdout the progress is rich's bar, not the plain lines."""
    lookup(gateway_url, "Tess Tty", "apple.com")
    source = write_csv(tmp_path / "tty.csv", [["Full Name", "Domain"], ["Tess Tty", "apple.com"]])
    leader, follower = pty.openpty()
    env = {"PATH": os.environ.get("PATH", ""), "CLEAROUT_GATEWAY_URL": gateway_url,
           "CLEAROUT_GATEWAY_KEY": KEY, "COLUMNS": "100", "TERM": "xterm"}  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "bulk", str(source)],
                            stdout=follower, stderr=subprocess.PIPE, env=env)  # fmt: skip
    os.close(follower)
    screen = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        screen += chunk
    os.close(leader)
    _, errors = proc.communicate(timeout=30)
    assert proc.returncode == 0, errors
    text = screen.decode(errors="replace")
    assert "━" in text and "100%" in text and "completed" in text
    assert not any(PLAIN_LINE.match(line.strip()) for line in text.splitlines())


# ---- bulk: one line saying why ------------------------------------------------------------


def test_a_bad_key_is_one_line(gateway_url: str, tmp_path: Path) -> None:
    """401: non-zero, one line naming the refused key's status, no file written."""
    source = write_csv(tmp_path / "a.csv", [["Full Name", "Domain"], ["Ann Lee", "apple.com"]])
    out = cli("bulk", str(source), url=gateway_url, key="not-a-key")
    assert out.returncode == 1
    line = one_line(out)
    assert line.startswith("clearout-gateway bulk: ") and "key was refused" in line
    assert "401" in line
    assert not (tmp_path / "a_clearout_results.csv").exists()


def test_an_unreachable_gateway_is_one_line(tmp_path: Path) -> None:
    """Nothing listens on the URL: non-zero, one line saying it cannot be reached."""
    source = write_csv(tmp_path / "a.csv", [["Full Name", "Domain"], ["Ann Lee", "apple.com"]])
    url = f"http://127.0.0.1:{free_port()}"
    line = one_line(cli("bulk", str(source), url=url))
    assert f"cannot reach the gateway at {url}" in line and "refused" in line


def test_an_unsupported_file_is_one_line(gateway_url: str, tmp_path: Path) -> None:
    """A file Clearout cannot take (1100, Invalid file type): non-zero, one line saying so."""
    source = tmp_path / "notes.txt"
    source.write_text("Full Name,Domain\nAnn Lee,apple.com\n")
    line = one_line(cli("bulk", str(source), url=gateway_url))
    assert "unsupported file" in line and "1100" in line


def test_a_quota_refusal_is_one_line(gateway_url: str, tmp_path: Path) -> None:
    """Three unknown people need 12 credits, the team has 4 a day: 402 9200, one line."""
    people = [["Full Name", "Domain"], ["Quin One", "apple.com"], ["Quin Two", "apple.com"],
              ["Quin Three", "apple.com"]]  # fmt: skip
    source = write_csv(tmp_path / "q.csv", people)
    line = one_line(cli("bulk", str(source), url=gateway_url, key=TIGHT_KEY))
    assert "quota refused" in line and "9200" in line


def test_missing_url_or_key_is_a_usage_error(tmp_path: Path) -> None:
    """Neither flag nor variable: exit 2, one line naming what is missing."""
    source = write_csv(tmp_path / "a.csv", [["Full Name", "Domain"], ["Ann Lee", "apple.com"]])
    out = cli("bulk", str(source), key=KEY)
    assert out.returncode == 2 and "$CLEAROUT_GATEWAY_URL" in one_line(out)
    out = cli("bulk", str(source), url="http://127.0.0.1:9", key=None)
    assert out.returncode == 2 and "$CLEAROUT_GATEWAY_KEY" in one_line(out)
    out = cli("bulk", str(tmp_path / "absent.csv"), url="http://127.0.0.1:9")
    assert out.returncode == 2 and "cannot read" in one_line(out)


# ---- import-results ---------------------------------------------------------------------


def test_import_results_prints_its_counts_and_warms_the_cache(
    gateway_url: str, tmp_path: Path
) -> None:
    """`imported N, skipped M` for a past result file (a stale and an unusable row skipped);
    an imported person's lookup is then a cache hit.  A wrong admin token is one line."""
    fresh = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    rows = [["Full Name", "Domain", *RESULT_COLUMNS],
            ["Ivy Ported", "apple.com", "ivy ported", "ivy", "ported", "apple.com", "apple",
             "ivy.ported@apple.com", "90", "yes", "Found", "", fresh],
            ["Ned None", "apple.com", "", "", "", "", "", "", "", "", "Not Found",
             "No email found", fresh],
            ["Old Row", "apple.com", "", "", "", "", "", "old@apple.com", "80", "yes", "Found",
             "", "2020-01-01 00:00:00"],
            ["Err Row", "apple.com", "", "", "", "", "", "", "", "", "Error", "", fresh]]  # fmt: skip
    source = write_csv(tmp_path / "past.csv", rows)
    out = cli("import-results", str(source), url=gateway_url, key=None,
              extra_env={"CLEAROUT_GATEWAY_ADMIN_TOKEN": ADMIN})  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "imported 2, skipped 2"
    assert lookup(gateway_url, "Ivy Ported", "apple.com").headers["X-Cache"] == "HIT"
    refused = cli("import-results", str(source), "--url", gateway_url, "--admin-token", "nope")
    assert refused.returncode == 1 and "refused" in one_line(refused)
    not_results = write_csv(tmp_path / "plain.csv", [["Full Name", "Domain"], ["A B", "c.com"]])
    out = cli("import-results", str(not_results), "--url", gateway_url, "--admin-token", ADMIN)
    assert "unsupported file" in one_line(out)


# ---- help --------------------------------------------------------------------------------


def test_help_shows_examples() -> None:
    """`bulk --help` and `import-results --help` carry examples and the exit statuses;
    `serve --help` points to --help-settings."""
    for command, example in (("bulk", "clearout-gateway bulk contacts.csv"),
                             ("import-results", "clearout-gateway import-results ")):  # fmt: skip
        out = cli(command, "--help", key=None)
        assert out.returncode == 0
        assert "examples:" in out.stdout and example in out.stdout
        assert "exit status" in out.stdout
    serve = cli("serve", "--help", key=None)
    assert serve.returncode == 0 and "--help-settings" in serve.stdout.split("options:")[1]


def test_serve_help_settings_lists_every_setting() -> None:
    """Every variable of `documented()` is listed, with its meaning, and the server does not
    start (exit 0 at once)."""
    out = cli("serve", "--help-settings", key=None)
    assert out.returncode == 0, out.stderr
    for variable, meaning, _default in documented():
        assert re.search(rf"^{variable}  \(default: ", out.stdout, re.MULTILINE), variable
        assert meaning in out.stdout
    assert "GATEWAY_PORT  (default: 8080)" in out.stdout
