"""The `minisaga` command against scripted replies (grpc-testing): messages and exit codes."""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc_testing
import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from minisaga.inventory.v1 import inventory_pb2
from minisaga.orchestrator.v1 import orchestrator_pb2 as pb
from minisaga.payment.v1 import payment_pb2
from minisaga.shipping.v1 import shipping_pb2

from minisaga_client import Client, FailedPrecondition, InvalidArgument
from minisaga_client.cli import ADDRESS_ENV, main
from minisaga_client.errors import STATUS_DETAILS_KEY, Internal
from minisaga_client.render import Style, timeline, use_color

ORCHESTRATOR = pb.DESCRIPTOR.services_by_name["OrchestratorService"]
PAYMENT = payment_pb2.DESCRIPTOR.services_by_name["PaymentService"]
DESCRIPTORS = [
    ORCHESTRATOR,
    PAYMENT,
    inventory_pb2.DESCRIPTOR.services_by_name["InventoryService"],
    shipping_pb2.DESCRIPTOR.services_by_name["ShippingService"],
]
SAGA_ID = "74c617c1-184a-4ed3-b480-6bd90b208b54"
Trailers = tuple[tuple[str, bytes], ...]


def rich(code: grpc.StatusCode, message: str, *details: Message) -> Trailers:
    """Trailing metadata carrying a google.rpc.Status, as the servers send it."""
    status = status_pb2.Status(code=code.value[0], message=message)
    for detail in details:
        status.details.add().Pack(detail)
    return ((STATUS_DETAILS_KEY, status.SerializeToString()),)


def info(reason: str, domain: str = "minisaga.orchestrator.v1", **metadata: str) -> Message:
    return error_details_pb2.ErrorInfo(reason=reason, domain=domain, metadata=metadata)


@dataclass
class Scripted:
    """`minisaga ARGS` in a thread, its calls answered by the test through grpc-testing."""

    capsys: pytest.CaptureFixture[str]
    channel: grpc_testing.Channel = field(
        default_factory=lambda: grpc_testing.channel(DESCRIPTORS, grpc_testing.strict_real_time())
    )
    code: int | None = None
    _thread: threading.Thread | None = None
    _out: str = ""
    _err: str = ""

    def start(self, *argv: str) -> None:
        def run() -> None:
            self.code = main(list(argv), channel=self.channel)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def unary(self, service: ServiceDescriptor, name: str) -> tuple[Message, Any]:
        """The request of the next call to `name`, and the handle to answer it."""
        _, request, rpc = self.channel.take_unary_unary(service.methods_by_name[name])
        return request, rpc

    def _read(self) -> None:
        captured = self.capsys.readouterr()
        self._out += captured.out
        self._err += captured.err

    def wait_for_output(self, text: str, timeout: float = 10.0) -> None:
        """Until the command has printed `text` (it reads its stream at its own pace)."""
        deadline = time.monotonic() + timeout
        while text not in self._out:
            assert time.monotonic() < deadline, f"never printed {text!r}: {self._out!r}"
            time.sleep(0.01)  # polling for a condition
            self._read()

    def finish(self) -> tuple[int, str, str]:
        assert self._thread is not None
        self._thread.join(timeout=10)
        assert not self._thread.is_alive(), "the command did not finish"
        self._read()
        assert "Traceback" not in self._err, self._err
        assert self.code is not None
        return self.code, self._out, self._err


@pytest.fixture
def scripted(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Scripted]:
    for env in ADDRESS_ENV.values():
        monkeypatch.delenv(env, raising=False)  # the default addresses, whatever the shell has
    monkeypatch.delenv("NO_COLOR", raising=False)
    yield Scripted(capsys)


def test_unavailable_says_which_service_cannot_be_reached(scripted: Scripted) -> None:
    scripted.start("saga", "get", SAGA_ID)
    request, rpc = scripted.unary(ORCHESTRATOR, "GetSaga")
    assert request == pb.GetSagaRequest(saga_id=SAGA_ID)
    rpc.terminate(
        pb.GetSagaResponse(), (), grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses"
    )

    code, out, err = scripted.finish()
    assert code == 6
    assert out == ""
    assert (
        err == "minisaga: cannot reach the orchestrator at 127.0.0.1:7001 — is `make run` going?\n"
    )


