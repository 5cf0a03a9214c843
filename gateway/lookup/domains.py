"""Normalization of the instant finder's ``domain`` field, for cache keys.

A domain is reduced to its host (scheme, credentials, port, path, trailing
dots and one leading ``www.`` dropped, IDNA-encoded); a company name is kept
in a key space of its own and never guessed into a domain.
"""

from __future__ import annotations

import re
import unicodedata

import idna

# Prefix of the key space for values of the domain field that are company
# names. It cannot collide with a host: hosts are cut at the first ":" when the
# port is dropped, so no domain-derived value ever contains a colon.
_COMPANY_PREFIX = "company:"

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
