"""`clearout-gateway import-results FILE`: warm a gateway's cache from a past result file.

An operator who already bought results from Clearout (a finder result file,
CSV or XLSX, with the `Clearout Finder …` columns) posts it to
`POST /admin/cache/import` with the admin token; every row still within its
TTL answers later lookups of that person from the cache.  Prints
`imported N, skipped M`; a refusal is one line on stderr and exit 1, as for
`clearout-gateway bulk`.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from gateway.cli.remote import CommandFailed, Remote, fail, flag_or_env, gateway_url, readable

IMPORT = "/admin/cache/import"

EPILOG = """\
examples:
  export CLEAROUT_GATEWAY_URL=http://127.0.0.1:8080 CLEAROUT_GATEWAY_ADMIN_TOKEN=...
  clearout-gateway import-results contacts_appended_clearout_finder_results.csv
  clearout-gateway import-results march.xlsx --url https://clearout-gateway.internal \\
      --admin-token "$(cat /run/secrets/gateway-admin-token)"

Rows past their TTL (counted from their processed time), rows without a name
and domain, and rows neither found nor not found are skipped.

exit status: 0 imported; 1 refused or unreachable (one line on stderr says
why); 2 usage (no URL or token, FILE unreadable).
"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    command = sub.add_parser(
        "import-results", help="fill a gateway's cache from a past Clearout finder result file",
        description="Post a Clearout finder result file to POST /admin/cache/import.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    command.add_argument("file", type=Path, metavar="FILE", help="a .csv or .xlsx result file")
    command.add_argument("--url", help="the gateway's base URL (default: $CLEAROUT_GATEWAY_URL)")
    command.add_argument(
        "--admin-token", help="the gateway's admin token (default: $CLEAROUT_GATEWAY_ADMIN_TOKEN)"
    )
    command.add_argument(
        "--timeout", type=float, default=600.0, metavar="S",
        help="give up after S seconds (default: 600)",
    )  # fmt: skip
    command.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        base = gateway_url(args.url)
        token = flag_or_env(args.admin_token, "CLEAROUT_GATEWAY_ADMIN_TOKEN", "--admin-token")
        source = readable(args.file)
        imported, skipped = asyncio.run(_import(base, token, args.timeout, source))
    except CommandFailed as exc:
        return fail("import-results", exc)
    print(f"imported {imported}, skipped {skipped}")
    return 0


async def _import(base: str, token: str, seconds: float, source: Path) -> tuple[int, int]:
    async with Remote.open(base, f"Bearer {token}", seconds) as remote:
        data = await remote.upload(source, IMPORT, "import")
    return int(data.get("imported", 0)), int(data.get("skipped", 0))
