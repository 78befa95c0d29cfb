"""Flags backed by environment variables: a bad value in a variable is refused
with one line naming the variable, never a traceback later on."""

from __future__ import annotations

import pytest

from orchestrator_server.__main__ import parse_args as orchestrator_args
from payment_server.__main__ import parse_args as payment_args
from tools.config_reference import PROGRAMS, Program, _reads_env, build_parser


def test_a_variable_sets_a_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINISAGA_PAYMENT_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("MINISAGA_PAYMENT_GRACE_SECONDS", "2.5")
    args = payment_args([])
    assert (args.log_level, args.grace_seconds) == ("DEBUG", 2.5)


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("MINISAGA_PAYMENT_LOG_LEVEL", "verbose", "--log-level must be one of DEBUG, INFO"),
        ("MINISAGA_PAYMENT_GRACE_SECONDS", "soon", "not a valid float for --grace-seconds"),
        ("MINISAGA_PAYMENT_MAX_MESSAGE_BYTES", "1e6", "not a valid int for --max-message-bytes"),
    ],
)
def test_a_bad_value_in_a_variable_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str,
    problem: str,
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as refused:
        payment_args([])
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"python -m payment_server: {variable}={value!r}: {problem}")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_the_command_line_wins_over_a_bad_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINISAGA_ORCHESTRATOR_LOG_LEVEL", "verbose")
    assert orchestrator_args(["--log-level", "WARNING"]).log_level == "WARNING"
    assert orchestrator_args(["--log-level=ERROR"]).log_level == "ERROR"


@pytest.mark.parametrize("program", PROGRAMS[:4], ids=lambda program: program.title)
def test_help_names_the_variable_of_every_flag_that_reads_one(
    program: Program, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every flag a MINISAGA_* variable sets says so in --help (issue 15)."""
    monkeypatch.setenv("COLUMNS", "400")
    with pytest.raises(SystemExit):
        program.parse_args(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    parser = build_parser(program)
    missing = [
        action.option_strings[-1]
        for action in parser._actions
        if action.option_strings
        and (variable := _reads_env(program, action)) is not None
        and f"env {variable}" not in shown
    ]
    assert not missing, f"--help names no variable for {missing}"
