"""Cache-key normalization for Clearout instant-finder lookups.

This module owns the mapping from the caller's raw ``name`` and ``domain``
inputs to the string under which the gateway caches an upstream answer, so
that the same person asked for in different spellings (``Dr. Steven J.
Morris, PhD`` at ``https://www.Apple.com/about`` versus ``morris, steven j``
at ``apple.com``) costs one paid lookup instead of several. The rules are
deliberately conservative: two inputs share a key only when they can only
mean the same lookup, because a wrong merge serves one person's email for
another, while a missed merge merely costs one extra lookup. Every rule change
must bump :data:`NORMALIZATION_VERSION`, which prefixes every key, so entries
written under old rules are never served under new ones.
"""

from __future__ import annotations

import functools

from gateway.lookup.domains import normalize_domain
from gateway.lookup.names import normalize_name

__all__ = [
    "NORMALIZATION_VERSION",
    "cache_key",
    "normalize_domain",
    "normalize_name",
]

NORMALIZATION_VERSION = "v1"

# "|" keeps keys readable in redis-cli and logs. It can legitimately appear in a
# company name or an invalid host, so parts are escaped rather than trusting
# the separator to be absent; escaping the escape character too keeps the
# join injective (no two distinct part tuples produce the same key).
_SEP = "|"

_CACHE_SIZE = 65536

# The parts are memoized on their own too, for the paths that key without the
# whole-key memo (bulk rows, harvests): a list of a million rows names a few
# hundred domains, and IDNA costs ~20 us a call, half of keying a row.  Only
# short values are kept, so the memos' memory is bounded by count x length
# whatever a hostile file holds (a cell may be 128 KiB): a few MiB at worst,
# a few hundred KiB for real names.  Longer ones are normalized each time, at
# the cost a single call always had.
_DOMAIN_MEMO_SIZE = 4096
_NAME_MEMO_SIZE = 4096
_MEMO_MAX_CHARS = 128


def _escape(part: str) -> str:
    if "\\" in part or _SEP in part:
        return part.replace("\\", "\\\\").replace(_SEP, "\\" + _SEP)
    return part


@functools.lru_cache(maxsize=_DOMAIN_MEMO_SIZE)
def _memo_domain(domain: str) -> str:
    return normalize_domain(domain)


@functools.lru_cache(maxsize=_NAME_MEMO_SIZE)
def _memo_name(name: str) -> str:
    return normalize_name(name)


def _domain_part(domain: str) -> str:
    return _memo_domain(domain) if len(domain) <= _MEMO_MAX_CHARS else normalize_domain(domain)


def _name_part(name: str) -> str:
    return _memo_name(name) if len(name) <= _MEMO_MAX_CHARS else normalize_name(name)


# Memoized because it runs on every cached request: a hit is one dict lookup
# in the lru wrapper, while normalizing (regexes, IDNA) costs tens of
# microseconds. Bounded so hostile or merely varied traffic cannot grow it
# without limit; lru_cache is thread-safe.
@functools.lru_cache(maxsize=_CACHE_SIZE)
def cache_key(name: str, domain: str) -> str:
    """Return the versioned cache key for an instant-finder lookup.

    Example: ``cache_key("Dr. Steven Morris", "https://www.apple.com/")``
    is ``"v1|steven morris|apple.com"``.
    """
    return _SEP.join(
        (
            NORMALIZATION_VERSION,
            _escape(_name_part(name)),
            _escape(_domain_part(domain)),
        )
    )
