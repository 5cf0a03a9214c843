"""Teams and their keys: the teams file, key digests, caller lookup, the current directory.

A caller presents its team key where a Clearout client puts its API token
(`Authorization: <key>` or `Authorization: Bearer <key>`).  The teams file
holds only SHA-256 digests of keys, several per team so keys can be rotated
without downtime.  Lookup compares the caller's digest against every known
digest with `hmac.compare_digest` and no early exit, so response timing does
not reveal which team (if any) a guessed key belongs to.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

TEAM_NAME = re.compile(r"^[a-z0-9_-]{1,32}$")
HEX_DIGEST = re.compile(r"^[0-9a-f]{64}$")

# Printed at start in sandbox mode when no teams file is given, so a developer
# can call the sandbox straight away.  It is only ever accepted in sandbox mode.
SANDBOX_DEMO_KEY = "sandbox-demo-key"
ACCEPTED_CACHE_SIZE = 4096
SANDBOX_DEMO_TEAM = "demo"


class TeamsFileError(Exception):
    """The teams file cannot be read or is malformed; the message says where."""


@dataclass(frozen=True, slots=True)
class Quota:
    credits_per_day: int | None = None
    credits_per_month: int | None = None
    requests_per_second: float | None = None
    charge_cache_hits: bool = False


@dataclass(frozen=True, slots=True)
class Team:
    name: str
    key_sha256: tuple[str, ...]
    quota: Quota = field(default_factory=Quota)
    # False: the team's bulk uploads go to Clearout untouched, as with
    # `X-Gateway-Cache: bypass` (teams file: `bulk_cache: false`).
    bulk_cache: bool = True


def key_bytes(key: str) -> bytes:
    """The bytes of a presented key, whatever the caller sent.

    aiohttp decodes header bytes as UTF-8 with `surrogateescape`, so a header
    holding raw non-UTF-8 bytes arrives as a str with lone surrogates; strict
    encoding would raise on it (an unauthenticated 500).  Encoding it back the
    same way restores the exact bytes sent, which simply match no key.
    """
    return key.encode("utf-8", "surrogateescape")


def hash_key(key: str) -> str:
    """The digest stored in the teams file for `key`."""
    return hashlib.sha256(key_bytes(key)).hexdigest()


def new_key() -> str:
    """A fresh random team key (256 bits, URL-safe)."""
    return "cgw_" + secrets.token_urlsafe(32)


def presented_key(authorization: str | None) -> str | None:
    """The key inside an Authorization header, in any form Clearout's examples use.

    Clearout's examples send the bare token, `Bearer <token>`, and (the C#
    example) `Bearer :<token>`; some send a stray leading space.  All of them
    must keep working with a team key in place of the token.
    """
    if not authorization:
        return None
    value = authorization.strip()
    scheme, _, rest = value.partition(" ")
    if scheme.lower() == "bearer" and rest:
        value = rest.strip()
    value = value.removeprefix(":").strip()
    return value or None


# The admin token may act on any team's ids (CONTRACT: "the admin token sees all").
ADMIN_TEAM = Team("admin", ())


class TeamRegistry:
    """Immutable view of the teams file; replaced whole on reload."""

    def __init__(self, teams: Iterable[Team]) -> None:
        self.teams: dict[str, Team] = {}
        self._digests: list[tuple[bytes, Team]] = []
        self._accepted: dict[str, Team] = {}
        for team in teams:
            if team.name in self.teams:
                raise TeamsFileError(f"team {team.name!r} appears twice")
            self.teams[team.name] = team
            for digest in team.key_sha256:
                self._digests.append((bytes.fromhex(digest), team))
        seen: set[bytes] = set()
        for digest_bytes, team in self._digests:
            if digest_bytes in seen:
                raise TeamsFileError(f"a key digest of team {team.name!r} is used twice")
            seen.add(digest_bytes)

    def authenticate(self, authorization: str | None) -> Team | None:
        # Header values that already proved valid skip the hash-and-compare
        # pass.  Only successes are remembered (bounded), so guessing keys
        # always pays the full constant-time scan and cannot grow the map.
        if authorization is not None:
            known_team = self._accepted.get(authorization)
            if known_team is not None:
                return known_team
        key = presented_key(authorization)
        if key is None:
            return None
        digest = hashlib.sha256(key_bytes(key)).digest()
        found: Team | None = None
        for known, team in self._digests:
            # No early exit: every comparison runs whatever matched.
            if hmac.compare_digest(known, digest):
                found = team
        if found is not None and authorization is not None:
            if len(self._accepted) >= ACCEPTED_CACHE_SIZE:
                self._accepted.clear()
            self._accepted[authorization] = found
        return found

    def names(self) -> list[str]:
        return sorted(self.teams)

    @classmethod
    def sandbox_demo(cls) -> TeamRegistry:
        return cls([Team(SANDBOX_DEMO_TEAM, (hash_key(SANDBOX_DEMO_KEY),))])

    @classmethod
    def from_file(cls, path: Path) -> TeamRegistry:
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise TeamsFileError(f"{path}: cannot read: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise TeamsFileError(f"{path}: not valid YAML: {exc}") from None
        return cls.from_mapping(raw, source=str(path))

    @classmethod
    def from_mapping(cls, raw: Any, *, source: str = "teams") -> TeamRegistry:
        if not isinstance(raw, Mapping) or not isinstance(raw.get("teams"), list):
            raise TeamsFileError(f"{source}: expected a top-level 'teams:' list")
        return cls(
            _parse_team(item, f"{source}: teams[{i}]") for i, item in enumerate(raw["teams"])
        )


def _parse_team(item: Any, where: str) -> Team:
    if not isinstance(item, Mapping):
        raise TeamsFileError(f"{where}: expected a mapping")
    name = item.get("name")
    if not isinstance(name, str) or not TEAM_NAME.match(name):
        raise TeamsFileError(f"{where}: name must match [a-z0-9_-]{{1,32}}, got {name!r}")
    digests = item.get("key_sha256")
    if isinstance(digests, str):
        digests = [digests]
    if not isinstance(digests, list) or not digests:
        raise TeamsFileError(f"{where} ({name}): key_sha256 must list one or more digests")
    normalized = []
    for digest in digests:
        if not isinstance(digest, str) or not HEX_DIGEST.match(digest.strip().lower()):
            raise TeamsFileError(f"{where} ({name}): key_sha256 entries must be 64 hex digits")
        normalized.append(digest.strip().lower())
    bulk_cache = item.get("bulk_cache", True)
    if not isinstance(bulk_cache, bool):
        raise TeamsFileError(f"{where} ({name}): bulk_cache must be true or false")
    return Team(
        name=name, key_sha256=tuple(normalized), quota=_parse_quota(item.get("quota"), where),
        bulk_cache=bulk_cache,
    )  # fmt: skip


def _parse_quota(raw: Any, where: str) -> Quota:
    if raw is None:
        return Quota()
    if not isinstance(raw, Mapping):
        raise TeamsFileError(f"{where}: quota must be a mapping")
    unknown = set(raw) - {
        "credits_per_day",
        "credits_per_month",
        "requests_per_second",
        "charge_cache_hits",
    }
    if unknown:
        raise TeamsFileError(f"{where}: unknown quota keys: {', '.join(sorted(unknown))}")

    def count(key: str) -> int | None:
        value = raw.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise TeamsFileError(f"{where}: quota.{key} must be a non-negative integer")
        return value

    rps = raw.get("requests_per_second")
    if rps is not None and (isinstance(rps, bool) or not isinstance(rps, int | float) or rps <= 0):
        raise TeamsFileError(f"{where}: quota.requests_per_second must be a positive number")
    charge = raw.get("charge_cache_hits", False)
    if not isinstance(charge, bool):
        raise TeamsFileError(f"{where}: quota.charge_cache_hits must be true or false")
    return Quota(
        credits_per_day=count("credits_per_day"),
        credits_per_month=count("credits_per_month"),
        requests_per_second=float(rps) if rps is not None else None,
        charge_cache_hits=charge,
    )


@dataclass
class TeamDirectory:
    """The current teams, swapped whole when the teams file is reloaded."""

    registry: TeamRegistry
    path: Path | None = None
    mtime: float | None = None
