"""`python -m gateway` is the `clearout-gateway` console script."""

from gateway.cli import main

raise SystemExit(main())
