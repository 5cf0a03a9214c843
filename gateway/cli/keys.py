"""`clearout-gateway hash-key` and `new-key`: team keys for the teams file."""

from __future__ import annotations

import argparse
import sys

from gateway.teams import hash_key, new_key

EXIT_USAGE = 2


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    hk = sub.add_parser("hash-key", help="print the SHA-256 digest of a team key")
    hk.add_argument("key", nargs="?", help="the key (read from stdin when omitted)")
    hk.set_defaults(run=run_hash_key)
    nk = sub.add_parser("new-key", help="print a new random team key and its digest")
    nk.set_defaults(run=run_new_key)


def run_hash_key(args: argparse.Namespace) -> int:
    key = args.key if args.key is not None else sys.stdin.readline().strip()
    if not key:
        print("clearout-gateway: hash-key needs a non-empty key", file=sys.stderr)
        return EXIT_USAGE
    print(hash_key(key))
    return 0


def run_new_key(_args: argparse.Namespace) -> int:
    key = new_key()
    print(f"key:        {key}\nkey_sha256: {hash_key(key)}")
    return 0
