"""The gateway's own bulk lists: one record per list, shared by every replica.

A list the gateway answers (partly) from its cache gets an id of its own, in
Clearout's 24-hex form, and a record: its team, file and dialect, its row
counts, the upstream list that holds its unknown people (if any), the
credits held for them, and where it stands (`running` → `merging` →
`completed`, or `cancelled` / `failed` as upstream reported).  With Redis it
is one hash `cgw:bl:<id>` expiring with the list, plus an index of lists
still running for the poller; the replica that finishes a list first claims
it (`SET NX` with a lease), so settlement and the merge happen once.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol

from cachetools import TTLCache
from redis.asyncio import Redis

from gateway.store import live_members, text

PREFIX = "cgw:bl:"
FILE_PREFIX = "cgw:bl:file:"
RUNNING = "cgw:bl:running"
CLAIM_SUFFIX = ":claim"
MEMORY_LISTS = 10_000


def new_list_id() -> str:
    # Clearout's ids are 24-hex MongoDB ObjectIds: 4-byte time + 8 random bytes.
    return f"{int(time.time()):08x}" + secrets.token_hex(8)


@dataclass
class GatewayList:
    list_id: str
    team: str
    filename: str  # the upload's (safe) name
    kind: str  # csv | xlsx
    delimiter: str
    bom: bool
    created_on: str  # as Clearout writes it: "2022-05-16 10:41:30.427Z"
    rows: int
    cache_rows: int
    upstream_rows: int
    duplicate_rows: int
    saved_credits: int
    upstream_list: str = ""  # the upstream list of the unknown people, "" when none
    reservation: str = ""  # Reservation.dumps() of the credits held for them
    state: str = "running"  # running | merging | completed | cancelled | failed
    percentage: int = 0  # where upstream stood when cancelled or failed
    settled: bool = False
    downloaded: bool = False
    file_token: str = ""  # see `file_token`: a repeated upload of the same file is refused

    def to_redis(self) -> dict[str, str | int]:
        return {k: (int(v) if isinstance(v, bool) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_redis(cls, raw: dict[Any, Any]) -> GatewayList:
        values = {text(k): text(v) for k, v in raw.items()}
        out: dict[str, Any] = {}
        for f in fields(cls):
            value = values.get(f.name, "")
            out[f.name] = _cast(f.type, value)
        return cls(**out)


def _cast(kind: Any, value: str) -> Any:
    if kind in ("int", int):
        return int(value or 0)
    if kind in ("bool", bool):
        return value not in ("", "0", "False")
    return value


def file_token(team: str, filename: str, size: int) -> str:
    """What makes two uploads "the same file" for Clearout: its name and size (per team)."""
    return hashlib.sha256(f"{team}|{filename}|{size}".encode()).hexdigest()[:32]


class ListStore(Protocol):
    async def create(self, item: GatewayList, ttl: int) -> None: ...
    async def same_file(self, token: str) -> str | None: ...
    async def remember_file(self, token: str, list_id: str, ttl: int) -> None: ...
    async def forget_file(self, token: str) -> None: ...
    async def get(self, list_id: str) -> GatewayList | None: ...
    async def update(self, list_id: str, **changes: str | int | bool) -> None: ...
    async def claim(self, list_id: str, lease_ms: int) -> bool: ...
    async def claimed(self, list_id: str) -> bool: ...
    async def release(self, list_id: str) -> None: ...
    async def delete(self, list_id: str) -> None: ...
    async def running(self, limit: int) -> list[str]: ...


class RedisLists:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def create(self, item: GatewayList, ttl: int) -> None:
        key = PREFIX + item.list_id
        await self._redis.hset(key, mapping=item.to_redis())  # type: ignore[arg-type]
        await self._redis.expire(key, ttl)
        if item.state == "running":
            await self._redis.sadd(RUNNING, item.list_id)

    async def get(self, list_id: str) -> GatewayList | None:
        raw = await self._redis.hgetall(PREFIX + list_id)
        return GatewayList.from_redis(raw) if raw else None

    async def same_file(self, token: str) -> str | None:
        raw = await self._redis.get(FILE_PREFIX + token)
        return None if raw is None else text(raw)

    async def remember_file(self, token: str, list_id: str, ttl: int) -> None:
        await self._redis.set(FILE_PREFIX + token, list_id, ex=ttl)

    async def forget_file(self, token: str) -> None:
        await self._redis.delete(FILE_PREFIX + token)

    async def update(self, list_id: str, **changes: str | int | bool) -> None:
        mapping = {k: int(v) if isinstance(v, bool) else v for k, v in changes.items()}
        if await self._redis.exists(PREFIX + list_id):
            await self._redis.hset(PREFIX + list_id, mapping=mapping)  # type: ignore[arg-type]
        if changes.get("state") not in (None, "running", "merging"):
            await self._redis.srem(RUNNING, list_id)

    async def claim(self, list_id: str, lease_ms: int) -> bool:
        return bool(
            await self._redis.set(PREFIX + list_id + CLAIM_SUFFIX, b"1", nx=True, px=lease_ms)
        )

    async def claimed(self, list_id: str) -> bool:
        return bool(await self._redis.exists(PREFIX + list_id + CLAIM_SUFFIX))

    async def release(self, list_id: str) -> None:
        await self._redis.delete(PREFIX + list_id + CLAIM_SUFFIX)

    async def delete(self, list_id: str) -> None:
        await self._redis.delete(PREFIX + list_id)
        await self._redis.srem(RUNNING, list_id)

    async def running(self, limit: int) -> list[str]:
        return await live_members(self._redis, RUNNING, PREFIX, limit)


class MemoryLists:
    """Same semantics in one process, bounded (the least recently used go first)."""

    def __init__(self, ttl: int, entries: int = MEMORY_LISTS) -> None:
        self._items: TTLCache[str, GatewayList] = TTLCache(entries, ttl, timer=time.monotonic)
        self._claims: TTLCache[str, bool] = TTLCache(entries, 600, timer=time.monotonic)
        self._files: TTLCache[str, str] = TTLCache(entries, ttl, timer=time.monotonic)

    async def create(self, item: GatewayList, ttl: int) -> None:
        self._items[item.list_id] = item

    async def get(self, list_id: str) -> GatewayList | None:
        item = self._items.get(list_id)
        return None if item is None else GatewayList(**asdict(item))

    async def same_file(self, token: str) -> str | None:
        return self._files.get(token)

    async def remember_file(self, token: str, list_id: str, ttl: int) -> None:
        self._files[token] = list_id

    async def forget_file(self, token: str) -> None:
        self._files.pop(token, None)

    async def update(self, list_id: str, **changes: str | int | bool) -> None:
        item = self._items.get(list_id)
        if item is not None:
            for name, value in changes.items():
                setattr(item, name, value)

    async def claim(self, list_id: str, lease_ms: int) -> bool:
        if list_id in self._claims:
            return False
        self._claims[list_id] = True
        return True

    async def claimed(self, list_id: str) -> bool:
        return list_id in self._claims

    async def release(self, list_id: str) -> None:
        self._claims.pop(list_id, None)

    async def delete(self, list_id: str) -> None:
        self._items.pop(list_id, None)

    async def running(self, limit: int) -> list[str]:
        live = [k for k, v in list(self._items.items()) if v.state in ("running", "merging")]
        return live[:limit]