def test_deadline_exceeded_names_the_deadline(scripted: Scripted) -> None:
    scripted.start("--orchestrator", "10.0.0.9:7001", "saga", "list", "--timeout", "2.5")
    request, rpc = scripted.unary(ORCHESTRATOR, "ListSagas")
    assert request == pb.ListSagasRequest()
    rpc.terminate(
        pb.ListSagasResponse(), (), grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"
    )

    code, _, err = scripted.finish()
    assert code == 7
    assert err.startswith(
        "minisaga: the orchestrator at 10.0.0.9:7001 did not answer within 2.5s (DEADLINE_EXCEEDED)"
    )
    assert err.count("\n") == 1


def test_failed_precondition_shows_the_error_info_reason(scripted: Scripted) -> None:
    message = f"saga {SAGA_ID} is COMPLETED; it is done"
    scripted.start("saga", "cancel", SAGA_ID)
    request, rpc = scripted.unary(ORCHESTRATOR, "CancelSaga")
    assert request == pb.CancelSagaRequest(saga_id=SAGA_ID)
    trailers = rich(
        grpc.StatusCode.FAILED_PRECONDITION,
        message,
        info("SAGA_NOT_CANCELLABLE", status="COMPLETED"),
    )
    rpc.terminate(pb.CancelSagaResponse(), trailers, grpc.StatusCode.FAILED_PRECONDITION, message)

    code, _, err = scripted.finish()
    assert code == 5
    assert err == f"minisaga: refused (SAGA_NOT_CANCELLABLE): {message}\n"


def test_invalid_argument_names_the_fields(scripted: Scripted) -> None:
    scripted.start(
        "place-order",
        "--product-id",
        "apple",
        "--quantity",
        "0",
        "--amount",
        "-1",
        "--currency",
        "USD",
        "--address",
        "Kyoto",
        "--request-id",
        "req-7",
        "--fail-shipping",
    )
    request, rpc = scripted.unary(ORCHESTRATOR, "PlaceOrder")
    assert request == pb.PlaceOrderRequest(
        request_id="req-7",
        product_id="apple",
        quantity=0,
        amount=-1,
        currency="USD",
        address="Kyoto",
        fail_shipping=True,
    )
    message = "invalid quantity, amount: quantity: must be positive; amount: must be positive"
    bad_request = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(
                field="quantity", description="must be positive"
            ),
            error_details_pb2.BadRequest.FieldViolation(
                field="amount", description="must be positive"
            ),
        ]
    )
    trailers = rich(
        grpc.StatusCode.INVALID_ARGUMENT,
        message,
        info("INVALID_ARGUMENT", fields="quantity, amount"),
        bad_request,
    )
    rpc.terminate(pb.PlaceOrderResponse(), trailers, grpc.StatusCode.INVALID_ARGUMENT, message)

    code, _, err = scripted.finish()
    assert code == 3
    assert err == (
        "minisaga: invalid argument — quantity: must be positive; amount: must be positive\n"
    )


def test_not_found_on_a_participant(scripted: Scripted) -> None:
    scripted.start("payment", "get", SAGA_ID, "--payment", "10.0.0.9:7002")
    request, rpc = scripted.unary(PAYMENT, "GetPayment")
    assert request == payment_pb2.GetPaymentRequest(saga_id=SAGA_ID)
    message = f"no payment for saga {SAGA_ID}"
    trailers = rich(grpc.StatusCode.NOT_FOUND, message, info("NOT_FOUND", "minisaga.payment.v1"))
    rpc.terminate(payment_pb2.GetPaymentResponse(), trailers, grpc.StatusCode.NOT_FOUND, message)

    code, _, err = scripted.finish()
    assert (code, err) == (4, f"minisaga: not found: {message}\n")


