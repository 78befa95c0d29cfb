"""What a participant's gRPC status means for the saga (docs/design.md §4).

This module is the one place the status-code policy lives; the engine only
asks `StatusPolicy.classify` and the properties of `Outcome`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from grpc import StatusCode


class Outcome(enum.Enum):
    DONE = "done"
    """OK: record the result and go on."""
    TRANSIENT = "transient"
    """Worth retrying; when attempts run out, compensate (this step included)."""
    IN_DOUBT = "in doubt"
    """May or may not have happened: retry (calls are idempotent), then compensate it too."""
    REJECTED = "rejected"
    """The participant refused and did nothing: no retry, compensate the steps before."""

    @property
    def retryable(self) -> bool:
        return self in (Outcome.TRANSIENT, Outcome.IN_DOUBT)

    @property
    def may_have_taken_effect(self) -> bool:
        """Whether the step must be compensated. Only a clean rejection did nothing;
        even UNAVAILABLE may follow a commit whose reply was lost."""
        return self is not Outcome.REJECTED


DEFAULT_CLASSES: Mapping[StatusCode, Outcome] = MappingProxyType(
    {
        StatusCode.OK: Outcome.DONE,
        StatusCode.UNAVAILABLE: Outcome.TRANSIENT,
        StatusCode.RESOURCE_EXHAUSTED: Outcome.TRANSIENT,
        StatusCode.ABORTED: Outcome.TRANSIENT,
        StatusCode.DEADLINE_EXCEEDED: Outcome.IN_DOUBT,
        StatusCode.UNKNOWN: Outcome.IN_DOUBT,
        StatusCode.INTERNAL: Outcome.IN_DOUBT,
        StatusCode.CANCELLED: Outcome.IN_DOUBT,
        StatusCode.DATA_LOSS: Outcome.IN_DOUBT,
        StatusCode.INVALID_ARGUMENT: Outcome.REJECTED,
        StatusCode.FAILED_PRECONDITION: Outcome.REJECTED,
        StatusCode.OUT_OF_RANGE: Outcome.REJECTED,
        StatusCode.NOT_FOUND: Outcome.REJECTED,
        StatusCode.ALREADY_EXISTS: Outcome.REJECTED,
        StatusCode.PERMISSION_DENIED: Outcome.REJECTED,
        StatusCode.UNAUTHENTICATED: Outcome.REJECTED,
        StatusCode.UNIMPLEMENTED: Outcome.REJECTED,
    }
)

# An attempt whose outcome was never recorded (the orchestrator died mid-RPC).
UNRECORDED = "UNRECORDED"
# An attempt recorded ahead (with its saga) that this process then never sent:
# the saga stopped first. Known to have done nothing, unlike UNRECORDED.
NOT_SENT = "NOT_SENT"


@dataclass(frozen=True)
class StatusPolicy:
    """The default classes, with optional per-step overrides."""

    overrides: Mapping[StatusCode, Outcome] = field(default_factory=dict)

    def classify(self, code: str) -> Outcome:
        """The class of a status code name as stored in the saga log."""
        if code == UNRECORDED:
            return Outcome.IN_DOUBT
        if code == NOT_SENT:
            return Outcome.REJECTED  # nothing reached the participant: nothing to undo
        status = StatusCode[code]
        return self.overrides.get(status, DEFAULT_CLASSES.get(status, Outcome.IN_DOUBT))

    def compensation_retryable(self, code: str) -> bool:
        """A compensation is retried on any status but OK (docs/design.md §4)."""
        return code != StatusCode.OK.name


DEFAULT_POLICY = StatusPolicy()
