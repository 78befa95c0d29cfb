"""`--saga module:attribute` and `--participant NAME=ADDRESS`: user sagas loaded
into the orchestrator from installed Python modules, not forked into it."""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from orchestrator_server.saga import SagaDefinition


class BadSagaSpec(ValueError):
    """A --saga or --participant value that names nothing usable; says why in one line."""


def load_sagas(specs: Iterable[str]) -> list[SagaDefinition[Any]]:
    """The definitions each `module:attribute` names: a SagaDefinition, or a
    list or tuple of them (several versions, say)."""
    found: list[SagaDefinition[Any]] = []
    for spec in specs:
        module_name, colon, attribute = spec.partition(":")
        if not colon or not module_name or not attribute:
            raise BadSagaSpec(f"--saga {spec!r}: write MODULE:ATTRIBUTE, such as shop.sagas:ORDER")
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise BadSagaSpec(f"--saga {spec!r}: cannot import {module_name}: {error}") from error
        value: object = module
        for part in attribute.split("."):
            try:
                value = getattr(value, part)
            except AttributeError:
                raise BadSagaSpec(f"--saga {spec!r}: {module_name} has no {attribute}") from None
        items: Sequence[object] = value if isinstance(value, list | tuple) else [value]
        for item in items:
            if not isinstance(item, SagaDefinition):
                raise BadSagaSpec(
                    f"--saga {spec!r}: {attribute} is a {type(item).__name__}, not a "
                    "SagaDefinition (build it with orchestrator_server.saga.Saga(...).build())"
                )
            found.append(item)
    return found


def parse_participants(specs: Iterable[str], known: Mapping[str, str]) -> dict[str, str]:
    """`known` (the --payment, --inventory, --shipping shorthands) with each
    `NAME=ADDRESS` added or overriding."""
    participants = dict(known)
    for spec in specs:
        name, equals, address = spec.partition("=")
        if not equals or not name or not address:
            raise BadSagaSpec(
                f"--participant {spec!r}: write NAME=ADDRESS, such as loyalty=127.0.0.1:7005"
            )
        participants[name] = address
    return participants


def check_hosted(
    definitions: Iterable[SagaDefinition[Any]], participants: Mapping[str, str]
) -> None:
    """Every participant a step calls has an address; no (name, version) twice."""
    seen: set[tuple[str, int]] = set()
    for definition in definitions:
        key = (definition.name, definition.version)
        if key in seen:
            raise BadSagaSpec(f"saga {key[0]} version {key[1]} is loaded twice")
        seen.add(key)
        for step in definition.steps:
            for invocation in (step.action, step.compensation):
                if invocation is not None and invocation.rpc.participant not in participants:
                    raise BadSagaSpec(
                        f"saga {definition.name} version {definition.version}: step "
                        f"{step.name!r} calls {invocation.rpc.participant!r}; give its address "
                        f"with --participant {invocation.rpc.participant}=HOST:PORT"
                    )
