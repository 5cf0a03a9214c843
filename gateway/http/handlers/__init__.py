"""HTTP handlers, one module per route family: parse, ask a service, render."""
