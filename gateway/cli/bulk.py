"""`clearout-gateway bulk FILE`: run a list through a gateway and write the merged result.

For people with a spreadsheet rather than a client: the file is uploaded to
the gateway's bulk route with the team's key, the list's progress is shown
while it runs (`gateway.cli.progress`), and once it has ended the result
that `download/result` links to is written next to FILE as
`<stem>_clearout_results<ext>` (or to `-o PATH`).  A list that was
cancelled or failed still has its answered rows written, and the command
says so and exits 3; any refusal on the way is one line on stderr and exit 1
(`gateway.cli.remote` words it).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from gateway.cli.progress import ListView, view_for
from gateway.cli.remote import (
    EXIT_LIST_ENDED,
    CommandFailed,
    Remote,
    fail,
    flag_or_env,
    gateway_url,
    readable,
)

BULK = "/v2/email_finder/bulk"
PROGRESS = "/v2/email_finder/bulk/progress_status"
DOWNLOAD = "/v2/email_finder/download/result"
ENDED = ("completed", "cancelled", "failed")
NOT_AVAILABLE = 1029  # no result yet: the gateway is still merging a list that ended
FIRST_POLL, MAX_POLL = 1.0, 10.0
RESULT_TRIES, RESULT_PAUSE = 120, 0.5
EXIT_INTERRUPTED = 130

EPILOG = """\
examples:
  export CLEAROUT_GATEWAY_URL=http://127.0.0.1:8080 CLEAROUT_GATEWAY_KEY=sandbox-demo-key
  clearout-gateway bulk contacts.csv                 # writes contacts_clearout_results.csv
  clearout-gateway bulk leads.xlsx -o found/leads.xlsx
  clearout-gateway bulk contacts.csv --url https://clearout-gateway.internal \\
      --key "$TEAM_KEY" --timeout 7200 > bulk.log    # plain progress lines in the log

FILE needs a name column (Name / Full Name, or First Name + Last Name) and a
Domain or Company column.  People the gateway already knows are answered from
its cache and cost nothing; only the others go to Clearout.  Running the same
file again starts a new list (ignore_duplicate_file=true).

exit status:
  0  the result was written
  1  refused or unreachable: one line on stderr says why (bad key, gateway
     unreachable, unsupported file, quota refused, or the gateway's message)
  2  usage: no URL or key, FILE unreadable
  3  the list was cancelled or failed: the rows it answered were written
"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bulk = sub.add_parser(
        "bulk", help="run a CSV or XLSX list through a gateway and write the result",
        description="Upload FILE to a gateway, show the list's progress, write its merged result.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    bulk.add_argument("file", type=Path, metavar="FILE", help="the list, a .csv or .xlsx file")
    bulk.add_argument("--url", help="the gateway's base URL (default: $CLEAROUT_GATEWAY_URL)")
    bulk.add_argument("--key", help="the team's gateway key (default: $CLEAROUT_GATEWAY_KEY)")
    bulk.add_argument(
        "-o", "--output", type=Path, metavar="PATH",
        help="where to write the result (default: <stem>_clearout_results<ext> beside FILE)",
    )  # fmt: skip
    bulk.add_argument(
        "--timeout", type=float, default=3600.0, metavar="S",
        help="give up after S seconds in all: upload, run and download (default: 3600)",
    )  # fmt: skip
    bulk.set_defaults(run=run)


def result_path(source: Path) -> Path:
    return source.with_name(f"{source.stem}_clearout_results{source.suffix}")


def run(args: argparse.Namespace) -> int:
    try:
        base = gateway_url(args.url)
        key = flag_or_env(args.key, "CLEAROUT_GATEWAY_KEY", "--key")
        source = readable(args.file)
        target = args.output or result_path(source)
        with view_for() as view:
            asyncio.run(_run(base, key, args.timeout, source, target, view))
    except CommandFailed as exc:
        return fail("bulk", exc)
    except KeyboardInterrupt:
        return fail("bulk", CommandFailed("interrupted", EXIT_INTERRUPTED))
    return 0


async def _run(
    base: str, key: str, seconds: float, source: Path, target: Path, view: ListView
) -> None:
    async with Remote.open(base, f"Bearer {key}", seconds) as remote:
        view.say(f"uploading {source.name} to {base}")
        data = await remote.upload(source, BULK, "upload")
        list_id = data.get("list_id")
        if not isinstance(list_id, str):
            raise CommandFailed("upload: the gateway answered no list_id")
        view.say(f"list {list_id} created")
        state, percentage = await _wait(remote, list_id, view)
        url = await _result_link(remote, list_id)
        size = await remote.download(url, target)
    if state != "completed":
        raise CommandFailed(
            f"list {list_id} {state} at {percentage}%: the rows it answered are in {target}",
            EXIT_LIST_ENDED,
        )
    view.say(f"wrote {target} ({size} bytes)")


async def _wait(remote: Remote, list_id: str, view: ListView) -> tuple[str, int]:
    """Poll progress_status until the list has ended; its last state and percentage."""
    pause = FIRST_POLL
    while True:
        data = await remote.call("progress_status", "GET", PROGRESS, params={"list_id": list_id})
        state, percentage = str(data.get("progress_status")), _percentage(data.get("percentage"))
        view.update(list_id, state, percentage)
        if state in ENDED:
            return state, percentage
        await remote.sleep(pause, f"list {list_id} (it keeps running on the gateway)")
        # Long lists are asked less often: Clearout's own pace is minutes.
        pause = min(MAX_POLL, pause * 1.5)


async def _result_link(remote: Remote, list_id: str) -> str:
    """The result link; a list that just ended may need a moment to be merged."""
    for _ in range(RESULT_TRIES):
        try:
            data = await remote.call("download/result", "POST", DOWNLOAD, json={"list_id": list_id})
        except CommandFailed as exc:
            if exc.code != NOT_AVAILABLE:
                raise
            await remote.sleep(RESULT_PAUSE, f"the result of list {list_id}")
            continue
        url = data.get("url")
        if not isinstance(url, str):
            raise CommandFailed("download/result: the gateway answered no link")
        return url
    raise CommandFailed(f"download/result: the result of list {list_id} is not available")


def _percentage(value: object) -> int:
    try:
        return max(0, min(100, int(float(str(value)))))
    except ValueError:
        return 0
