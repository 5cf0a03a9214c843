"""Hostile and broken input costs at most its own request: a 4xx, never a 500 or a stall."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from gateway.lookup.normalize import normalize_name
from gateway.sandbox import Sandbox
from tests.conftest import GatewayFactory, auth, contacts_csv

INSTANT = "/v2/email_finder/instant"
BULK = "/v2/email_finder/bulk"


async def raw_exchange(client: TestClient[Any, Any], data: bytes, wait: float = 5.0) -> bytes:
    """Send raw bytes to the gateway's port; what comes back before it closes (or `wait`)."""
    assert client.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(data)
    await writer.drain()
    out = b""
    try:
        async with asyncio.timeout(wait):
            while chunk := await reader.read(65536):
                out += chunk
                if _complete(out):
                    break
    except TimeoutError:
        pass
    writer.close()
    return out


def _complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":", 1)[1])
    return False


def status_and_json(raw: bytes) -> tuple[int, Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body) if body else None


def http_post(path: str, headers: dict[str, bytes], body: bytes) -> bytes:
    lines = [f"POST {path} HTTP/1.1".encode(), b"Host: gateway"]
    lines += [k.encode() + b": " + v for k, v in headers.items()]
    lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


# ---- CPU time: one request must never freeze the others ---------------------


HOSTILE_NAMES = [
    "Zed Xqzvbnmw" + ",phd" * 16000,
    "Zed Xqzvbnmw" + ",jr" * 21000,
    "mr " * 20000 + "zed x",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=["phd-commas", "jr-commas", "titles"])
def test_normalization_is_linear_in_the_name(name: str) -> None:
    """64 KB of suffixes or titles normalize in milliseconds (quadratic loops took seconds)."""
    started = time.perf_counter()
    normalize_name(name)
    assert time.perf_counter() - started < 0.5


async def test_a_hostile_body_does_not_stall_other_callers(
    gateway: TestClient[Any, Any], sandbox: Sandbox
) -> None:
    """While a 64 KB suffix bomb is answered, /healthz of the same process answers at once."""
    body = {"name": HOSTILE_NAMES[0], "domain": "apple.com"}

    async def health_latency() -> float:
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        resp = await gateway.get("/healthz")
        assert resp.status == 200
        return time.perf_counter() - started

    bomb = asyncio.create_task(gateway.post(INSTANT, json=body, headers=auth()))
    latency = await health_latency()
    resp = await bomb
    assert latency < 1.0, latency
    assert resp.status == 400
    reason = (await resp.json())["error"]["reasons"][0]
    assert reason["types"] == ["string.max"] and reason["field"] == ["name"]
    assert sandbox.calls_to("instant") == 0


@pytest.mark.parametrize(
    ("field", "size"), [("name", 513), ("domain", 1025)], ids=["name", "domain"]
)
async def test_field_lengths_are_bounded(
    gateway: TestClient[Any, Any], sandbox: Sandbox, field: str, size: int
) -> None:
    """Over-long fields answer 400 in Clearout's Joi shape before any upstream call."""
    body = {"name": "Steven Morris", "domain": "apple.com", field: "a" * size}
    resp = await gateway.post(INSTANT, json=body, headers=auth())
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["code"] == 9100
    assert error["reasons"][0]["messages"] == [
        f'"{field}" length must be less than or equal to {size - 1} characters long'
    ]
    assert sandbox.calls_to("instant") == 0


# ---- headers and bodies that do not parse ------------------------------------


async def test_non_utf8_authorization_is_401(gateway: TestClient[Any, Any]) -> None:
    """A key with raw non-UTF-8 bytes is an unknown key (401), not a server error."""
    raw = await raw_exchange(gateway, http_post(
        INSTANT,
        {"Authorization": b"alpha-key-1\xff", "Content-Type": b"application/json"},
        b'{"name": "Steven Morris", "domain": "apple.com"}',
    ))  # fmt: skip
    status, body = status_and_json(raw)
    assert status == 401 and body["error"]["code"] == 9001


