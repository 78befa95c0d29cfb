"""--saga module:attribute and --participant NAME=ADDRESS: a user's sagas loaded
into the orchestrator from an installed module, with one-line refusals."""

from __future__ import annotations

import pytest

from examples.order_v2 import PLACE_ORDER_V2
from orchestrator_server.__main__ import config_from_args, parse_args
from orchestrator_server.loading import BadSagaSpec, check_hosted, load_sagas, parse_participants
from orchestrator_server.order_saga import PLACE_ORDER


def test_a_saga_is_loaded_from_a_module_attribute() -> None:
    assert load_sagas(["examples.order_v2:PLACE_ORDER_V2"]) == [PLACE_ORDER_V2]
    config = config_from_args(
        parse_args(["--saga", "examples.order_v2:PLACE_ORDER_V2", "--participant", "x=h:1"])
    )
    assert config.sagas == (PLACE_ORDER_V2,)
    assert config.participants["x"] == "h:1" and config.participants["payment"] == "127.0.0.1:7002"


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("examples.order_v2", "write MODULE:ATTRIBUTE"),
        ("no_such_module_here:X", "cannot import no_such_module_here"),
        ("examples.order_v2:NOPE", "has no NOPE"),
        ("examples.order_v2:CHARGE", "is a Rpc, not a SagaDefinition"),
    ],
)
def test_a_bad_saga_spec_is_refused_in_one_line(spec: str, problem: str) -> None:
    with pytest.raises(BadSagaSpec, match=problem):
        load_sagas([spec])
    with pytest.raises(SystemExit, match=problem):
        config_from_args(parse_args(["--saga", spec]))


def test_participants_and_hosted_definitions_are_checked() -> None:
    with pytest.raises(BadSagaSpec, match="NAME=ADDRESS"):
        parse_participants(["loyalty"], {})
    with pytest.raises(BadSagaSpec, match="--participant payment=HOST:PORT"):
        check_hosted([PLACE_ORDER], {"inventory": "a", "shipping": "b"})
    with pytest.raises(BadSagaSpec, match="version 1 is loaded twice"):
        check_hosted(
            [PLACE_ORDER, PLACE_ORDER], {"payment": "a", "inventory": "a", "shipping": "b"}
        )
