"""The command line: regenerate the committed artefacts, or check they are fresh.

``python grafana/dashboard.py`` writes every artefact whose content changed
and names it; ``--check`` writes nothing and exits 1 when one is stale, for
CI and pre-commit hooks that must not touch the tree.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .assembly import REPO_ROOT, artefacts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="The gateway's Grafana dashboard and Prometheus alert rules, as code."
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if a committed artefact is stale"
    )
    args = parser.parse_args(argv)
    stale = []
    for path, content in artefacts().items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == content:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
    for path in stale:
        verb = "stale" if args.check else "wrote"
        print(f"{verb}: {path.relative_to(REPO_ROOT)}")
    return 1 if args.check and stale else 0
