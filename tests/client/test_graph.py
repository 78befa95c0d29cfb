"""`minisaga graph`: the saga definition as Mermaid, every step and compensation edge."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from minisaga.orchestrator.v1.orchestrator_pb2 import PlaceOrderRequest

from minisaga_client.cli import main
from minisaga_client.graph import action_id, mermaid, undo_id
from orchestrator_server.order_saga import (
    CHARGE,
    CREATE_SHIPMENT,
    PLACE_ORDER,
    REFUND,
    charge,
    create_shipment,
    refund,
)
from orchestrator_server.saga.definition import Saga

ROOT = Path(__file__).resolve().parents[2]
EDGE = re.compile(r"^    (\S+) (-->|-\.->)(?:\|([^|]*)\|)? (\S+)$")


def edges(source: str) -> set[tuple[str, str, str, str]]:
    """(from, arrow, label, to) of every edge line."""
    found = set()
    for line in source.splitlines():
        match = EDGE.match(line)
        if match:
            start, arrow, label, end = match.groups()
            found.add((start, arrow, label or "", end))
    return found


def test_place_order_is_drawn_with_every_step_undo_and_failure_edge(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["graph"]) == 0
    source = capsys.readouterr().out.rstrip("\n")
    assert source == mermaid(PLACE_ORDER)
    assert source.startswith("graph TD\n")

    for step in PLACE_ORDER.steps:  # one node per action and per compensation, with its RPC
        service, name = step.action.rpc.method.strip("/").split("/")
        assert (
            f'{action_id(step.name)}["{step.name}<br/>{service.split(".")[-1]}.{name}"]' in source
        )
        assert step.compensation is not None
        service, name = step.compensation.rpc.method.strip("/").split("/")
        label = f"undo {step.name}<br/>{service.split('.')[-1]}.{name}"
        assert f'{undo_id(step.name)}("{label}")' in source

    assert edges(source) == {
        ("saga_start", "-->", "", "step_charge"),
        # forward: action OK -> next action
        ("step_charge", "-->", "OK", "step_reserve"),
        ("step_reserve", "-->", "OK", "step_ship"),
        ("step_ship", "-->", "OK", "completed"),
        # a rejected step did nothing: undo the steps before it
        ("step_charge", "-.->", "rejected", "compensated"),
        ("step_reserve", "-.->", "rejected", "undo_charge"),
        ("step_ship", "-.->", "rejected", "undo_reserve"),
        # a step out of attempts may have happened: undo it too
        ("step_charge", "-.->", "out of attempts", "undo_charge"),
        ("step_reserve", "-.->", "out of attempts", "undo_reserve"),
        ("step_ship", "-.->", "out of attempts", "undo_ship"),
        # the reverse compensation path
        ("undo_ship", "-->", "", "undo_reserve"),
        ("undo_reserve", "-->", "", "undo_charge"),
        ("undo_charge", "-->", "all undone", "compensated"),
        ("undo_charge", "-.->", "an undo ran out of attempts", "failed"),
    }


def test_a_step_without_compensation_has_one_failure_edge() -> None:
    definition = (
        Saga("pay_and_ship", PlaceOrderRequest)
        .step("charge")
        .invoke(CHARGE, charge)
        .with_compensation(REFUND, refund)
        .step("ship")
        .invoke(CREATE_SHIPMENT, create_shipment)  # a last, retriable step: no undo
        .build()
    )

    source = mermaid(definition)

    assert "undo_ship" not in source
    assert edges(source) == {
        ("saga_start", "-->", "", "step_charge"),
        ("step_charge", "-->", "OK", "step_ship"),
        ("step_ship", "-->", "OK", "completed"),
        ("step_charge", "-.->", "rejected", "compensated"),
        ("step_charge", "-.->", "out of attempts", "undo_charge"),
        ("step_ship", "-.->", "failed", "undo_charge"),
        ("undo_charge", "-->", "all undone", "compensated"),
        ("undo_charge", "-.->", "an undo ran out of attempts", "failed"),
    }


@pytest.mark.parametrize("page", ["README.md", "docs/operating.md"])
def test_the_docs_show_the_graph_as_generated(
    page: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["graph", "--markdown"]) == 0
    fenced = capsys.readouterr().out
    assert fenced.startswith("```mermaid\ngraph TD\n")
    assert fenced in (ROOT / page).read_text(), (
        f"{page} is stale: paste `minisaga graph --markdown`"
    )
