"""clearout-gateway: a caching, budget-keeping reverse proxy for Clearout's Email Finder API v2.

The path of an instant lookup, one module per step (the README's
architecture section draws the same path with the bulk routes beside it):

    connection         http/protocol.py:GatewayProtocol      head deadline, parse errors → 400/431
    request duties     http/endpoint.py:Endpoint.serve       request id, facts (context.py)
      team key         http/endpoint.py:_authenticate        401 before anything else
      team rate        budget/budgets.py:Budgets.check_rate  429 9201 (before the body is read)
    body               http/bodies.py:read_body              415 / 413 / 408
    validate           validation.py:instant_request         400 in Clearout's Joi shape
    lookup service     lookup/finder.py:Finder.instant       no HTTP types below this line
      cache key        lookup/normalize.py:cache_key         names.py, domains.py
      cache            lookup/cache.py:LookupCache.get       local layer, then Redis → HIT
      queued lookup    lookup/queue.py:waiting_for           the same 524 → COALESCED
      single-flight    lookup/singleflight.py:run            lease; others wait → COALESCED
      reserve          budget/budgets.py:Budgets.reserve     leader only; 402 9200
      upstream pace    budget/governor.py:Governor.acquire   429 9202
      upstream         upstream/client.py:Upstream.call      breaker 503 9502, safe retries
      settle, cache    lookup/finder.py:_account             credits_spent, cache by TTL class
    render             http/responses.py:lookup_response     X-Cache, credits-left headers
    metrics, log       http/endpoint.py:_account             499 when the caller left

Packages: `http` (the web layer), `lookup` (the instant service), `bulk` (the
list service), `budget` (credits, rates, governor, ownership), `upstream`
(the seam to Clearout), `sandbox` (a Clearout look-alike); beside them the
Redis boundary (`store`), settings, errors, metrics, logging and background
tasks.  Lower packages never import the `http` package.
"""

__version__ = "0.1.0"
