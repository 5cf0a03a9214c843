"""Keying a bulk list's rows: the memos behind it are effective, bounded and exact.

A list keys every row without the instant path's whole-key memo (it would
only churn it), so the parts are memoized on their own: a million rows name
a few hundred domains, and normalizing one (IDNA, UTS-46) is half the cost of
keying a row.  The memos must stay small whatever a hostile file holds.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.lookup import normalize
from gateway.lookup.domains import normalize_domain
from gateway.lookup.names import normalize_name

row_key = normalize.cache_key.__wrapped__  # what a bulk row is keyed with


@pytest.fixture(autouse=True)
def empty_memos() -> Iterator[None]:
    normalize._memo_domain.cache_clear()
    normalize._memo_name.cache_clear()
    yield
    normalize._memo_domain.cache_clear()
    normalize._memo_name.cache_clear()


def test_each_distinct_domain_is_normalized_once() -> None:
    domains = ["Apple.com", "https://www.bücher.de/shop", "corp7.example.com"]
    for i in range(3000):
        row_key(f"Person {i}", domains[i % 3])
    info = normalize._memo_domain.cache_info()
    assert (info.misses, info.hits) == (3, 2997)


def test_a_repeated_name_is_normalized_once() -> None:
    for domain in ("apple.com", "google.com", "ibm.com"):
        row_key("Dr. Steven J. Morris, PhD", domain)
    info = normalize._memo_name.cache_info()
    assert (info.misses, info.hits) == (1, 2)


def test_the_memos_are_bounded_whatever_the_file_holds() -> None:
    """More distinct values than a memo holds, and values far longer than a host or a name:
    the memos keep at most their size, of short values only."""
    for memo in (normalize._memo_domain, normalize._memo_name):
        assert memo.cache_info().maxsize is not None
    size = normalize._memo_domain.cache_info().maxsize or 0
    for i in range(size + 500):
        row_key(f"Name {i}", f"host{i}.example.com")
    assert normalize._memo_domain.cache_info().currsize == size
    long_domain = "a" * 60_000 + ".com"
    long_name = "Ann " + "b" * 60_000
    before = (normalize._memo_domain.cache_info().misses, normalize._memo_name.cache_info().misses)
    key = row_key(long_name, long_domain)
    after = (normalize._memo_domain.cache_info().misses, normalize._memo_name.cache_info().misses)
    assert after == before, "a long value is normalized directly, never kept"
    assert key == f"v1|{normalize_name(long_name)}|{normalize_domain(long_domain)}"


@pytest.mark.parametrize(
    ("name", "domain"),
    [
        ("Dr. Steven Morris", "https://www.apple.com/"),
        ("morris, steven", "APPLE.COM."),
        ("José O'Brien Jr.", "bücher。de"),
        ("a|b\\c", "x|y.com"),
        ("", "Apple Inc"),
    ],
)
def test_memoized_keys_are_the_unmemoized_ones(name: str, domain: str) -> None:
    first, again = row_key(name, domain), row_key(name, domain)
    assert first == again == normalize.cache_key(name, domain)
    expected = normalize._SEP.join(
        (normalize.NORMALIZATION_VERSION, normalize._escape(normalize_name(name)),
         normalize._escape(normalize_domain(domain)))
    )  # fmt: skip
    assert first == expected
