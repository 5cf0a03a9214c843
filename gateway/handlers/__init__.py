"""HTTP handlers, one module per route family (instant, lists, ops)."""
