"""The orchestrator: runs the place-order saga on a durable, typed saga engine.

`saga/` is the engine and knows nothing of orders; `order_saga.py` is the
business process written as data; `service.py` is the gRPC API.
"""
