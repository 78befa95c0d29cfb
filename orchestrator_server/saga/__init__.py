"""A small durable saga engine for gRPC participants.

- `definition`: typed saga definitions (steps, RPCs, request builders).
- `retry`: retry policies as validated data.
- `policy`: what a gRPC status code means for a step — the one place for it.
- `store`: the saga log's records and the store boundary; `sqlite_store` is
  the embedded implementation.
- `engine`: drives sagas forward and back, and recovers them after a crash.
"""
