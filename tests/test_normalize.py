"""Tests for gateway.lookup.normalize: which inputs share a cache key and which never may."""

from __future__ import annotations

import pytest

from gateway.lookup.normalize import (
    NORMALIZATION_VERSION,
    cache_key,
    normalize_domain,
    normalize_name,
)

NAME = "Steven Morris"
DOMAIN = "apple.com"


def _d(a: str, b: str, same: bool, label: str) -> object:
    """A domain-field case: the name is held fixed."""
    return pytest.param((NAME, a), (NAME, b), same, id=f"domain-{label}")


def _n(a: str, b: str, same: bool, label: str) -> object:
    """A name-field case: the domain is held fixed."""
    return pytest.param((a, DOMAIN), (b, DOMAIN), same, id=f"name-{label}")


SAME, DIFFERENT = True, False
# "apple.com" in full-width forms (U+FF41...), spelled as escapes to keep the source ASCII.
FULLWIDTH_APPLE_COM = "\uff41\uff50\uff50\uff4c\uff45\uff0e\uff43\uff4f\uff4d"

CASES = [
    # --- domain: URL reduced to its host ---------------------------------
    _d("https://www.Apple.com/about", "apple.com", SAME, "url-www-path"),
    _d("http://user:secret@apple.com:8443/x?y=1#frag", "apple.com", SAME, "userinfo-port-query"),
    _d("apple.com:443", "apple.com", SAME, "bare-host-port"),
    _d("//apple.com/jobs", "apple.com", SAME, "scheme-relative"),
    _d("apple.com.", "apple.com", SAME, "trailing-dot"),
    _d("WWW.APPLE.COM", "apple.com", SAME, "www-uppercase"),
    _d("  apple.com\t", "apple.com", SAME, "surrounding-whitespace"),
    _d("bob@apple.com", "apple.com", SAME, "pasted-email-address"),
    _d("Bücher.de", "xn--bcher-kva.de", SAME, "idn-vs-punycode"),
    _d("BÜCHER.DE", "bücher.de", SAME, "idn-case"),
    _d("bücher\u3002de", "bücher.de", SAME, "ideographic-full-stop"),
    # UTS-46 drops the soft hyphen that web copy-paste leaves behind.
    _d("app\u00adle.com", "apple.com", SAME, "soft-hyphen-uts46"),
    _d(FULLWIDTH_APPLE_COM, "apple.com", SAME, "fullwidth-nfkc"),
    _d("mail.apple.com", "apple.com", DIFFERENT, "subdomain-kept"),
    _d("www.mail.apple.com", "mail.apple.com", SAME, "www-over-subdomain"),
    _d("bücher.de", "bucher.de", DIFFERENT, "idn-diacritic-kept"),
    # --- domain: company names get their own key space --------------------
    _d("Apple   Inc", "apple inc", SAME, "company-spacing-case"),
    _d("\uff21\uff50\uff50\uff4c\uff45 Inc", "apple inc", SAME, "company-fullwidth"),
    _d("Apple", "apple.com", DIFFERENT, "company-vs-domain"),
    _d("apple com", "apple.com", DIFFERENT, "whitespace-means-company"),
    _d("apple", "apple.", DIFFERENT, "no-dot-company-vs-dotted-host"),
    _d("Apple", "Apple Inc", DIFFERENT, "company-not-guessed"),
    # --- name: case, whitespace, NFKC -------------------------------------
    _n("STEVEN   MORRIS", "steven morris", SAME, "case-whitespace"),
    _n("\uff33\uff54\uff45\uff56\uff45\uff4e\u3000Morris", "Steven Morris", SAME, "fullwidth-nfkc"),
    _n("Jose\u0301 Garcia", "José Garcia", SAME, "combining-accent-nfkc"),
    _n("JOSÉ GARCIA", "josé garcia", SAME, "diacritic-casefold"),
    _n("Hans STRAUSS", "Hans Strauß", SAME, "casefold-not-lower"),
    _n("José Garcia", "Jose Garcia", DIFFERENT, "diacritics-kept"),
    _n("Conan O\u2019Brien", "Conan O'Brien", SAME, "typographic-apostrophe"),
    _n("Conan O'Brien", "Conan OBrien", DIFFERENT, "apostrophe-not-dropped"),
    _n("Conan O\u00b4Brien", "Conan O'Brien", SAME, "acute-as-apostrophe"),
    # --- name: titles ------------------------------------------------------
    _n("Dr. Steven Morris", "Steven Morris", SAME, "title-dr-period"),
    _n("Mrs Jane Doe", "Jane Doe", SAME, "title-mrs"),
    _n("Mx. Sam Lee", "Sam Lee", SAME, "title-mx"),
    _n("Sir Elton John", "Elton John", SAME, "title-sir"),
    _n("Prof. Dr. Hans Müller", "Hans Müller", SAME, "stacked-titles"),
    _n("Bishop Jones", "Jones", DIFFERENT, "bishop-two-tokens-kept"),
    _n("Dr Morris", "Morris", DIFFERENT, "title-kept-when-one-token-left"),
    # --- name: nicknames -----------------------------------------------------
    _n('Robert "Bob" Smith', "Robert Smith", SAME, "nickname-double-quotes"),
    _n("Robert (Bob) Smith", "Robert Smith", SAME, "nickname-parentheses"),
    _n("Robert 'Bob' O'Brien", "Robert O'Brien", SAME, "nickname-single-quotes"),
    _n("Robert \u201cBob\u201d Smith", "Robert Smith", SAME, "nickname-curly-quotes"),
    _n("Bob Smith", "Robert Smith", DIFFERENT, "nickname-not-promoted"),
    _n('"Steven Morris"', "Steven Morris", SAME, "whole-name-quoted"),
    # --- name: comma order -----------------------------------------------------
    _n("Morris, Steven", "Steven Morris", SAME, "last-comma-first"),
    _n("Morris, Dr. Steven J.", "Steven J Morris", SAME, "comma-title-initial"),
    _n("Morris Steven", "Steven Morris", DIFFERENT, "order-without-comma-kept"),
    # --- name: credentials ---------------------------------------------------
    _n("Steven Morris, PhD", "Steven Morris", SAME, "credential-after-comma"),
    _n("Steven Morris Ph.D.", "Steven Morris", SAME, "credential-periods"),
    _n("Steven Morris, M.D., MBA", "Steven Morris", SAME, "two-credentials"),
    _n("Steven Morris Esq.", "Steven Morris", SAME, "credential-esq"),
    _n("Morris, Steven, CPA", "Steven Morris", SAME, "comma-order-and-credential"),
    _n("Rahman, Md", "Rahman", DIFFERENT, "md-as-given-name-kept"),
    _n("Anh Van Do", "Anh Van", DIFFERENT, "surname-do-not-credential"),
    # --- name: generational suffixes -------------------------------------------
    _n("Steven Morris Jr.", "steven morris jr", SAME, "jr-period"),
    _n("Steven Morris, Jr.", "Steven Morris JR", SAME, "jr-after-comma"),
    _n("Morris Jr., Steven", "Steven Morris Jr", SAME, "jr-on-surname-side"),
    _n("Steven Morris, PhD, Jr.", "Steven Morris Jr", SAME, "jr-and-credential"),
    _n("John Smith \u2162", "John Smith III", SAME, "roman-numeral-nfkc"),
    _n("Steven Morris Jr", "Steven Morris", DIFFERENT, "jr-kept"),
    _n("Steven Morris III", "Steven Morris", DIFFERENT, "iii-kept"),
    _n("Steven Morris II", "Steven Morris III", DIFFERENT, "ii-vs-iii"),
    _n("Steven Morris Jr", "Steven Morris Sr", DIFFERENT, "jr-vs-sr"),
    _n("Jr Smith", "Smith", DIFFERENT, "leading-jr-is-a-name"),
    # --- name: middle names and initials ----------------------------------------
    _n("Steven J. Morris", "Steven J Morris", SAME, "initial-period"),
    _n("J.R. Smith", "J. R. Smith", SAME, "joined-initials"),
    _n("Smith, J.R.", "J.R. Smith", SAME, "comma-dotted-initials-not-jr"),
    _n("J.R. Smith", "Jr Smith", DIFFERENT, "dotted-initials-not-jr"),
    _n("D.R. John Smith", "John Smith", DIFFERENT, "dotted-initials-not-dr"),
    _n("Steven J Morris", "Steven Morris", DIFFERENT, "initial-kept"),
    _n("Smith, John V", "John V Smith", SAME, "trailing-v-is-an-initial"),
    _n("Steven James Morris", "Steven Morris", DIFFERENT, "middle-name-kept"),
]


