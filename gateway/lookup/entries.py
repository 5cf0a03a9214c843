"""How a cached answer is kept in Redis: a few header bytes and the answer, compressed.

A cache entry is the upstream's success body exactly as it came (replayed
byte for byte on a hit) plus the two facts the gateway needs: what it cost
and whether it found an address.  Version 2 of the format is

    b"\\x02" | flags (1 byte: 1 = found) | credits (2 bytes, big-endian) | zlib(body)

compressed with a preset dictionary of the words every Clearout answer
repeats (field names, `"yes"`, `"no"`, ...), which is what makes a ~325-byte
answer shrink to about a third: small payloads gain little from plain zlib.
The dictionary is part of the format; changing it means a new version byte.
Entries written by earlier gateways (aiocache's JSON serializer wrapping the
gateway's JSON, version 1) are still read, so an upgrade keeps the cache.
`EntrySerializer` plugs the format into aiocache's serializer interface; the
bulk paths that talk to Redis directly use the same `encode`/`decode`.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Any

from aiocache.serializers import BaseSerializer

VERSION = 2
_HEADER = 4
# Words and fragments of Clearout's instant-finder answers, most frequent last
# (zlib prefers matches near the end of the dictionary).
_DICTIONARY = (
    b'"found_on":"20T00:00:00.000Z"},"company":{"name":"'
    b'"confidence_score":"total":1,"domain":".com"'
    b'"first_name":"","last_name":"","full_name":"'
    b'{"status":"success","data":{"emails":[{"email_address":"'
    b'@","role":"no","business":"yes"}],"role":"yes","business":"no"}],'
)


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """A cacheable upstream success body, replayed verbatim on a hit."""

    body: bytes
    credits: int
    found: bool


def encode(answer: CachedAnswer) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, _DICTIONARY)
    packed = packer.compress(answer.body) + packer.flush()
    credits = max(0, min(answer.credits, 0xFFFF))
    return bytes((VERSION, int(answer.found))) + credits.to_bytes(2, "big") + packed


def decode(raw: bytes | str | None) -> CachedAnswer | None:
    """The entry, or None for a foreign or corrupt value (a miss, never an error)."""
    if raw is None:
        return None
    data = raw.encode() if isinstance(raw, str) else raw
    if data[:1] == bytes((VERSION,)) and len(data) >= _HEADER:
        try:
            unpacker = zlib.decompressobj(-15, _DICTIONARY)
            body = unpacker.decompress(data[_HEADER:]) + unpacker.flush()
        except zlib.error:
            return None
        return CachedAnswer(body, int.from_bytes(data[2:4], "big"), bool(data[1]))
    return _decode_v1(data)


def _decode_v1(data: bytes) -> CachedAnswer | None:
    # aiocache's JsonSerializer around the gateway's own JSON: a JSON string
    # holding {"b": body, "c": credits, "f": found}.
    try:
        item: Any = json.loads(data)
        if isinstance(item, str):
            item = json.loads(item)
        return CachedAnswer(item["b"].encode(), int(item["c"]), bool(item["f"]))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


class EntrySerializer(BaseSerializer):  # type: ignore[misc]  # aiocache ships no types
    """aiocache's serializer interface over `encode`/`decode` (bytes in, bytes out)."""

    DEFAULT_ENCODING = None

    def dumps(self, value: Any) -> Any:
        return encode(value)

    def loads(self, value: Any) -> Any:
        return decode(value)
