"""`clearout-gateway`: serve the gateway, manage team keys.

    clearout-gateway serve [--host H] [--port P]   run the server (settings from env)
    clearout-gateway hash-key [KEY]                SHA-256 digest for the teams file
                                                   (reads KEY from stdin when omitted)
    clearout-gateway new-key                       a fresh random key and its digest

One module per command (`serve`, `keys`); each adds its parser and the
function that runs it.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from gateway.cli import keys, serve


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clearout-gateway", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve.add_parser(sub)
    keys.add_parsers(sub)
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code
