"""The HTTP layer: the app, its connections, the request duties, the routes and handlers.

`app` (create_app: resources and services in cleanup_ctx), `protocol`
(connections: header deadline, parse errors in the envelope), `endpoint`
(request id, team auth, team rate, error envelope, metrics, access log),
`routes` (the route table), `bodies` (bounded request bodies), `responses`
(results rendered as responses), `handlers/` (one module per route family).
Nothing below this package imports it.
"""