async def test_form_encoded_body_is_415(gateway: TestClient[Any, Any], sandbox: Sandbox) -> None:
    """A declared non-JSON body on a JSON route is the wrong media type, as documented."""
    resp = await gateway.post(
        INSTANT, data="name=Steven+Morris&domain=apple.com",
        headers={**auth(), "Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    assert resp.status == 415
    assert resp.headers["X-Gateway-Error"] == "unsupported_media_type"
    assert (await resp.json())["error"]["code"] == 9102
    assert sandbox.calls_to("instant") == 0


async def test_json_without_content_type_still_works(gateway: TestClient[Any, Any]) -> None:
    """A client that sends its JSON with no Content-Type at all is still understood."""
    raw = await raw_exchange(gateway, http_post(
        INSTANT, {"Authorization": b"alpha-key-1"},
        b'{"name": "Steven Morris", "domain": "apple.com"}',
    ))  # fmt: skip
    assert status_and_json(raw)[0] == 200


BOUNDARY = "XyZ123"
GOOD_PART = (
    f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.csv\"\r\n"
    f"Content-Type: text/csv\r\n\r\nFull Name,Domain\r\nAnn Lee,apple.com\r\n"
)
MALFORMED_MULTIPART = {
    "boundary-mismatch": (BOUNDARY, GOOD_PART.replace(BOUNDARY, "other") + "--other--\r\n"),
    "no-closing-boundary": (BOUNDARY, GOOD_PART),
    "empty-boundary": ("", GOOD_PART),
    "part-header-without-colon": (
        BOUNDARY, f"--{BOUNDARY}\r\nContent-Disposition form-data\r\n\r\nx\r\n--{BOUNDARY}--\r\n",
    ),
    "empty-body": (BOUNDARY, ""),
    "control-char-in-name": (
        BOUNDARY,
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="fi\x01le"; filename="a.csv"'
        f"\r\n\r\nx\r\n--{BOUNDARY}--\r\n",
    ),
    "garbage": (BOUNDARY, "\x00\xff" * 100),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_MULTIPART))
async def test_malformed_multipart_is_a_4xx(
    gateway: TestClient[Any, Any], sandbox: Sandbox, case: str
) -> None:
    """Every multipart body that does not parse answers 400 in the envelope, never 500."""
    boundary, body = MALFORMED_MULTIPART[case]
    resp = await gateway.post(
        BULK, data=body.encode("latin-1"),
        headers={**auth(), "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )  # fmt: skip
    assert 400 <= resp.status < 500, (case, resp.status, await resp.text())
    assert resp.headers.get("X-Gateway-Error") in ("bad_request", "validation_failed")
    assert (await resp.json())["status"] == "failed"
    assert sandbox.calls_to("bulk") == 0


async def test_a_body_of_thousands_of_parts_is_refused_without_stalling_others(
    gateway: TestClient[Any, Any], sandbox: Sandbox
) -> None:
    """20,000 tiny form fields before the file: 400 once past the bound on parts, and
    /healthz meanwhile answers at once.  Before, every part was parsed (~0.2 ms each on
    the event loop: seconds for other callers) and the file at the end went upstream."""
    fields = "".join(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\nv\r\n'
        for i in range(20_000)
    )
    body = (fields + GOOD_PART + f"\r\n--{BOUNDARY}--\r\n").encode()
    headers = {**auth(), "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    upload = asyncio.create_task(gateway.post(BULK, data=io.BytesIO(body), headers=headers))
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    assert (await gateway.get("/healthz")).status == 200
    latency = time.perf_counter() - started
    resp = await upload
    assert resp.status == 400, await resp.text()
    assert resp.headers["X-Gateway-Error"] == "bad_request"
    assert "form fields" in (await resp.json())["error"]["message"]
    assert latency < 0.5, latency
    assert sandbox.calls_to("bulk") == 0


HOSTILE_FILENAMES = {
    "raw-bytes": b'filename="\xff\xfe.csv"',
    "crlf-injection": b"filename*=UTF-8''a%0D%0AX-Injected%3A%201.csv",
    "nul": b"filename*=UTF-8''a%00b.csv",
    "path": b'filename="../../etc/passwd.csv"',
}


@pytest.mark.parametrize("case", sorted(HOSTILE_FILENAMES))
async def test_hostile_file_names_are_sanitised(
    gateway: TestClient[Any, Any], sandbox: Sandbox, case: str
) -> None:
    """The upload goes through; upstream sees a safe ASCII name that keeps the extension."""
    disposition = b'Content-Disposition: form-data; name="file"; ' + HOSTILE_FILENAMES[case]
    body = (
        f"--{BOUNDARY}\r\n".encode() + disposition + b"\r\nContent-Type: text/csv\r\n\r\n"
        + contacts_csv([("Ann Lee", "apple.com")]) + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    raw = await raw_exchange(gateway, http_post(BULK, {
        "Authorization": b"alpha-key-1",
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}".encode(),
    }, body))  # fmt: skip
    status, payload = status_and_json(raw)
    assert status == 200 and payload["status"] == "success", payload
    (uploaded,) = sandbox.lists.values()
    name = uploaded.filename
    assert name.endswith(".csv") and name.isascii() and name.isprintable(), name
    assert not any(ch in name for ch in "/\\\r\n\x00\"'"), name


async def test_oversized_form_field_is_refused(gateway: TestClient[Any, Any]) -> None:
    """A form field other than the file is small; a huge one is refused, not buffered."""
    form = aiohttp.FormData()
    form.add_field("ignore_duplicate_file", "x" * 10_000)
    form.add_field("file", contacts_csv([("Ann Lee", "apple.com")]), filename="a.csv")
    resp = await gateway.post(BULK, data=form, headers=auth())
    assert resp.status == 400
    assert resp.headers["X-Gateway-Error"] == "bad_request"


async def test_header_too_large_and_bad_request_line_use_the_envelope(
    gateway: TestClient[Any, Any],
) -> None:
    """aiohttp's own parse errors reach the caller as Clearout envelopes, not plain text."""
    raw = await raw_exchange(gateway, http_post(
        INSTANT, {"Authorization": b"alpha-key-1", "X-Big": b"a" * 9000}, b"{}"
    ))  # fmt: skip
    status, body = status_and_json(raw)
    assert status == 431 and body["error"]["code"] == 9107
    raw = await raw_exchange(gateway, b"GARBAGE\r\n\r\n")
    status, body = status_and_json(raw)
    assert status == 400 and body["error"]["code"] == 9106
    assert b"GARBAGE" not in raw, "the input is not echoed back"


# ---- callers that hang up ---------------------------------------------------------


async def metric_value(client: TestClient[Any, Any], name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    text = await (await client.get("/metrics")).text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


async def test_a_caller_hanging_up_is_499_not_500(
    make_gateway: GatewayFactory, log_output: Any, sandbox: Sandbox
) -> None:
    """Hang-ups mid-upload and mid-lookup count as 499 and log no traceback."""
    gateway = await make_gateway()
    assert gateway.port is not None
    # Mid-upload: headers promise 1 MB, a few bytes arrive, the caller leaves.
    _reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(
        b"POST /v2/email_finder/bulk HTTP/1.1\r\nHost: g\r\nAuthorization: alpha-key-1\r\n"
        b"Content-Type: multipart/form-data; boundary=" + BOUNDARY.encode()
        + b"\r\nContent-Length: 1000000\r\n\r\n" + GOOD_PART.encode()
    )  # fmt: skip
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.close()
    # Mid-lookup: the upstream takes 0.5 s, the caller gives up after 0.1 s.
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await gateway.post(INSTANT, json={"name": "Ann Lee", "domain": "slow.test"},
                               headers=auth())  # fmt: skip
    await asyncio.sleep(0.8)
    requests = "clearout_gateway_requests_total"
    assert await metric_value(gateway, requests, route="bulk", status="499") == 1
    assert await metric_value(gateway, requests, route="instant", status="499") == 1
    assert await metric_value(gateway, requests, status="500") == 0
    text = log_output.text()
    assert "unhandled_error" not in text and "Traceback" not in text
    # The lookup the caller left still finished and was cached: asking again is free.
    status = await gateway.post(INSTANT, json={"name": "Ann Lee", "domain": "slow.test"},
                                headers=auth())  # fmt: skip
    assert status.headers["X-Cache"] == "HIT"
    assert sandbox.calls_to("instant") == 1


# ---- money: every credit counted once ---------------------------------------------


async def test_bulk_spend_of_a_team_without_quota_is_counted(
    gateway: TestClient[Any, Any], sandbox: Sandbox
) -> None:
    """A completed bulk list of an unlimited team reaches credits_spent_total, exactly once."""
    form = aiohttp.FormData()
    rows = [("Ann Lee", "apple.com"), ("Bob Stone", "apple.com"), ("info", "apple.com")]
    form.add_field("file", contacts_csv(rows), filename="spend.csv")
    resp = await gateway.post(BULK, data=form, headers=auth())
    list_id = (await resp.json())["data"]["list_id"]
    await asyncio.sleep(0.8)  # the sandbox completes lists after 0.6 s
    for _ in range(3):  # asked several times: settled once
        resp = await gateway.get("/v2/email_finder/bulk/progress_status",
                                 params={"list_id": list_id}, headers=auth())  # fmt: skip
        assert (await resp.json())["data"]["progress_status"] == "completed"
    spent = "clearout_gateway_credits_spent_total"
    for _ in range(50):
        if await metric_value(gateway, spent, team="alpha"):
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)
    assert await metric_value(gateway, spent, team="alpha") == 4 + 4 + 2


async def test_sandbox_result_file_neutralises_formulas(
    gateway: TestClient[Any, Any], sandbox: Sandbox
) -> None:
    """Cells a spreadsheet would run (=, +, -, @) come back as text in the result file."""
    out = io.StringIO()
    csv.writer(out).writerows([
        ["Full Name", "Domain", "Note"],
        ["Ann Lee", "apple.com", '=HYPERLINK("http://x","y")'],
        ["Bob Stone", "apple.com", "@SUM(A1)"],
    ])  # fmt: skip
    form = aiohttp.FormData()
    form.add_field("file", out.getvalue().encode(), filename="formula.csv")
    list_id = (await (await gateway.post(BULK, data=form, headers=auth())).json())["data"]["list_id"]
    await asyncio.sleep(0.8)
    resp = await gateway.post("/v2/email_finder/download/result", json={"list_id": list_id},
                              headers=auth())  # fmt: skip
    url = (await resp.json())["data"]["url"]
    async with aiohttp.ClientSession() as session, session.get(url) as result:
        rows = list(csv.reader(io.StringIO(await result.text())))
    notes = [row[2] for row in rows[1:]]
    assert notes == ["'=HYPERLINK(\"http://x\",\"y\")", "'@SUM(A1)"]
