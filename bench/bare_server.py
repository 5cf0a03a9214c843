"""Baseline for the cache-hit benchmark: a bare aiohttp server answering one JSON body.

Usage: python bench/bare_server.py PORT BODY_FILE
Every POST to /v2/email_finder/instant gets BODY_FILE's bytes as application/json,
the same answer the gateway replays on a cache hit.
"""

from __future__ import annotations

import sys
from pathlib import Path

from aiohttp import web


def main() -> None:
    port, body = int(sys.argv[1]), Path(sys.argv[2]).read_bytes()

    async def answer(_request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v2/email_finder/instant", answer)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
