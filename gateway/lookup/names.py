"""Normalization of the instant finder's ``name`` field, for cache keys.

Two spellings of a name share a key only when they can only mean the same
person: titles, nicknames, credentials and punctuation go, ``Last, First``
is reordered, generational suffixes are kept but moved to the end, and
everything else (middle names, initials, diacritics) stays.  Every loop here
is linear in the input, so a hostile 64 KB name costs milliseconds.
"""

from __future__ import annotations

import re
import unicodedata

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
    text = _without_nicknames(unicodedata.normalize("NFKC", name.translate(_APOSTROPHES)))
    segments = [seg for seg in (_tokenize(part) for part in text.casefold().split(",")) if seg]
    if not segments:
        return ""
    trailing = _pop_suffix_segments(segments)
    core, generational = _core_and_generations(segments)
    generational += [_compact(tok) for tok in trailing if _is_generational(tok)]
    kept = _without_titles(core)
    return " ".join([part for tok in kept for part in _split_initials(tok)] + generational)


def _without_nicknames(text: str) -> str:
    without = _NICKNAME_RE.sub(" ", text)
    # A name given entirely in quotes ('"Steven Morris"') is the name itself,
    # not a nickname; dropping it would merge every such input into "".
    return without if any(ch.isalnum() for ch in without) else text


def _pop_suffix_segments(segments: list[list[str]]) -> list[str]:
    """Remove trailing comma-separated segments made only of suffixes; their tokens.

    "..., PhD" and "..., Jr." are suffixes, not a given name.  A credential-only
    segment is kept as a name when taking it would leave fewer than two tokens,
    since "Rahman, Md" is far more likely the name "Md Rahman".  Linear on
    purpose: a hostile name can carry thousands of suffix segments, so the
    tokens left in front are counted once and kept up to date instead of being
    re-summed per segment, and popped segments are flipped once at the end.
    """
    popped: list[list[str]] = []
    tokens_in_front = sum(map(len, segments)) - len(segments[-1])
    while len(segments) > 1 and all(map(_is_suffix, segments[-1])):
        generational_only = all(map(_is_generational, segments[-1]))
        if not generational_only and tokens_in_front < 2:
            break
        popped.append(segments.pop())
        tokens_in_front -= len(segments[-1])
    return [tok for seg in reversed(popped) for tok in seg]


def _core_and_generations(segments: list[list[str]]) -> tuple[list[str], list[str]]:
    if len(segments) == 2:
        # "Last, First": each side may carry its own suffix ("Morris Jr.,
        # Steven"); one token must stay on each side.
        surname, surname_gens = _peel_suffixes(segments[0], keep=1)
        given, given_gens = _peel_suffixes(segments[1], keep=1)
        return given + surname, given_gens + surname_gens
    # More than two segments has no reliable reading; keep the order.
    return _peel_suffixes([tok for seg in segments for tok in seg], keep=2)


def _without_titles(core: list[str]) -> list[str]:
    start = 0
    while len(core) - start > 2 and _is_title(core[start]):
        start += 1
    return core[start:]


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