@pytest.mark.parametrize(
    ("status", "trailers", "exit_code", "expected"),
    [
        (
            grpc.StatusCode.ALREADY_EXISTS,
            rich(grpc.StatusCode.ALREADY_EXISTS, "boom", info("IDEMPOTENCY_KEY_REUSED")),
            5,
            "minisaga: already exists (IDEMPOTENCY_KEY_REUSED): boom\n",
        ),
        (
            grpc.StatusCode.UNAVAILABLE,
            rich(grpc.StatusCode.UNAVAILABLE, "boom", info("INJECTED_FAILURE")),
            6,
            "minisaga: the orchestrator at 127.0.0.1:7001 is unavailable: "
            "boom (INJECTED_FAILURE)\n",
        ),
        (
            grpc.StatusCode.INTERNAL,
            (),
            1,
            "minisaga: the orchestrator at 127.0.0.1:7001 answered INTERNAL: boom\n",
        ),
        (
            grpc.StatusCode.INTERNAL,
            ((STATUS_DETAILS_KEY, b"\xff not a status"),),
            1,
            "minisaga: the orchestrator at 127.0.0.1:7001 answered INTERNAL: boom\n",
        ),
        (
            grpc.StatusCode.OUT_OF_RANGE,
            (),
            3,
            "minisaga: the orchestrator at 127.0.0.1:7001 answered OUT_OF_RANGE: boom\n",
        ),
    ],
)
def test_every_other_failure_is_one_line_and_a_documented_exit_code(
    scripted: Scripted, status: grpc.StatusCode, trailers: Trailers, exit_code: int, expected: str
) -> None:
    scripted.start("saga", "resume", SAGA_ID)
    _, rpc = scripted.unary(ORCHESTRATOR, "ResumeSaga")
    rpc.terminate(pb.ResumeSagaResponse(), trailers, status, "boom")

    assert scripted.finish()[0::2] == (exit_code, expected)


def test_a_watch_that_breaks_shows_what_came_then_the_error(scripted: Scripted) -> None:
    scripted.start("saga", "watch", SAGA_ID)
    _, request, rpc = scripted.channel.take_unary_stream(ORCHESTRATOR.methods_by_name["WatchSaga"])
    assert request == pb.WatchSagaRequest(saga_id=SAGA_ID)
    event = pb.SagaEvent(sequence=1, description="saga place_order started")
    event.time.FromMilliseconds(1_000)
    rpc.send_response(pb.WatchSagaResponse(event=event))
    # grpc-testing drops unread responses once the call ends: let the command read it first.
    scripted.wait_for_output("saga place_order started")
    rpc.terminate((), grpc.StatusCode.UNAVAILABLE, "connection reset")

    code, out, err = scripted.finish()
    assert code == 6
    assert out == "00:00:01.000Z  saga place_order started\n"
    assert "cannot reach the orchestrator at 127.0.0.1:7001" in err


def failed_saga() -> pb.Saga:
    """A saga whose refund ran out of attempts, as GetSaga returns it."""

    def attempt(number: int, code: str, reason: str = "", message: str = "") -> pb.Attempt:
        made = pb.Attempt(number=number, code=code, reason=reason, message=message)
        made.duration.FromMilliseconds(3)
        return made

    refund_failed = "injected INTERNAL on Refund"
    return pb.Saga(
        saga_id=SAGA_ID,
        saga_type="place_order",
        status=pb.SAGA_STATUS_FAILED,
        order_id="ord_1",
        steps=[
            pb.StepExecution(
                step="charge",
                phase=pb.STEP_PHASE_ACTION,
                method="/minisaga.payment.v1.PaymentService/Charge",
                state=pb.STEP_STATE_SUCCEEDED,
                attempts=[attempt(1, "OK")],
            ),
            pb.StepExecution(
                step="reserve",
                phase=pb.STEP_PHASE_ACTION,
                method="/minisaga.inventory.v1.InventoryService/Reserve",
                state=pb.STEP_STATE_FAILED,
                attempts=[attempt(1, "FAILED_PRECONDITION", "INSUFFICIENT_STOCK", "only 1 left")],
            ),
            pb.StepExecution(
                step="charge",
                phase=pb.STEP_PHASE_COMPENSATION,
                method="/minisaga.payment.v1.PaymentService/Refund",
                state=pb.STEP_STATE_FAILED,
                attempts=[
                    attempt(n, "INTERNAL", "INJECTED_FAILURE", refund_failed) for n in (1, 2, 3)
                ],
            ),
        ],
        compensation_cause=pb.CompensationCause(
            step="reserve",
            code="FAILED_PRECONDITION",
            reason="INSUFFICIENT_STOCK",
            message="only 1 left",
        ),
        compensation_failures=[
            pb.CompensationFailure(
                step="charge",
                method="/minisaga.payment.v1.PaymentService/Refund",
                code="INTERNAL",
                message=refund_failed,
                attempts=3,
            )
        ],
    )


