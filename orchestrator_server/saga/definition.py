"""Typed saga definitions: the business process written as data.

    PLACE_ORDER = (
        Saga("place_order", PlaceOrderRequest)
        .step("charge").invoke(CHARGE, charge).with_compensation(REFUND, refund)
        .step("reserve").invoke(RESERVE, reserve).with_compensation(RELEASE, release)
        .build()
    )

`invoke` ties an RPC's request type to its builder's return type, so a builder
that returns the wrong message for the RPC is a `mypy --strict` error; and
`ctx.output(CHARGE)` is typed as CHARGE's response, so a later step's builder
(or any compensation) reads what an earlier action returned, checked the same way.

Internal module: import these names from `orchestrator_server.saga`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Generic, TypeVar

from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message

from orchestrator_server.saga.policy import DEFAULT_POLICY, StatusPolicy
from orchestrator_server.saga.retry import (
    DEFAULT_ACTION_RETRY,
    DEFAULT_COMPENSATION_RETRY,
    RetryPolicy,
)

InputT = TypeVar("InputT", bound=Message)
ReqT = TypeVar("ReqT", bound=Message)
RespT = TypeVar("RespT", bound=Message)


@dataclass(frozen=True)
class Rpc(Generic[ReqT, RespT]):
    """A unary RPC of a participant, named by its full method path."""

    participant: str
    """Which participant's channel to call, such as "payment"."""
    method: str
    """The full method, such as "/minisaga.payment.v1.PaymentService/Charge"."""
    request_type: type[ReqT]
    response_type: type[RespT]

    @classmethod
    def of(
        cls,
        participant: str,
        service: ServiceDescriptor,
        name: str,
        request_type: type[ReqT],
        response_type: type[RespT],
    ) -> Rpc[ReqT, RespT]:
        """The RPC `name` of `service`, checked against the proto at import time."""
        method = service.methods_by_name[name]
        if method.input_type.full_name != request_type.DESCRIPTOR.full_name:
            raise TypeError(f"{service.full_name}/{name} takes {method.input_type.full_name}")
        if method.output_type.full_name != response_type.DESCRIPTOR.full_name:
            raise TypeError(f"{service.full_name}/{name} returns {method.output_type.full_name}")
        return cls(participant, f"/{service.full_name}/{name}", request_type, response_type)


class StepOutputMissing(LookupError):
    """`SagaContext.output` of an RPC no action of this saga has completed (yet).

    A compensation runs for a step that *may* have taken effect, so its action's
    output may be missing (the reply was lost): read it with `output_or_none`."""

    def __init__(self, saga_id: str, method: str) -> None:
        super().__init__(f"saga {saga_id}: no action calling {method} has succeeded")
        self.saga_id = saga_id
        self.method = method


@dataclass(frozen=True)
class SagaContext(Generic[InputT]):
    """What a request builder may read: the saga's identity, its input, and the
    responses of the actions that succeeded so far (restored from the log
    after a restart)."""

    saga_id: str
    business_key: str
    input: InputT
    outputs: Mapping[str, bytes] = field(default_factory=dict)
    """Each succeeded action's response, serialized, by its RPC's method (the
    engine's; read it with `output`)."""

    def output(self, rpc: Rpc[Any, RespT]) -> RespT:
        """The response of the action that called `rpc` and succeeded, typed as
        `rpc`'s response. Raises StepOutputMissing when none has."""
        data = self.outputs.get(rpc.method)
        if data is None:
            raise StepOutputMissing(self.saga_id, rpc.method)
        return rpc.response_type.FromString(data)

    def output_or_none(self, rpc: Rpc[Any, RespT]) -> RespT | None:
        """Like `output`, but None when no action calling `rpc` has succeeded:
        for a compensation, whose action may have taken effect unseen."""
        data = self.outputs.get(rpc.method)
        return None if data is None else rpc.response_type.FromString(data)


@dataclass(frozen=True)
class Invocation(Generic[InputT, ReqT, RespT]):
    """An RPC, how to build its request from the saga, and how to retry it."""

    rpc: Rpc[ReqT, RespT]
    build: Callable[[SagaContext[InputT]], ReqT]
    retry: RetryPolicy


