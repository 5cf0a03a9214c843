"""The instant lookup: keys, the two-layer cache, single-flight, queued lookups, the service.

`normalize` (names, domains → versioned cache key), `cache` (in-process layer
in front of aiocache), `singleflight` (one upstream call per key, as a
renewed lease across replicas), `queued` + `queue` (a 524's queue id to a
cached answer), `pricing` (what an answer costs), `request` (plain inputs and
results) and `finder`, the service itself.  Nothing here knows HTTP.
"""
