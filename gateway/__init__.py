"""clearout-gateway: a caching, budget-keeping reverse proxy for Clearout's Email Finder API v2."""

__version__ = "0.1.0"