@dataclass(frozen=True)
class Step(Generic[InputT]):
    name: str
    action: Invocation[InputT, Any, Any]
    compensation: Invocation[InputT, Any, Any] | None
    """None for a step that needs no undo (a last, retriable step)."""
    policy: StatusPolicy = DEFAULT_POLICY


@dataclass(frozen=True)
class SagaDefinition(Generic[InputT]):
    name: str
    input_type: type[InputT]
    steps: tuple[Step[InputT], ...]
    deadline: timedelta
    """After this the saga stops going forward and compensates."""
    version: int = 1
    """A saga records the version it started on and finishes on it; new sagas
    start on the newest version registered."""

    def step(self, name: str) -> Step[InputT]:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(f"saga {self.name} has no step {name!r}")


DEFAULT_SAGA_DEADLINE = timedelta(seconds=60)
"""A saga still going forward this long after it started compensates instead."""


class Saga(Generic[InputT]):
    """Builds a SagaDefinition step by step, in business order."""

    def __init__(
        self,
        name: str,
        input_type: type[InputT],
        *,
        deadline: timedelta = DEFAULT_SAGA_DEADLINE,
        action_retry: RetryPolicy = DEFAULT_ACTION_RETRY,
        compensation_retry: RetryPolicy = DEFAULT_COMPENSATION_RETRY,
        version: int = 1,
    ) -> None:
        if version < 1:
            raise ValueError("a saga's version is 1 or more")
        self._version = version
        self._name = name
        self._input_type = input_type
        self._deadline = deadline
        self._steps: list[Step[InputT]] = []
        self.action_retry = action_retry
        self.compensation_retry = compensation_retry

    def step(self, name: str) -> StepBuilder[InputT]:
        if any(s.name == name for s in self._steps):
            raise ValueError(f"duplicate step name {name!r}")
        return StepBuilder(self, name)

    def _add(self, step: Step[InputT]) -> None:
        self._steps.append(step)

    def build(self) -> SagaDefinition[InputT]:
        if not self._steps:
            raise ValueError(f"saga {self._name} has no steps")
        return SagaDefinition(
            self._name, self._input_type, tuple(self._steps), self._deadline, self._version
        )


class StepBuilder(Generic[InputT]):
    def __init__(self, saga: Saga[InputT], name: str) -> None:
        self._saga = saga
        self._name = name
        self._action: Invocation[InputT, Any, Any] | None = None
        self._compensation: Invocation[InputT, Any, Any] | None = None
        self._policy = DEFAULT_POLICY

    def invoke(
        self,
        rpc: Rpc[ReqT, RespT],
        build: Callable[[SagaContext[InputT]], ReqT],
        *,
        retry: RetryPolicy | None = None,
    ) -> StepBuilder[InputT]:
        """The step's action: `rpc` with the request `build` makes."""
        self._action = Invocation(rpc, build, retry or self._saga.action_retry)
        return self

    def with_compensation(
        self,
        rpc: Rpc[ReqT, RespT],
        build: Callable[[SagaContext[InputT]], ReqT],
        *,
        retry: RetryPolicy | None = None,
    ) -> StepBuilder[InputT]:
        """What undoes the step: it must be idempotent and succeed for "nothing to undo"."""
        self._compensation = Invocation(rpc, build, retry or self._saga.compensation_retry)
        return self

    def with_policy(self, policy: StatusPolicy) -> StepBuilder[InputT]:
        """Overrides how this step's status codes are classified."""
        self._policy = policy
        return self

    def _finish(self) -> Saga[InputT]:
        if self._action is None:
            raise ValueError(f"step {self._name!r} has no action: call invoke() first")
        self._saga._add(Step(self._name, self._action, self._compensation, self._policy))
        return self._saga

    def step(self, name: str) -> StepBuilder[InputT]:
        return self._finish().step(name)

    def build(self) -> SagaDefinition[InputT]:
        return self._finish().build()
