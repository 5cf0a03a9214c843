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
import re
import unicodedata

import idna

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

# Prefix of the key space for values of the domain field that are company
# names. It cannot collide with a host: hosts are cut at the first ":" when the
# port is dropped, so no domain-derived value ever contains a colon.
_COMPANY_PREFIX = "company:"

_CACHE_SIZE = 65536

# --------------------------------------------------------------------------
# Domain field
# --------------------------------------------------------------------------

# UTS-46 treats the ideographic full stop as a label separator; NFKC already
# folds U+FF0E and U+FF61 onto "." and U+3002, so only U+3002 is left to map.
# Without this, "bücher。de" would have no dot and be misfiled as a company.
_IDEOGRAPHIC_FULL_STOP = "\u3002"

_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
# Backslash ends the authority too, the way browsers read pasted URLs.
_AUTHORITY_END_RE = re.compile(r"[/?#\\]")


def normalize_domain(domain: str) -> str:
    """Normalize the instant finder's ``domain`` field.

    A value containing whitespace, or without any dot, is a company name:
    it is returned as ``company:`` plus its casefolded text with whitespace
    collapsed. It is never guessed into a domain, since ``Apple`` could be
    ``apple.com`` or ``apple.co.uk`` and the upstream resolves it itself.

    Anything else is read as a URL or bare host and reduced to its host:
    scheme, user info, port, path, query, fragment, trailing dots and one
    leading ``www.`` are dropped, and the host is IDNA-encoded (UTS-46) so
    that ``Bücher.de`` and ``xn--bcher-kva.de`` agree. Other subdomains are
    kept, because ``mail.apple.com`` may be a different mail domain.
    """
    text = unicodedata.normalize("NFKC", domain).strip()
    text = text.replace(_IDEOGRAPHIC_FULL_STOP, ".")
    # str.split() without arguments splits on exactly what str.isspace()
    # accepts, so the test and the collapsing agree on what whitespace is.
    words = text.split()
    if len(words) != 1 or "." not in text:
        return _COMPANY_PREFIX + " ".join(text.casefold().split())
    return _normalize_host(_extract_host(text))


def _extract_host(text: str) -> str:
    # Hand-rolled rather than urllib.parse.urlsplit: users paste bare hosts
    # ("apple.com/about", "apple.com:443"), which urlsplit reads as a path or
    # as a scheme named "apple.com".
    match = _SCHEME_RE.match(text)
    if match is not None:
        text = text[match.end() :]
    elif text.startswith("//"):
        text = text[2:]
    end = _AUTHORITY_END_RE.search(text)
    if end is not None:
        text = text[: end.start()]
    # rpartition: a password may itself contain "@". This also turns a pasted
    # address ("bob@apple.com", "mailto:bob@apple.com") into its domain.
    text = text.rpartition("@")[2]
    return text.partition(":")[0]


def _normalize_host(host: str) -> str:
    # Every trailing dot goes, not just one: "apple.com.." can only have meant
    # apple.com, and a duplicate entry would cost a paid lookup.
    host = host.rstrip(".")
    lowered = host.lower()
    # Only strip "www." while a registrable-looking name remains: "www.com"
    # is itself a domain, not the "www" host of "com".
    if lowered.startswith("www.") and "." in lowered[4:]:
        host = host[4:]
        lowered = lowered[4:]
    try:
        return idna.encode(lowered, uts46=True).decode("ascii")
    except UnicodeError:
        # idna.IDNAError subclasses UnicodeError. An invalid label
        # ("foo_bar.com", "-x-.com") is the upstream's to reject or accept;
        # the cache only needs a key that is stable for the same input, so
        # we fall back to the casefolded host instead of failing the request.
        return host.casefold()


# --------------------------------------------------------------------------
# Name field
# --------------------------------------------------------------------------

# A hand-written tokenizer with explicit word lists is used instead of
# nameparser: nameparser ships ~800 "titles" (including real first names such
# as Bishop, Judge or King) and, given "Bishop Jones", files Bishop as a title
# and leaves no first name. Its lists are also global mutable configuration.
# A cache key has to be predictable above all, and short lists of words that
# are rarely names are easy to audit and to pin in tests.

