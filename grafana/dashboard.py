"""Regenerate the gateway's Grafana dashboard and alert rules (or check them).

    python grafana/dashboard.py          # regenerate every artefact
    python grafana/dashboard.py --check  # exit 1 if one is stale

The code lives in the ``clearout_dashboard`` package next to this script
(its directory is on ``sys.path`` when Python runs a script); this file only
hands over to its CLI. Artefacts: ``grafana/dashboards/clearout-gateway.json``,
``grafana/alerts/clearout-gateway-rules.yml`` and its byte-identical copy
``helm/clearout-gateway/files/prometheus-rules.yml``;
``tests/test_grafana.py`` fails when they are stale.
"""

from __future__ import annotations

import sys

from clearout_dashboard.cli import main

if __name__ == "__main__":
    sys.exit(main())