@pytest.mark.parametrize(("a", "b", "same"), CASES)
def test_key_sharing(a: tuple[str, str], b: tuple[str, str], same: bool) -> None:
    key_a, key_b = cache_key(*a), cache_key(*b)
    if same:
        assert key_a == key_b
    else:
        assert key_a != key_b


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Dr. Steven J. Morris, PhD", "steven j morris"),
        ("Morris Jr., Steven", "steven morris jr"),
        ("Robert (Bob) Smith", "robert smith"),
        ("Bishop Jones", "bishop jones"),
        ("Bishop John Jones", "john jones"),
        ("Jr Smith", "jr smith"),
        ("Rahman, Md", "md rahman"),
        ("   ", ""),
    ],
)
def test_normalize_name_values(raw: str, expected: str) -> None:
    assert normalize_name(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://www.Apple.com/about", "apple.com"),
        ("mail.apple.com", "mail.apple.com"),
        ("Bücher.de", "xn--bcher-kva.de"),
        # UTS-46 non-transitional keeps ß; Python's built-in "idna" codec
        # (IDNA 2003) would give "strasse.de".
        ("straße.de", "xn--strae-oqa.de"),
        # "www.com" is a domain in its own right, not the www host of "com".
        ("www.com", "www.com"),
        ("Apple  Inc", "company:apple inc"),
        ("", "company:"),
    ],
)
def test_normalize_domain_values(raw: str, expected: str) -> None:
    assert normalize_domain(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Foo_Straße.com", "foo_strasse.com"),
        ("-bad-.com", "-bad-.com"),
        ("a..b.com", "a..b.com"),
        ("xn--zz.com", "xn--zz.com"),
    ],
)
def test_invalid_idna_falls_back_to_casefolded_host(raw: str, expected: str) -> None:
    assert normalize_domain(raw) == expected


