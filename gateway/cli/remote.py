"""A small client of a running gateway, for the commands people run (`bulk`, `import-results`).

One aiohttp session, one deadline for the whole command, and every answer
that is not a success turned into `CommandFailed`, whose message is the one
line the command prints: a refused key (401), a gateway that cannot be
reached or does not answer in time, an unsupported file (Clearout's 1100 or
a validation failure), a quota refusal (402, 9200), or any other failure
with the message the gateway or Clearout gave.  The key travels only to the
gateway: result links are signed, so fetching one sends no credentials.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_LIST_ENDED = 3  # cancelled or failed: what it answered was written
UNSUPPORTED_FILE = 1100
QUOTA_EXCEEDED = 9200
READ_CHUNK = 256 * 1024


class CommandFailed(Exception):
    """Why a command stops; the message is the one line it prints on stderr.

    `code` is the answer's `error.code` when there was one, for a caller
    that waits out a particular refusal.
    """

    def __init__(self, message: str, exit_code: int = EXIT_FAILED, code: object = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.code = code


def fail(command: str, exc: CommandFailed) -> int:
    """Print the one line saying why `command` stopped; its exit status."""
    # One line whatever the message held: scripts read stderr line by line.
    print(f"clearout-gateway {command}: {' '.join(str(exc).split())}", file=sys.stderr)
    return exc.exit_code


def flag_or_env(value: str | None, variable: str, flag: str) -> str:
    """A flag's value, else the environment variable's; a usage error when neither is set."""
    found = value if value is not None else os.environ.get(variable, "")
    if not found.strip():
        raise CommandFailed(f"{flag} is not given and ${variable} is not set", EXIT_USAGE)
    return found.strip()


def gateway_url(value: str | None) -> str:
    url = flag_or_env(value, "CLEAROUT_GATEWAY_URL", "--url")
    if not url.startswith(("http://", "https://")):
        raise CommandFailed(f"the gateway URL must be http:// or https://, not {url}", EXIT_USAGE)
    return url.rstrip("/")


def readable(path: Path) -> Path:
    """`path` when it is a file this process can read; a usage error otherwise."""
    try:
        with path.open("rb"):
            return path
    except OSError as exc:
        raise CommandFailed(f"cannot read {path}: {exc.strerror or exc}", EXIT_USAGE) from None


def _message(error: dict[str, Any]) -> str:
    """The error's message, with the reasons of a validation failure."""
    message = str(error.get("message") or "no message")
    reasons = error.get("reasons")
    if isinstance(reasons, list):
        texts = [m for r in reasons if isinstance(r, dict) for m in r.get("messages") or []]
        if texts:
            message = f"{message}: {'; '.join(map(str, texts))}"
    return message


def explain(what: str, status: int, payload: Any, *, file_step: bool = False) -> str:
    """The one line saying why `what` was refused with this answer."""
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        return f"{what}: HTTP {status} from the gateway, without an error message"
    code = error.get("code")
    tag = f"HTTP {status}" + (f", code {code}" if code is not None else "")
    message = _message(error)
    if status == 401:
        return f"{what}: the key was refused ({tag}): {message}"
    if code == QUOTA_EXCEEDED:
        return f"{what}: quota refused ({tag}): {message}"
    if file_step and (code == UNSUPPORTED_FILE or "reasons" in error):
        return f"{what}: unsupported file ({tag}): {message}"
    return f"{what}: {message} ({tag})"


