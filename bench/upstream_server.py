"""Upstream stand-in for the miss benchmark: answers every instant lookup at once.

Usage: python bench/upstream_server.py PORT

`POST /v2/email_finder/instant` answers 200 with a found address made from the
name and domain it was asked (Clearout's answer shape, ~330 bytes) and generous
`x-ratelimit-*` headers, so the gateway's upstream governor never holds a call
back; `GET /v2/email_finder/getcredits` answers a large balance.  No state, no
delay: whatever a request costs beyond this server's own answer is the gateway.
"""

from __future__ import annotations

import sys
import time

import orjson
from aiohttp import web


def found(name: str, domain: str) -> bytes:
    first, _, last = name.lower().partition(" ")
    address = f"{first}.{last or 'x'}@{domain.lower()}"
    return orjson.dumps({
        "status": "success",
        "data": {
            "first_name": first, "last_name": last, "full_name": name.lower(),
            "domain": domain.lower(), "company": {"name": domain.split(".")[0]},
            "emails": [{"email_address": address, "role": "no", "business": "yes"}],
            "total": 1, "confidence_score": 90, "found_on": "2026-11-30T10:00:00.000Z",
        },
    })  # fmt: skip


async def instant(request: web.Request) -> web.Response:
    payload = orjson.loads(await request.read())
    headers = {
        "x-ratelimit-limit": "1000000",
        "x-ratelimit-remaining": "999999",
        "x-ratelimit-reset": str(int(time.time()) + 60),
    }
    return web.Response(
        body=found(str(payload.get("name", "")), str(payload.get("domain", ""))),
        content_type="application/json",
        headers=headers,
    )


async def getcredits(_request: web.Request) -> web.Response:
    body = {"status": "success", "data": {"available_credits": 10_000_000}}
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def main() -> None:
    app = web.Application()
    app.router.add_post("/v2/email_finder/instant", instant)
    app.router.add_get("/v2/email_verify/getcredits", getcredits)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
