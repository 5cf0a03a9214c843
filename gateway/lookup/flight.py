"""A lookup's round trips to Redis: one to look (and maybe lead), one to finish.

A miss used to cost seven sequential round trips (entry, queued marker,
lock, re-check, store, release, wake-up).  Here they are two scripts over the
keys of one person, which share a Redis Cluster hash slot: the entry
`cgw:c:<key>` hashes as a whole, and its lease `{cgw:c:<key>}:lease` and
queued marker `{cgw:c:<key>}:queued` hash on the same text through their
hash tag.

* `look` reads the entry and the queued marker and, when neither is there,
  takes the lease, atomically: a reader that finds nothing is the leader, or
  learns that someone else is.
* `finish` stores the answer, releases the lease (if still ours) and, when
  a caller was told to wait (it raised the person's `:waiting` flag), wakes
  the waiters (`PUBLISH`).

A key with a brace of its own cannot be given a matching hash tag; such keys
(rare: a brace inside a name) take the same steps as separate commands.
Without Redis the in-process twin answers from the cache's memory layer.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Literal, Protocol

from redis.asyncio import Redis

from gateway.lookup.cache import DROP_CHANNEL, LookupCache
from gateway.lookup.entries import CachedAnswer, decode, encode
from gateway.lookup.queued import QueuedStore, queued_key
from gateway.store import STORE_ERRORS, Script, ScriptArg, StoreGuard, text

DONE_PREFIX = "cgw:sf:done:"
WAITING_FLAG_MS = 2000

LookKind = Literal["hit", "queued", "lead", "wait"]

# KEYS: entry, queued marker, lease, waiting flag.
# ARGV: token, lease ms, read (1/0), waiting flag ms.
# Taking the lease is idempotent (a lease already ours is led), so a script
# sent again after a lost reply does not wait on its own lease.  A caller
# told to wait raises the waiting flag, so that the finish wakes waiters only
# when there are any: most lookups have none, and a PUBLISH reaches every
# replica's listener.
LOOK_LUA = """
if ARGV[3] == '1' then
  local entry = redis.call('get', KEYS[1])
  if entry then return {1, entry} end
  local qid = redis.call('get', KEYS[2])
  if qid then return {2, qid} end
end
if redis.call('set', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[2])
    or redis.call('get', KEYS[3]) == ARGV[1] then
  return {3, ''}
