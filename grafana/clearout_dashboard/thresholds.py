"""Alert thresholds and the windows they are measured over.

Both the alert rules and the panels that draw a threshold line or colour a
stat read these, so a number an operator is paged on and the number the
dashboard shows them can never disagree. Change a value here, regenerate,
and the rules, their descriptions and the panel texts follow.
"""

from __future__ import annotations

# Upstream credits: warn below this many credits left on the Clearout account.
CREDITS_LOW_THRESHOLD = 2000
# Page when the balance lasts fewer than this many days at the recent pace...
CREDITS_RUNWAY_DAYS = 3
# ...measured over this window: long enough that one bulk upload does not
# page, short enough to notice a runaway client within the day.
CREDITS_SPEND_WINDOW = "6h"
# Error ratios (upstream answers, and the 5xx callers see) over ERROR_WINDOW.
UPSTREAM_ERROR_RATIO_THRESHOLD = 0.05
GATEWAY_5XX_RATIO_THRESHOLD = 0.05
ERROR_WINDOW = "10m"
# A ratio over a handful of requests is noise: below this many requests in
# ERROR_WINDOW the error-ratio alerts stay quiet.
ERROR_MIN_REQUESTS = 20
# A team is "spiking" when quota rejects more than this share of its requests
# and at least QUOTA_REJECTION_MIN_RATE rejections per second (3 a minute).
QUOTA_REJECTION_RATIO_THRESHOLD = 0.25
QUOTA_REJECTION_MIN_RATE = 0.05
# The breaker reopens after every failed half-open probe, so "open this long"
# means Clearout kept failing for that long, not one bad burst.
CIRCUIT_OPEN_FOR = "2m"
# Consecutive failed getcredits polls tolerated within 15 minutes.
CREDITS_POLL_ERRORS_THRESHOLD = 2
# Scrape jobs that are the gateway. The chart's ServiceMonitor takes the job
# from the Service's app.kubernetes.io/name label ("clearout-gateway"); the
# regex also matches "<release>-clearout-gateway" style job names. Change it
# when nameOverride or a hand-written scrape config names the job otherwise.
GATEWAY_JOB_REGEX = ".*clearout-gateway.*"