class Remote:
    """Requests to one gateway with one credential, all within one deadline."""

    def __init__(
        self, session: aiohttp.ClientSession, base: str, authorization: str, deadline: float
    ) -> None:
        self.session = session
        self.base = base.rstrip("/")
        self.authorization = authorization
        self.deadline = deadline

    @classmethod
    @asynccontextmanager
    async def open(cls, base: str, authorization: str, seconds: float) -> AsyncIterator[Remote]:
        deadline = asyncio.get_running_loop().time() + seconds
        async with aiohttp.ClientSession() as session:
            yield cls(session, base, authorization, deadline)

    def left(self) -> float:
        return self.deadline - asyncio.get_running_loop().time()

    async def sleep(self, seconds: float, waiting_for: str) -> None:
        if self.left() <= seconds:
            raise CommandFailed(f"gave up waiting for {waiting_for}: --timeout reached")
        await asyncio.sleep(seconds)

    async def call(
        self, what: str, method: str, path: str, *, file_step: bool = False, **kwargs: Any
    ) -> dict[str, Any]:
        """`data` of a success answer; anything else is CommandFailed."""
        status, payload = await self._request(what, method, path, **kwargs)
        data = payload.get("data") if isinstance(payload, dict) else None
        if 200 <= status < 300 and isinstance(data, dict) and payload.get("status") == "success":
            return data
        error = payload.get("error") if isinstance(payload, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
        raise CommandFailed(explain(what, status, payload, file_step=file_step), code=code)

    async def _request(self, what: str, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        headers = {"Authorization": self.authorization, "Accept": "application/json"}
        timeout = aiohttp.ClientTimeout(total=max(0.1, self.left()))
        try:
            async with self.session.request(
                method, self.base + path, headers=headers, timeout=timeout, **kwargs
            ) as resp:
                try:
                    return resp.status, await resp.json(content_type=None)
                except ValueError:
                    return resp.status, None
        except aiohttp.ClientConnectorError as exc:
            reason = _reason(exc)
            raise CommandFailed(f"cannot reach the gateway at {self.base}: {reason}") from None
        except TimeoutError:
            raise CommandFailed(f"{what}: the gateway did not answer before --timeout") from None
        except aiohttp.ClientError as exc:
            raise CommandFailed(f"{what}: the connection to the gateway failed: {exc}") from None

    async def upload(self, path: Path, route: str, what: str) -> dict[str, Any]:
        """POST `path` as the multipart `file` field (streamed from disk)."""
        with path.open("rb") as fh:
            form = aiohttp.FormData()
            form.add_field("file", fh, filename=path.name, content_type=_media_type(path))
            if route.endswith("/bulk"):
                # Running the command again on the same file means "run it now":
                # known rows come from the cache anyway.
                form.add_field("ignore_duplicate_file", "true")
            return await self.call(what, "POST", route, data=form, file_step=True)

    async def download(self, url: str, target: Path) -> int:
        """Fetch a result link into `target` (whole or not at all); the bytes written."""
        partial = target.with_name(f".{target.name}.partial")
        timeout = aiohttp.ClientTimeout(total=max(0.1, self.left()))
        try:
            async with self.session.get(url, timeout=timeout) as resp:
                if resp.status != 200:
                    payload = await _json_or_none(resp)
                    raise CommandFailed(explain("fetching the result", resp.status, payload))
                size = await _save(resp, partial)
            partial.replace(target)
        except aiohttp.ClientConnectorError as exc:
            raise CommandFailed(f"cannot reach the result link's host: {_reason(exc)}") from None
        except aiohttp.ClientError as exc:
            raise CommandFailed(f"fetching the result failed: {exc}") from None
        except TimeoutError:
            raise CommandFailed("fetching the result: no answer before --timeout") from None
        except OSError as exc:
            raise CommandFailed(f"cannot write {target}: {exc.strerror or exc}") from None
        finally:
            partial.unlink(missing_ok=True)  # a half-written file is never left behind
        return size


async def _save(resp: aiohttp.ClientResponse, partial: Path) -> int:
    size = 0
    with partial.open("wb") as out:
        async for chunk in resp.content.iter_chunked(READ_CHUNK):
            out.write(chunk)
            size += len(chunk)
    return size


async def _json_or_none(resp: aiohttp.ClientResponse) -> Any:
    try:
        return await resp.json(content_type=None)
    except ValueError:
        return None


def _reason(exc: aiohttp.ClientConnectorError) -> str:
    error = exc.os_error
    if error.errno is not None and error.errno > 0:
        return os.strerror(error.errno)
    return str(error) or type(error).__name__


def _media_type(path: Path) -> str:
    if path.suffix.lower() == ".xlsx":
        return "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    if path.suffix.lower() == ".csv":
        return "text/csv"
    return "application/octet-stream"
