"""The minisaga client library and the `minisaga` command.

    from minisaga_client import connect

    with connect("127.0.0.1:7001") as client:
        placed = client.place_order(product_id="apple", quantity=2, amount=1200)
        print(placed.saga_id, placed.status)

`connect_async` is the grpc.aio twin; `connect(..., tls=Tls(ca=..., cert=...,
key=...))` dials a TLS system with a client certificate. Failed calls raise
the typed errors of `minisaga_client.errors` (`InvalidArgument`, `NotFound`,
...).

`pip install minisaga` installs this library and the command alone (grpcio,
protobuf, googleapis-common-protos); the servers need `minisaga[server]`.
"""

from minisaga_client.client import (
    DEFAULT_TIMEOUT,
    AsyncClient,
    Client,
    connect,
    connect_async,
)
from minisaga_client.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    MinisagaError,
    NotFound,
    Unavailable,
    from_grpc_error,
)
from minisaga_client.tls import Tls

__all__ = [
    "DEFAULT_TIMEOUT",
    "AlreadyExists",
    "AsyncClient",
    "Client",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "InvalidArgument",
    "MinisagaError",
    "NotFound",
    "Tls",
    "Unavailable",
    "connect",
    "connect_async",
    "from_grpc_error",
]