def test_cache_key_example_and_version_prefix() -> None:
    key = cache_key("Dr. Steven Morris", "https://www.apple.com/")
    assert key == "v1|steven morris|apple.com"
    assert key.startswith(NORMALIZATION_VERSION + "|")
    assert NORMALIZATION_VERSION == "v1"


def test_separator_in_a_part_is_escaped() -> None:
    # Without escaping both would read "v1|a|b|c.com".
    left = cache_key("a|b", "c.com")
    right = cache_key("a", "b|c.com")
    assert left == "v1|a\\|b|c.com"
    assert right == "v1|a|b\\|c.com"
    assert left != right
    assert cache_key("a\\", "b.com") != cache_key("a", "\\b.com")


def _split_key(key: str) -> list[str]:
    """Undo cache_key's escaping: split on unescaped "|" and unescape."""
    parts: list[str] = []
    current: list[str] = []
    chars = iter(key)
    for ch in chars:
        if ch == "\\":
            current.append(next(chars))
        elif ch == "|":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


@pytest.mark.parametrize(
    ("name", "domain"),
    [
        ("a\\b", "c|d.com"),
        ("a|b", "c\\d.com"),
        ("x\\y z", "Foo \\| Bar"),
        ("Steven Morris", "apple.com"),
    ],
)
def test_key_parts_round_trip(name: str, domain: str) -> None:
    key = cache_key(name, domain)
    assert _split_key(key) == [
        NORMALIZATION_VERSION,
        normalize_name(name),
        normalize_domain(domain),
    ]


def test_cache_key_is_memoized_and_bounded() -> None:
    assert cache_key.cache_info().maxsize == 65536
    first = cache_key("Memo Test", "memo.example")
    hits = cache_key.cache_info().hits
    assert cache_key("Memo Test", "memo.example") is first
    assert cache_key.cache_info().hits == hits + 1
