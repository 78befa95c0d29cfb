"""Wall-clock time as integer epoch milliseconds, the unit every table stores."""

from __future__ import annotations

import time

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def timestamp(epoch_ms: int | None) -> Timestamp | None:
    """A Timestamp for epoch_ms, or None (field left unset) when there is none."""
    if epoch_ms is None:
        return None
    ts = Timestamp()
    ts.FromMilliseconds(epoch_ms)
    return ts


def duration(milliseconds: int) -> Duration:
    d = Duration()
    d.FromMilliseconds(milliseconds)
    return d
