"""The configuration reference, generated from the servers' own argparse parsers.

Each server module builds its parser inside `parse_args`; we run that function
with `ArgumentParser.parse_args` (and `service_kit.flags.parse`, which checks
the environment's values first) replaced by one that hands us the parser, so
the page shows exactly the flags, defaults and help texts that `--help` does.
Every MINISAGA_* variable is removed while the parsers are built, so the
defaults are the code's, not this shell's.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn
from unittest import mock

import inventory_server.__main__
import orchestrator_server.__main__
import payment_server.__main__
import service_kit.run_all
import shipping_server.__main__
from service_kit import flags

COMMAND = "python -m tools.docs_reference"
SENTINEL = "env-sentinel-7f3a"
ENV_IN_HELP = re.compile(r"\benv (MINISAGA_[A-Z0-9_]+)")
LAST_PARENTHESIS = re.compile(r"\s*\(([^()]*)\)$")
DEFAULT_PART = re.compile(r"^default (.*?)(?:, env (MINISAGA_[A-Z0-9_]+))?$")


@dataclass(frozen=True)
class Program:
    title: str
    command: str
    parse_args: Callable[[list[str]], object]
    env_prefix: str | None
    """Variables MINISAGA_<SERVICE>_<FLAG> are looked for under this prefix."""


PROGRAMS: Sequence[Program] = (
    Program(
        "Orchestrator",
        "python -m orchestrator_server",
        orchestrator_server.__main__.parse_args,
        orchestrator_server.__main__.ENV,
    ),
    Program(
        "Payment",
        "python -m payment_server",
        payment_server.__main__.parse_args,
        "MINISAGA_PAYMENT",
    ),
    Program(
        "Inventory",
        "python -m inventory_server",
        inventory_server.__main__.parse_args,
        inventory_server.__main__.ENV_PREFIX,
    ),
    Program(
        "Shipping",
        "python -m shipping_server",
        shipping_server.__main__.parse_args,
        "MINISAGA_SHIPPING",
    ),
    Program(
        "All services at once (make run)",
        "python -m service_kit.run_all",
        service_kit.run_all.parse_args,
        None,
    ),
)


class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__("parser captured")
        self.parser = parser


def _capture(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> NoReturn:
    raise _Captured(self)


@contextmanager
def _environment(extra: dict[str, str]) -> Iterator[None]:
    """os.environ without any MINISAGA_* variable, plus `extra`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MINISAGA_")}
    with mock.patch.dict(os.environ, {**clean, **extra}, clear=True):
        yield


def build_parser(program: Program, env: dict[str, str] | None = None) -> argparse.ArgumentParser:
    """The parser `program.parse_args` builds, with the environment it would see."""
    with (
        _environment(env or {}),
        mock.patch.object(argparse.ArgumentParser, "parse_args", _capture),
        mock.patch.object(flags, "parse", _capture),
    ):
        try:
            program.parse_args([])
        except _Captured as captured:
            return captured.parser
    raise RuntimeError(f"{program.command}: parse_args never parsed anything")


@dataclass(frozen=True)
class Flag:
    names: str
    env: str | None
    default: str
    meaning: str


def _env_name(prefix: str, action: argparse.Action) -> str:
    return f"{prefix}_{action.option_strings[-1].lstrip('-').upper().replace('-', '_')}"


def _reads_env(program: Program, action: argparse.Action) -> str | None:
    """The variable that sets this flag, found by setting it and looking at the default."""
    if program.env_prefix is None:
        return None
    name = _env_name(program.env_prefix, action)
    parser = build_parser(program, {name: SENTINEL})
    for other in parser._actions:
        if other.dest == action.dest and other.default == SENTINEL:
            return name
    return None


def _expand(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The help text with %(default)s and friends filled in, as --help shows it."""
    text = action.help or ""
    params = {k: v for k, v in vars(action).items() if v is not argparse.SUPPRESS}
    params["prog"] = parser.prog
    if action.choices is not None:
        params["choices"] = ", ".join(str(c) for c in action.choices)
    return " ".join((text % params).split())


def describe(program: Program, parser: argparse.ArgumentParser, action: argparse.Action) -> Flag:
    text = _expand(parser, action)
    stated_default: str | None = None
    env = _reads_env(program, action)
    match = LAST_PARENTHESIS.search(text)
    if match:  # "(default X, env Y)" goes to its own columns; other remarks stay
        kept = []
        for part in (p.strip() for p in match.group(1).split(";")):
            stated = DEFAULT_PART.match(part)
            if stated:
                stated_default = stated.group(1)
                env = env or stated.group(2)
            elif part:
                kept.append(part)
        text = text[: match.start()] + (f" ({'; '.join(kept)})" if kept else "")
    if env is None and (mentioned := ENV_IN_HELP.search(action.help or "")):
        env = mentioned.group(1)
    if action.choices is not None:
        choices = ", ".join(f"`{c}`" for c in action.choices)
        text = f"{text}; one of {choices}" if text else f"one of {choices}"
    names = ", ".join(f"`{name}`" for name in action.option_strings)
    if action.metavar is not None:
        names = f"{names} `{action.metavar}`"
    if action.default not in (None, "", False):
        default = f"`{action.default}`"
    elif stated_default is not None:
        default = stated_default
    else:
        default = "—"
    return Flag(names, env, default, text)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _groups(
    parser: argparse.ArgumentParser,
) -> Iterator[tuple[str, str | None, list[argparse.Action]]]:
    for group in parser._action_groups:
        actions = [
            a
            for a in group._group_actions
            if a.option_strings and not isinstance(a, argparse._HelpAction)
        ]
        if actions:
            yield group.title or "options", group.description, actions


def render_program(program: Program) -> str:
    parser = build_parser(program)
    lines = [f"## {program.title}", "", f"`{program.command}`: {parser.description}", ""]
    if program.env_prefix is not None:
        lines += [
            f"Every flag marked with a variable can also be set by it "
            f"(`{program.env_prefix}_<FLAG>`: the flag's name upper-cased, dashes as "
            "underscores); a flag on the command line wins over the variable.",
            "",
        ]
    else:
        lines += ["It reads no environment variables of its own.", ""]
    for title, description, actions in _groups(parser):
        lines += [f"### {program.title}: {title}", ""]
        if description:
            lines += [description[:1].upper() + description[1:] + ".", ""]
        env_column = program.env_prefix is not None
        header = (
            "| flag | variable | default | meaning |"
            if env_column
            else "| flag | default | meaning |"
        )
        lines += [header, "| --- | --- | --- | --- |" if env_column else "| --- | --- | --- |"]
        for action in actions:
            flag = describe(program, parser, action)
            cells = [flag.names]
            if env_column:
                cells.append(f"`{flag.env}`" if flag.env else "—")
            cells += [flag.default, flag.meaning]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        lines.append("")
    return "\n".join(lines)


def render() -> str:
    parts = [
        "# Configuration reference",
        "",
        f"<!-- Generated by `{COMMAND}` from the servers' argparse flags: do not edit. -->",
        "",
        "Every flag of every server, as its `--help` shows it: this page is generated "
        "from the servers' own flag definitions, and a test fails when it is out of date. "
        "`make run` passes its environment on to the services it starts, so "
        "`MINISAGA_SHIPPING_FAULT_LATENCY_MS=300 make run` works.",
        "",
    ]
    parts += [render_program(program) for program in PROGRAMS]
    return "\n".join(parts).rstrip("\n") + "\n"
