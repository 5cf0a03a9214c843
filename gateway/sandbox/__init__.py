"""The built-in sandbox upstream, a Clearout look-alike (see `gateway.sandbox.server`).

`server` (the app, its middlewares), `state` (settings, credits, the lists' clock),
`instant` (instant and queue_status), `lists` (the bulk routes), `results` (signed result
links and the result file), `bulk_list` (a list and its answer per row), `answers`
(Clearout's failure shapes), `people` (the deterministic answers).
"""

from gateway.sandbox.server import Sandbox, SandboxConfig

__all__ = ["Sandbox", "SandboxConfig"]