# Honorifics dropped from the front of a name. Titles are only dropped while
# at least two name tokens remain, so "Bishop Jones" or "Dr Morris" keep the
# word: with one token left there is no telling a title from a first name.
# Abbreviations that are also given names ("Hon" in Cantonese) stay out.
_TITLES = frozenset(
    {
        "mr", "mrs", "ms", "miss", "mx", "mister", "master",
        "dr", "doctor", "prof", "professor",
        "sir", "dame", "lord", "lady",
        "rev", "revd", "reverend", "fr", "bishop",
        "honorable", "honourable",
    }
)  # fmt: skip

# Academic and professional credentials: they describe the person, they do
# not identify them, so "Steven Morris, PhD" is the same lookup as "Steven
# Morris". Words that are also common name parts stay out on purpose: "Do"
# and "Ma" are surnames, "Ms" is a title, "Md" is a common given-name prefix.
_CREDENTIALS = frozenset(
    {
        "phd", "md", "esq", "esquire", "mba", "cpa", "dds", "dmd", "dvm",
        "jd", "llm", "mph", "msc", "bsc", "mfa", "edd", "psyd", "pharmd",
        "rn", "cfa", "cfp", "pmp", "cissp", "facs", "frcs",
    }
)  # fmt: skip

# Generational suffixes tell father from son, so they are kept as part of the
# key; they are only recognized to put them in one canonical place (the end)
# so that "Smith, John Jr." and "John Smith Jr" agree. "V" is left out: at the
# end of "Smith, John V" it is far more likely a middle initial.
_GENERATIONAL = frozenset({"jr", "sr", "ii", "iii", "iv"})


# Nicknames: any bracketed or double-quoted span. Single quotes count only at
# word boundaries, so the apostrophes in "O'Brien" or "D'Angelo" survive.
_NICKNAME_RE = re.compile(
    r"""
      \([^()]*\)
    | \[[^\[\]]*\]
    | "[^"]*"
    | \u201c[^\u201c\u201d]*\u201d
    | \u201e[^\u201e\u201c\u201d]*[\u201c\u201d]
    | \u00ab[^\u00ab\u00bb]*\u00bb
    | (?<!\w)['\u2018][^'\u2018\u2019]*['\u2019](?!\w)
    """,
    re.VERBOSE,
)

# Typographic apostrophes are what word processors turn "O'Brien" into; they
# are the same name. NFKC does not fold them (and would split the acute accent
# into a space plus a combining mark, so this runs before NFKC).
# Right single quotation mark, modifier letter apostrophe, grave, acute.
_APOSTROPHES = str.maketrans(dict.fromkeys("\u2019\u02bc`\u00b4", "'"))

# Punctuation trimmed from token ends. "." is absent: it is handled separately
# because it separates initials ("J.R.") and abbreviates suffixes ("Jr.").
_EDGE_PUNCTUATION = "\"'\u201c\u201d\u201e\u00ab\u00bb\u2018()[]{}<>;:!?*&/\\|-\u2013\u2014_"