end
redis.call('set', KEYS[4], '1', 'PX', ARGV[4])
return {4, ''}
"""

# KEYS: entry, lease, waiting flag.  ARGV: encoded entry ('' for none), ttl ms,
# token, channel, replaced (1: the entry replaces one replicas may hold), drop channel.
FINISH_LUA = """
if ARGV[1] ~= '' then redis.call('psetex', KEYS[1], ARGV[2], ARGV[1]) end
if redis.call('get', KEYS[2]) == ARGV[3] then redis.call('del', KEYS[2]) end
if redis.call('del', KEYS[3]) == 1 then redis.call('publish', ARGV[4], '1') end
if ARGV[5] == '1' and ARGV[1] ~= '' then redis.call('publish', ARGV[6], KEYS[1]) end
return 1
"""

# Extend the lease only while it is still ours.
RENEW_LUA = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""

# Delete the lease only if it is still ours (the slow path of FINISH_LUA).
RELEASE_LUA = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""

_KINDS: dict[int, LookKind] = {1: "hit", 2: "queued", 3: "lead", 4: "wait"}


def lease_key(key: str) -> str:
    return "{" + key + "}:lease"


def waiting_key(key: str) -> str:
    return "{" + key + "}:waiting"


@dataclass(frozen=True, slots=True)
class Look:
    """What a look at a key found; `token` "" means lead without a lease (no Redis)."""

    kind: LookKind
    answer: CachedAnswer | None = None
    qid: str = ""
    token: str = ""


class FlightStore(Protocol):
    async def look(self, key: str, *, read: bool) -> Look: ...
    async def finish(
        self, key: str, token: str, entry: CachedAnswer | None, ttl: float, *, replaced: bool
    ) -> None: ...
    async def renew(self, key: str, token: str) -> bool: ...


class RedisFlights:
    def __init__(self, redis: Redis, guard: StoreGuard, lease_ms: int) -> None:
        self._redis = redis
        self._guard = guard
        self._lease_ms = lease_ms
        # A waiter raises the flag again at every look (every POLL_SECONDS at
        # the most), so it outlives the gaps between them.
        self._waiting_ms = max(lease_ms, WAITING_FLAG_MS)
        self._look = Script(redis, LOOK_LUA, idempotent=True)
        self._finish = Script(redis, FINISH_LUA, idempotent=True)
        self._renew = Script(redis, RENEW_LUA, idempotent=True)
        self._release = Script(redis, RELEASE_LUA, idempotent=True)

    async def look(self, key: str, *, read: bool) -> Look:
        if not self._guard.available:
            return Look("lead")  # degrade: lead without a lease (pass-through)
        token = secrets.token_hex(8)
        try:
            if "{" in key or "}" in key:
                kind, value = await self._look_slowly(key, token, read)
            else:
                keys = [key, queued_key(key), lease_key(key), waiting_key(key)]
                args: list[ScriptArg] = [token, self._lease_ms, int(read), self._waiting_ms]
                kind, value = await self._look(keys=keys, args=args)
        except STORE_ERRORS as exc:
            self._guard.failed(exc)
            return Look("lead")
        found = _KINDS[int(kind)]
        if found == "hit":
            answer = decode(value)
            if answer is None:  # a foreign or corrupt entry: a miss, led and replaced
                return await self.look(key, read=False)
            return Look("hit", answer)
        if found == "queued":
            return Look("queued", qid=text(value))
        return Look(found, token=token if found == "lead" else "")

    async def _look_slowly(self, key: str, token: str, read: bool) -> tuple[int, bytes | str]:
        if read:
            entry = await self._redis.get(key)
            if entry is not None:
                return 1, entry
            qid = await self._redis.get(queued_key(key))
            if qid is not None:
                return 2, qid
        taken = await self._redis.set(lease_key(key), token, nx=True, px=self._lease_ms)
        return (3 if taken else 4), b""

    async def finish(
        self, key: str, token: str, entry: CachedAnswer | None, ttl: float, *, replaced: bool
    ) -> None:
        """Store `entry` (if any), release the lease, wake waiters; `replaced`: the
        entry may replace one other replicas hold in memory (a refresh), so they drop it."""
        if not self._guard.available:
            return  # the lease lapses by itself; waiters poll
        value = encode(entry) if entry is not None else b""
        ttl_ms = max(1, int(ttl * 1000))
        try:
            if "{" in key or "}" in key:
                await self._finish_slowly(key, token, value, ttl_ms, replaced=replaced)
            elif token or value:
                await self._finish(
                    keys=[key, lease_key(key), waiting_key(key)],
                    args=[value, ttl_ms, token, DONE_PREFIX + key, int(replaced), DROP_CHANNEL],
                )
        except STORE_ERRORS as exc:  # the lease lapses by itself; waiters poll too
            self._guard.failed(exc)

    async def _finish_slowly(
        self, key: str, token: str, value: bytes, ttl_ms: int, *, replaced: bool
    ) -> None:
        if value:
            await self._redis.psetex(key, ttl_ms, value)
        if token:
            await self._release(keys=[lease_key(key)], args=[token])
        await self._redis.publish(DONE_PREFIX + key, b"1")
        if value and replaced:
            await self._redis.publish(DROP_CHANNEL, key)

    async def renew(self, key: str, token: str) -> bool:
        try:
            return bool(await self._renew(keys=[lease_key(key)], args=[token, self._lease_ms]))
        except STORE_ERRORS as exc:  # try again next period; the lease may lapse
            self._guard.failed(exc)
            return True


class MemoryFlights:
    """Without Redis: the cache's layers and the in-process queued store."""

    def __init__(self, cache: LookupCache, queued: QueuedStore) -> None:
        self._cache = cache
        self._queued = queued

    async def look(self, key: str, *, read: bool) -> Look:
        if read:
            answer = await self._cache.get(key)
            if answer is not None:
                return Look("hit", answer)
            item = await self._queued.by_key(key)
            if item is not None:
                return Look("queued", qid=item.qid)
        return Look("lead")

    async def finish(
        self, key: str, token: str, entry: CachedAnswer | None, ttl: float, *, replaced: bool
    ) -> None:
        if entry is not None:
            await self._cache.set(key, entry, ttl)

    async def renew(self, key: str, token: str) -> bool:
        return True