def test_a_failed_saga_reads_as_failed_at_a_glance(scripted: Scripted) -> None:
    scripted.start("saga", "get", SAGA_ID)
    _, rpc = scripted.unary(ORCHESTRATOR, "GetSaga")
    rpc.terminate(pb.GetSagaResponse(saga=failed_saga()), (), grpc.StatusCode.OK, "")

    code, out, _ = scripted.finish()
    lines = out.splitlines()
    assert code == 0
    assert lines[0] == f"saga {SAGA_ID}  place_order"
    assert lines[1] == (
        "FAILED — reserve failed (FAILED_PRECONDITION INSUFFICIENT_STOCK); "
        "then undo charge ran out of attempts"
    )
    assert lines[2] == (
        f"needs an operator: once PaymentService is healthy, run `minisaga saga resume {SAGA_ID}`"
    )
    body = "\n".join(lines[3:])
    order = [
        "✓ charge",
        "✗ reserve",
        "↩ compensation started: reserve ended FAILED_PRECONDITION INSUFFICIENT_STOCK",
        "✗ undo charge    PaymentService.Refund           INTERNAL after 3 attempts",
        "attempt 1   INTERNAL",
        "attempt 3   INTERNAL",
        "compensation failures",
        "✗ undo charge (PaymentService.Refund) failed after 3 attempts",
    ]
    positions = [body.index(text) for text in order]
    assert positions == sorted(positions)
    assert "INSUFFICIENT_STOCK: only 1 left" in body
    assert "\x1b[" not in out, "no colour when stdout is not a terminal"


def test_json_is_the_api_message(scripted: Scripted) -> None:
    scripted.start("saga", "get", SAGA_ID, "--json")
    _, rpc = scripted.unary(ORCHESTRATOR, "GetSaga")
    rpc.terminate(pb.GetSagaResponse(saga=failed_saga()), (), grpc.StatusCode.OK, "")

    code, out, _ = scripted.finish()
    assert code == 0
    printed = json.loads(out)
    assert printed["status"] == "SAGA_STATUS_FAILED"
    assert printed["compensation_failures"][0]["step"] == "charge"
    assert json_format.ParseDict(printed, pb.Saga()) == failed_saga()


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_only_on_a_terminal_without_no_color() -> None:
    assert use_color(Terminal(), {})
    assert use_color(Terminal(), {"NO_COLOR": ""})  # set but empty does not count
    assert not use_color(Terminal(), {"NO_COLOR": "1"})
    assert not use_color(io.StringIO(), {})
    coloured = timeline(failed_saga(), Style(color=True))
    assert "\x1b[1;31mFAILED\x1b[0m" in coloured
    assert "\x1b[32mOK\x1b[0m" in coloured


def test_usage_errors_exit_2_and_help_documents_the_exit_codes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["saga", "list", "--status", "bogus"]) == 2
    assert "unknown status 'bogus'" in capsys.readouterr().err
    assert main([]) == 2
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for line in ("3    INVALID_ARGUMENT", "6    UNAVAILABLE", "7    DEADLINE_EXCEEDED"):
        assert line in text
    for command in ("place-order", "saga", "stock", "payment", "reservation", "shipment"):
        assert command in text
    for command in ("graph", "demo"):
        assert command in text


def test_the_client_raises_typed_errors_from_the_trailers() -> None:
    channel = grpc_testing.channel(DESCRIPTORS, grpc_testing.strict_real_time())
    client = Client(channel, addresses={"orchestrator": "10.0.0.9:7001"})
    raised: list[BaseException] = []

    def call(saga_id: str) -> None:
        try:
            client.cancel_saga(saga_id)
        except Exception as error:
            raised.append(error)

    for trailers, code in (
        (
            rich(
                grpc.StatusCode.FAILED_PRECONDITION,
                "done",
                info("SAGA_NOT_CANCELLABLE", status="COMPLETED"),
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
        ),
        ((), grpc.StatusCode.INTERNAL),
    ):
        caller = threading.Thread(target=call, args=(str(uuid.uuid4()),))
        caller.start()
        _, _, rpc = channel.take_unary_unary(ORCHESTRATOR.methods_by_name["CancelSaga"])
        rpc.terminate(pb.CancelSagaResponse(), trailers, code, "done")
        caller.join(timeout=10)

    refused, internal = raised
    assert isinstance(refused, FailedPrecondition) and not isinstance(refused, InvalidArgument)
    assert (refused.reason, refused.domain) == ("SAGA_NOT_CANCELLABLE", "minisaga.orchestrator.v1")
    assert dict(refused.metadata) == {"status": "COMPLETED"}
    assert (refused.service, refused.address, refused.message) == (
        "orchestrator",
        "10.0.0.9:7001",
        "done",
    )
    assert str(refused) == "FAILED_PRECONDITION SAGA_NOT_CANCELLABLE: done"
    assert isinstance(internal, Internal) and internal.reason == ""