def normalize_name(name: str) -> str:
    """Normalize the instant finder's ``name`` field.

    NFKC, casefolded, whitespace collapsed; nicknames in quotes or brackets,
    leading honorifics and credential suffixes are dropped; ``Last, First`` is
    reordered to ``first last``; generational suffixes (Jr, Sr, II-IV) are kept
    and moved to the end; middle names, initials and diacritics are kept.
    """
    text = unicodedata.normalize("NFKC", name.translate(_APOSTROPHES))
    without_nicknames = _NICKNAME_RE.sub(" ", text)
    # A name given entirely in quotes ('"Steven Morris"') is the name itself,
    # not a nickname; dropping it would merge every such input into "".
    if any(ch.isalnum() for ch in without_nicknames):
        text = without_nicknames
    text = text.casefold()

    segments = [seg for seg in (_tokenize(part) for part in text.split(",")) if seg]
    if not segments:
        return ""

    # Trailing comma-separated segments made only of suffixes ("..., PhD",
    # "..., Jr.") are suffixes, not a given name. A credential-only segment is
    # kept as a name when taking it would leave fewer than two tokens, since
    # "Rahman, Md" is far more likely the name "Md Rahman".
    # Linear on purpose: a hostile name can carry thousands of suffix
    # segments, so the tokens left in front are counted once and kept up to
    # date instead of being re-summed per segment, and popped segments are
    # collected in reverse and flipped once at the end.
    trailing_reversed: list[list[str]] = []
    tokens_in_front = sum(map(len, segments)) - len(segments[-1])
    while len(segments) > 1 and all(map(_is_suffix, segments[-1])):
        generational_only = all(map(_is_generational, segments[-1]))
        if not generational_only and tokens_in_front < 2:
            break
        trailing_reversed.append(segments.pop())
        tokens_in_front -= len(segments[-1])
    trailing = [tok for seg in reversed(trailing_reversed) for tok in seg]

    if len(segments) == 2:
        # "Last, First": each side may carry its own suffix ("Morris Jr.,
        # Steven"); one token must stay on each side.
        surname, surname_gens = _peel_suffixes(segments[0], keep=1)
        given, given_gens = _peel_suffixes(segments[1], keep=1)
        core = given + surname
        generational = given_gens + surname_gens
    else:
        # More than two segments has no reliable reading; keep the order.
        flat = [tok for seg in segments for tok in seg]
        core, generational = _peel_suffixes(flat, keep=2)
    generational += [_compact(tok) for tok in trailing if _is_generational(tok)]

    start = 0
    while len(core) - start > 2 and _is_title(core[start]):
        start += 1
    kept = core[start:]
    return " ".join([part for tok in kept for part in _split_initials(tok)] + generational)


# Tokens keep their dots until the end, because a dot means two different
# things: in "Jr." or "Ph.D." it abbreviates one word, in "J.R." it separates
# initials. Compacting "J.R." up front would read it as the suffix "jr".


def _tokenize(segment: str) -> list[str]:
    words = (raw.strip(_EDGE_PUNCTUATION) for raw in segment.split())
    # Stray punctuation ("-", "&", ".") is not a name token.
    return [word for word in words if any(ch.isalnum() for ch in word)]


def _compact(token: str) -> str:
    return token.replace(".", "")


def _is_single_word(token: str) -> bool:
    return "." not in token.rstrip(".")


def _is_title(token: str) -> bool:
    return _is_single_word(token) and _compact(token) in _TITLES


def _is_generational(token: str) -> bool:
    return _is_single_word(token) and _compact(token) in _GENERATIONAL


def _is_suffix(token: str) -> bool:
    # Credentials may be dotted inside ("Ph.D.", "M.B.A."); titles and
    # generational suffixes may not, or initials like "D.R." or "J.R." match.
    return _compact(token) in _CREDENTIALS or _is_generational(token)


def _split_initials(token: str) -> list[str]:
    """Split a kept token at its dots: "J.R." == "J. R." == "J R"."""
    parts = (piece.strip(_EDGE_PUNCTUATION) for piece in token.split("."))
    return [part for part in parts if any(ch.isalnum() for ch in part)]


def _peel_suffixes(tokens: list[str], keep: int) -> tuple[list[str], list[str]]:
    """Strip trailing suffix tokens, leaving at least ``keep`` tokens.

    Returns the remaining tokens and the generational suffixes found (in
    their original order, without dots); credentials are discarded. Suffixes
    are only looked for at the end, so a leading "Jr" (as in "Jr Smith") is a
    first name.
    """
    end = len(tokens)
    found_reversed: list[str] = []
    while end > keep and _is_suffix(tokens[end - 1]):
        end -= 1
        if _is_generational(tokens[end]):
            found_reversed.append(_compact(tokens[end]))
    return tokens[:end], found_reversed[::-1]


# --------------------------------------------------------------------------
# Cache key
# --------------------------------------------------------------------------


def _escape(part: str) -> str:
    if "\\" in part or _SEP in part:
        return part.replace("\\", "\\\\").replace(_SEP, "\\" + _SEP)
    return part


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
            _escape(normalize_name(name)),
            _escape(normalize_domain(domain)),
        )
    )
