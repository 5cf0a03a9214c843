"""Files every replica can read: a list's upload, its pre-answers and its merged result.

With Redis, a file is kept as zlib-compressed chunks of at most `CHUNK` bytes
(`cgw:blob:<name>:<i>`), written first, then made visible by its chunk count
(`cgw:blob:<name>`), each with the list's expiry; a reader streams it back a
chunk at a time, never holding it whole.  Compression is fast (level 1) and
CSV shrinks four to eight times, so a list costs Redis a fraction of its
size for as long as it lives (GATEWAY_BULK_LIST_TTL_SECONDS).  Compressing
and inflating run in worker threads: inflating one chunk of a CSV takes
~20 ms, which would hold up every other request on the event loop.  Without Redis
(one replica) the files stay in the spool directory and expire on a sweep.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO, Protocol

from redis.asyncio import Redis

PREFIX = "cgw:blob:"
CHUNK = 1024 * 1024
READ = 1024 * 1024


class BlobStore(Protocol):
    async def put(self, name: str, path: Path, ttl: int) -> int: ...
    def read(self, name: str) -> AsyncIterator[bytes]: ...
    async def exists(self, name: str) -> bool: ...
    async def delete(self, name: str) -> None: ...


async def fetch(store: BlobStore, name: str, path: Path) -> bool:
    """Write blob `name` to `path`; False when there is no such blob."""
    found = False
    with path.open("wb") as out:
        async for chunk in store.read(name):
            found = True
            await asyncio.to_thread(out.write, chunk)  # megabytes: not on the event loop
    return found


class RedisBlobs:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def put(self, name: str, path: Path, ttl: int) -> int:
        """Store `path` as `name` for `ttl` seconds; the bytes it took in Redis."""
        packer = zlib.compressobj(1)
        pending = b""
        count = stored = 0
        with path.open("rb") as source:
            while (packed := await asyncio.to_thread(_pack, source, packer)) is not None:
                pending += packed
                while len(pending) >= CHUNK:
                    await self._redis.set(f"{PREFIX}{name}:{count}", pending[:CHUNK], ex=ttl)
                    stored, count, pending = stored + CHUNK, count + 1, pending[CHUNK:]
        pending += packer.flush()
        if pending:
            await self._redis.set(f"{PREFIX}{name}:{count}", pending, ex=ttl)
            stored, count = stored + len(pending), count + 1
        await self._redis.set(PREFIX + name, count, ex=ttl)  # now readers see it whole
        return stored

    async def read(self, name: str) -> AsyncIterator[bytes]:
        raw = await self._redis.get(PREFIX + name)
        if raw is None:
            return
        unpacker = zlib.decompressobj()
        for index in range(int(raw)):
            chunk = await self._redis.get(f"{PREFIX}{name}:{index}")
            if not isinstance(chunk, bytes):  # expired under us: what was read is all
                return
            # A chunk inflates to 5-10 MiB: handed on READ bytes at a time, so a
            # reader never holds more.
            while chunk:
                yield await asyncio.to_thread(unpacker.decompress, chunk, READ)
                chunk = unpacker.unconsumed_tail
        yield unpacker.flush()

    async def exists(self, name: str) -> bool:
        return bool(await self._redis.exists(PREFIX + name))

    async def delete(self, name: str) -> None:
        raw = await self._redis.get(PREFIX + name)
        await self._redis.delete(PREFIX + name)
        for index in range(int(raw or 0)):
            await self._redis.delete(f"{PREFIX}{name}:{index}")


def _pack(source: BinaryIO, packer: zlib._Compress) -> bytes | None:
    """The next piece of `source`, compressed (maybe empty); None at its end."""
    data = source.read(READ)
    return packer.compress(data) if data else None


class FileBlobs:
    """The single-replica twin: files in a directory, swept when past their time."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._dir.mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        return self._dir / name

    async def put(self, name: str, path: Path, ttl: int) -> int:
        target = self._path(name)
        partial = target.with_suffix(".partial")
        await asyncio.to_thread(shutil.copyfile, path, partial)
        expires = time.time() + ttl
        os.utime(partial, (expires, expires))  # mtime holds the expiry
        partial.replace(target)
        return target.stat().st_size

    async def read(self, name: str) -> AsyncIterator[bytes]:
        path = self._path(name)
        if not path.is_file():
            return
        with path.open("rb") as source:
            while data := await asyncio.to_thread(source.read, READ):
                yield data

    async def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    async def delete(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)

    async def sweep(self) -> None:
        now = time.time()
        for path in self._dir.iterdir():
            if path.stat().st_mtime < now:
                path.unlink(missing_ok=True)
