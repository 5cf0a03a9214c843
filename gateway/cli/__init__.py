"""`clearout-gateway`: serve the gateway, manage team keys, run lists through it.

    clearout-gateway serve [--host H] [--port P]   run the server (settings from env;
                                                   --help-settings lists them all)
    clearout-gateway hash-key [KEY]                SHA-256 digest for the teams file
                                                   (reads KEY from stdin when omitted)
    clearout-gateway new-key                       a fresh random key and its digest
    clearout-gateway bulk FILE [-o PATH]           upload a list to a gateway, show its
                                                   progress, write the merged result
    clearout-gateway import-results FILE           warm a gateway's cache from a past
                                                   Clearout result file (admin token)

One module per command (`serve`, `keys`, `bulk`, `import_results`); each adds
its parser and the function that runs it.  `remote` is the client the last two
share, `progress` how `bulk` shows a running list.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from gateway.cli import bulk, import_results, keys, serve


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clearout-gateway", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve.add_parser(sub)
    keys.add_parsers(sub)
    bulk.add_parser(sub)
    import_results.add_parser(sub)
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code
