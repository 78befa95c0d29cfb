"""`minisaga graph`: the saga definition, from GetSagaDefinition, as Mermaid, every step and
compensation edge."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from minisaga.orchestrator.v1.orchestrator_pb2 import PlaceOrderRequest

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
from orchestrator_server.views import definition_view
from tests.client.conftest import Cli

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


async def test_place_order_is_drawn_with_every_step_undo_and_failure_edge(cli: Cli) -> None:
    drawn = await cli("graph")
    assert drawn.code == 0
    source = drawn.out.rstrip("\n")
    assert source == mermaid(definition_view(PLACE_ORDER))
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

    source = mermaid(definition_view(definition))

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


async def test_an_unknown_saga_type_is_not_found(cli: Cli) -> None:
    missing = await cli("graph", "--saga-type", "none_such")
    assert (missing.code, missing.err) == (4, "minisaga: not found: no saga type 'none_such'\n")


@pytest.mark.parametrize("page", ["README.md", "docs/operating.md"])
async def test_the_docs_show_the_graph_as_generated(page: str, cli: Cli) -> None:
    drawn = await cli("graph", "--markdown")
    assert drawn.code == 0
    fenced = drawn.out
    assert fenced.startswith("```mermaid\ngraph TD\n")
    assert fenced in (ROOT / page).read_text(), (
        f"{page} is stale: paste `minisaga graph --markdown`"
    )
